"""The ``xelm`` job: a CPU-sized X-ELM replication (Blevins et al. 2024) on WMT news in several languages.

1. A byte-level BPE tokenizer and a small Llama seed trained on the mix of languages.
2. Dense baseline: the seed continued on the mix for ``expert_steps`` steps.
3. For each k: cluster the training sentences (balanced TF-IDF k-means, or typology clusters),
   branch k experts from the seed, train each for ``expert_steps / k`` steps on its cluster
   (same batch size: the experts together cost what the dense model cost), and mix them with
   the Bayesian posterior router (and, for reference, the clustering router, T = 0.1).
4. Per-language held-out perplexity of the seed, the dense model and every ensemble; plot; metrics.json.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hf_ext.errors import InputError
from hf_ext.jobs import JobOptions

from .common import load_seed, read_jsonl, require, run_in_output, small_llama, training_args

__all__ = ["XELMConfig", "run_xelm"]


@dataclass
class XELMConfig(JobOptions):
    """X-ELM on multilingual news; every field is a recipe key.

    Args:
        data_file (`str` or `None`, *optional*, defaults to `None`):
            JSON Lines with `lang` and `text` (e.g. multilingual/wmt_newstest_monolingual.jsonl.gz of the staged
            datasets).
        dataset_id (`str`, *optional*, defaults to `"Helsinki-NLP/OPUS-MT-testsets"`):
            Hub id the cards name as the data source.
        languages (`list[str]`, *optional*, defaults to `['de', 'fr', 'es', 'cs', 'ru', 'fi']`):
            Languages (values of `lang`); at least 4.
        train_sentences (`int`, *optional*, defaults to `3000`):
            Training sentences per language.
        eval_sentences (`int`, *optional*, defaults to `300`):
            Held-out sentences per language (disjoint from training).
        experts (`list[int]`, *optional*, defaults to `[1, 2, 4]`):
            Numbers of experts k to compare with the dense model.
        clustering (`Literal['tfidf', 'typology']`, *optional*, defaults to `"tfidf"`):
            Balanced TF-IDF k-means on sentences, or language-family clusters.
        seed_model (`str` or `None`, *optional*, defaults to `None`):
            Hub id or folder of a pretrained seed (and its tokenizer); empty trains a small one from scratch.
        vocab_size (`int`, *optional*, defaults to `8192`):
            BPE vocabulary trained on the mix.
        hidden_size (`int`, *optional*, defaults to `192`):
            Model width.
        num_layers (`int`, *optional*, defaults to `4`):
            Model layers.
        seed_steps (`int`, *optional*, defaults to `600`):
            Steps of seed training on the mix.
        expert_steps (`int`, *optional*, defaults to `600`):
            Steps of the dense continuation; k experts get expert_steps / k each.
        batch_size (`int`, *optional*, defaults to `16`):
            Blocks per step (same for the seed, dense and experts).
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per block.
        learning_rate (`float`, *optional*, defaults to `0.002`):
            Peak learning rate of seed training.
        branch_learning_rate (`float`, *optional*, defaults to `0.001`):
            Peak learning rate of the dense continuation and the experts.
        temperature (`float`, *optional*, defaults to `0.1`):
            Clustering router temperature T in softmax(−d²/T).
        top_k (`int` or `None`, *optional*, defaults to `None`):
            Keep the top-k experts per position (None keeps all).
        seed (`int`, *optional*, defaults to `0`):
            Seed for sampling, initialisation and training.
        output_dir (`str`, *optional*, defaults to `"outputs/xelm"`):
            Where metrics.json, the plot and (optionally) the ensembles go.
        save_ensembles (`bool`, *optional*, defaults to `False`):
            Save each ensemble (experts + router) with save_pretrained.
    """

    data_file: str | None = field(default=None, metadata={"help": "JSON Lines with `lang` and `text` (e.g. multilingual/wmt_newstest_monolingual.jsonl.gz of the staged datasets)."})
    dataset_id: str = field(default="Helsinki-NLP/OPUS-MT-testsets", metadata={"help": "Hub id the cards name as the data source."})
    languages: list[str] = field(default_factory=lambda: ["de", "fr", "es", "cs", "ru", "fi"], metadata={"help": "Languages (values of `lang`); at least 4."})
    train_sentences: int = field(default=3000, metadata={"help": "Training sentences per language."})
    eval_sentences: int = field(default=300, metadata={"help": "Held-out sentences per language (disjoint from training)."})
    experts: list[int] = field(default_factory=lambda: [1, 2, 4], metadata={"help": "Numbers of experts k to compare with the dense model."})
    clustering: Literal["tfidf", "typology"] = field(default="tfidf", metadata={"help": "Balanced TF-IDF k-means on sentences, or language-family clusters."})
    seed_model: str | None = field(default=None, metadata={"help": "Hub id or folder of a pretrained seed (and its tokenizer); empty trains a small one from scratch."})
    vocab_size: int = field(default=8192, metadata={"help": "BPE vocabulary trained on the mix."})
    hidden_size: int = field(default=192, metadata={"help": "Model width."})
    num_layers: int = field(default=4, metadata={"help": "Model layers."})
    seed_steps: int = field(default=600, metadata={"help": "Steps of seed training on the mix."})
    expert_steps: int = field(default=600, metadata={"help": "Steps of the dense continuation; k experts get expert_steps / k each."})
    batch_size: int = field(default=16, metadata={"help": "Blocks per step (same for the seed, dense and experts)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per block."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate of seed training."})
    branch_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of the dense continuation and the experts."})
    temperature: float = field(default=0.1, metadata={"help": "Clustering router temperature T in softmax(−d²/T)."})
    top_k: int | None = field(default=None, metadata={"help": "Keep the top-k experts per position (None keeps all)."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, initialisation and training."})
    output_dir: str = field(default="outputs/xelm", metadata={"help": "Where metrics.json, the plot and (optionally) the ensembles go."})
    save_ensembles: bool = field(default=False, metadata={"help": "Save each ensemble (experts + router) with save_pretrained."})

    def __post_init__(self) -> None:
        if len(self.languages) < 2:
            raise InputError(f"languages needs at least 2 entries (X-ELM replications use ≥ 4), got {self.languages}.")
        if any(k < 1 for k in self.experts):
            raise InputError(f"experts must be positive numbers of experts, got {self.experts}.")
        super().__post_init__()  # output folder and Hub settings


def _language_texts(config: XELMConfig) -> dict[str, tuple[list[str], list[str]]]:
    by_lang: dict[str, list[str]] = {}
    for r in read_jsonl(config.data_file, field="data_file"):
        if r["lang"] in config.languages:
            by_lang.setdefault(r["lang"], []).append(r["text"])
    need = config.train_sentences + config.eval_sentences
    out = {}
    for lang in config.languages:
        texts = by_lang.get(lang, [])
        if len(texts) < need:
            raise InputError(f"Language {lang!r} has {len(texts)} sentences in {config.data_file}; train_sentences + eval_sentences = {need}.")
        texts = texts[:]
        random.Random(f"{config.seed}-{lang}").shuffle(texts)
        out[lang] = (texts[: config.train_sentences], texts[config.train_sentences : need])
    return out


def _clusters(config: XELMConfig, k: int, texts: list[str], langs: list[str]):
    """Cluster labels of the training sentences and a clustering router for them."""
    import numpy as np

    from hf_ext.merge.ensemble import ClusterRouter, TfidfClusters, balanced_tfidf_kmeans, typology_clusters

    clusters = balanced_tfidf_kmeans(texts, k, seed=config.seed)
    if config.clustering == "typology":
        mapping = typology_clusters(config.languages, k)
        labels = np.array([mapping[lang] for lang in langs])
        x = clusters.vectorizer.transform(texts)
        centers = np.vstack([np.asarray(x[labels == j].mean(axis=0)) for j in range(k)])
        clusters = TfidfClusters(clusters.vectorizer, centers, labels)
    return clusters.labels, ClusterRouter(clusters, temperature=config.temperature)


def run_xelm(config: XELMConfig) -> dict[str, Any]:
    """Run the replication; returns (and writes to ``output_dir/metrics.json``) the metrics.

    Args:
        config (`XELMConfig`):
            The job's settings (``data_file`` is required).
    """
    require(config.data_file, "data_file", "a JSON Lines file with `lang` and `text`")
    return run_in_output(config, _run_xelm, card=_card, repo_type="model", writer="xelm", commit_message="hf_ext: X-ELM replication")


def _card(config: XELMConfig, results: dict[str, Any]):
    """The replication's root card: held-out perplexity per language of the seed, the dense model
    and each ensemble, the verdict and the plot."""
    from hf_ext.hub.cards import card_hub_id, markdown_table, render_model_card

    langs = list(config.languages)
    seed = card_hub_id(config.seed_model)
    dataset = card_hub_id(config.dataset_id, "datasets")
    card_data = {"tags": ["hf-ext", "x-elm", "expert-ensemble"], **({"base_model": seed, "base_model_relation": "finetune"} if seed else {}),
                 **({"datasets": [dataset]} if dataset else {})}
    rows = [["seed", *(results["seed_ppl"][lang] for lang in langs), results["mean_ppl"]["seed"]],
            ["dense (compute-matched)", *(results["dense_ppl"][lang] for lang in langs), results["mean_ppl"]["dense"]]]
    for k, entry in results["by_k"].items():
        rows.append([f"X-ELM k={k}, Bayesian router", *(entry["bayesian_ppl"][lang] for lang in langs), results["mean_ppl"][f"xelm_k{k}"]])
        if "cluster_router_ppl" in entry:
            ppl = entry["cluster_router_ppl"]
            rows.append([f"X-ELM k={k}, cluster router", *(ppl[lang] for lang in langs), sum(ppl.values()) / len(ppl)])
    k, dense = results["xelm_k"], results["mean_ppl"]["dense"]
    xelm = results["mean_ppl"][f"xelm_k{k}"]
    composition = markdown_table(["k", "cluster", "rows by language"],
                                 [[kk, j, ", ".join(f"{lang} {n}" for lang, n in sorted(c.items()))]
                                  for kk, entry in results["by_k"].items() for j, c in enumerate(entry["cluster_composition"])])
    files = (f"The experts in `experts_kK/clusterC/` (each a causal LM with its tokenizer and card), "
             f"{'the ensembles in `ensemble_kK/`, ' if config.save_ensembles else ''}`metrics.json` and `xelm.png`.")
    return render_model_card(
        "model_card.md.j2", card_data, title=f"X-ELM experts ({', '.join(langs)})",
        summary=(f"Cross-lingual expert language models (Blevins et al., arXiv 2401.10440): experts branched from one seed on "
                 f"TF-IDF clusters of the training text, ensembled by a Bayesian router, against a dense model trained with "
                 f"the same total compute. Mean held-out perplexity: X-ELM k={k} {xelm:.2f} vs dense {dense:.2f} "
                 f"({'better' if xelm < dense else 'not better'}, {xelm / dense - 1:+.1%})."),
        base_model=seed, base_model_relation="finetune",
        sections=[{"title": "Held-out perplexity", "body": markdown_table(["model", *langs, "mean"], rows) + "\n\n![perplexity](xelm.png)"},
                  {"title": "Clusters", "body": composition},
                  {"title": "Files", "body": files}],
    )


def _run_xelm(config: XELMConfig, out: Path) -> dict[str, Any]:
    from hf_ext.lm import branch_experts, eval_loss, train_bpe_tokenizer, train_causal_lm
    from hf_ext.merge.ensemble import BayesianRouter, ExpertEnsemble
    from hf_ext.models import load_causal_lm

    start = time.perf_counter()
    data = _language_texts(config)
    train = [(t, lang) for lang in config.languages for t in data[lang][0]]
    random.Random(config.seed).shuffle(train)
    texts, langs = [t for t, _ in train], [lang for _, lang in train]
    args = lambda name, steps, lr: training_args(out / ".ckpt" / name, steps=steps, batch_size=config.batch_size,  # noqa: E731
                                                 learning_rate=lr, seed=config.seed)
    if config.seed_model:
        seed_model, tokenizer = load_seed(config.seed_model)
    else:
        tokenizer = train_bpe_tokenizer(texts, config.vocab_size)
        seed_model = small_llama(tokenizer, config.hidden_size, config.num_layers, config.seed)
    if config.seed_steps > 0:
        train_causal_lm(seed_model, tokenizer, texts, args("seed", config.seed_steps, config.learning_rate), block_size=config.block_size)
    seed_model.eval()

    def ppl(model) -> dict[str, float]:
        return {lang: math.exp(eval_loss(model, tokenizer, data[lang][1], block_size=config.block_size, batch_size=8))
                for lang in config.languages}  # fmt: skip

    results: dict[str, Any] = {"seed_ppl": ppl(seed_model)}
    dense = copy.deepcopy(seed_model)
    train_causal_lm(dense, tokenizer, texts, args("dense", config.expert_steps, config.branch_learning_rate), block_size=config.block_size)
    results["dense_ppl"] = ppl(dense.eval())
    by_k: dict[str, Any] = {}
    for k in config.experts:
        labels, cluster_router = _clusters(config, k, texts, langs)
        # One expert per cluster, branched from the seed with the shared hf_ext.lm.branch_experts
        # (each saved with its card); expert_steps / k steps each keeps the total compute of dense.
        domains = {f"cluster{j}": [texts[i] for i, lab in enumerate(labels) if lab == j] for j in range(k)}
        paths = branch_experts(seed_model, domains, tokenizer=tokenizer, output_dir=out / f"experts_k{k}",
                               args=args(f"k{k}", max(1, config.expert_steps // k), config.branch_learning_rate),
                               block_size=config.block_size)  # fmt: skip
        experts = [load_causal_lm(paths[name], role=f"expert {name!r}").eval() for name in domains]
        composition = []
        for j in range(k):
            counts: dict[str, int] = {}
            for i, lab in enumerate(labels):
                if lab == j:
                    counts[langs[i]] = counts.get(langs[i], 0) + 1
            composition.append(counts)
        bayes = ExpertEnsemble(experts, BayesianRouter(), top_k=config.top_k, tokenizer=tokenizer).eval()
        entry = {"bayesian_ppl": ppl(bayes), "cluster_composition": composition}
        if k > 1:
            clustered = ExpertEnsemble(experts, cluster_router, top_k=config.top_k, tokenizer=tokenizer).eval()
            entry["cluster_router_ppl"] = ppl(clustered)
        entry["expert_ppl"] = [ppl(e) for e in experts]
        by_k[str(k)] = entry
        if config.save_ensembles:
            bayes.save_pretrained(out / f"ensemble_k{k}")
    kmax = str(max(config.experts))
    results.update({
        "xelm_ppl": by_k[kmax]["bayesian_ppl"],
        "xelm_k": int(kmax),
        "by_k": by_k,
        "mean_ppl": {"seed": _mean(results["seed_ppl"]), "dense": _mean(results["dense_ppl"]),
                     **{f"xelm_k{k}": _mean(v["bayesian_ppl"]) for k, v in by_k.items()}},
        "params_per_model": sum(p.numel() for p in seed_model.parameters()),
        "tokens_per_step": config.batch_size * config.block_size,
        "config": asdict(config),
        "elapsed_seconds": round(time.perf_counter() - start, 1),
    })  # fmt: skip
    _plot(results, config, out / "xelm.png")
    return results


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


def _plot(results: dict[str, Any], config: XELMConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"seed": results["seed_ppl"], "dense": results["dense_ppl"]}
    series.update({f"X-ELM k={k}": v["bayesian_ppl"] for k, v in results["by_k"].items()})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(config.languages))], [values[lang] for lang in config.languages], width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(config.languages))], config.languages)
    ax.set_ylabel("held-out perplexity")
    ax.set_title("X-ELM vs a compute-matched dense model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
