"""The ``time_vectors`` job: a CPU-sized replication of Nylund et al. (2023) on WMT news by year.

1. Train a byte-level BPE tokenizer and a small Llama base on general English (θ_pre), or load one.
2. Finetune one copy per year on that year's news sentences; τ_year = θ_year − θ_pre.
3. Held-out loss of every year's model on every year, and of the interpolations
   θ_pre + α·τ_first + (1 − α)·τ_last for α ∈ {0, 0.1, …, 1}.
4. Report, for the intermediate years, the best interpolation against the better end-year model
   (``interp_best_loss_mid`` vs ``endpoint_best_loss_mid``), save the time vectors with cards,
   a plot and ``metrics.json``.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hf_ext.errors import InputError
from hf_ext.jobs import JobOptions

from .common import load_seed, read_jsonl, require, run_in_output, small_llama, training_args

__all__ = ["TimeVectorExperimentConfig", "run_time_vectors"]


@dataclass
class TimeVectorExperimentConfig(JobOptions):
    """Time vectors on news by year; every field is a recipe key.

    Args:
        data_file (`str` or `None`, *optional*, defaults to `None`):
            JSON Lines with `year` and `text` (e.g. time/wmt_newstest_en_by_year.jsonl.gz of the staged datasets).
        dataset_id (`str`, *optional*, defaults to `"Helsinki-NLP/OPUS-MT-testsets"`):
            Hub id the cards name as the data source.
        years (`list[int]`, *optional*, defaults to `[2012, 2013, 2014, 2015, 2016]`):
            Years, in order; the first and last are the interpolation ends.
        train_sentences (`int`, *optional*, defaults to `2500`):
            Training sentences per year.
        eval_sentences (`int`, *optional*, defaults to `400`):
            Held-out sentences per year (taken after the training ones, disjoint).
        base_model (`str` or `None`, *optional*, defaults to `None`):
            Hub id or folder of θ_pre; empty trains a small base on pretrain_file.
        pretrain_file (`str` or `None`, *optional*, defaults to `None`):
            General English for the small base (JSON Lines with `text`, e.g. lm_corpus/gutenberg_books.jsonl.gz).
        pretrain_chars (`int`, *optional*, defaults to `3000000`):
            Characters of pretrain_file used for the base and the tokenizer.
        vocab_size (`int`, *optional*, defaults to `4096`):
            BPE vocabulary of the small base.
        hidden_size (`int`, *optional*, defaults to `192`):
            Width of the small base.
        num_layers (`int`, *optional*, defaults to `4`):
            Layers of the small base.
        pretrain_steps (`int`, *optional*, defaults to `600`):
            Optimizer steps of base pretraining.
        finetune_steps (`int`, *optional*, defaults to `200`):
            Optimizer steps of each year's finetune.
        batch_size (`int`, *optional*, defaults to `16`):
            Blocks per step.
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per block.
        pretrain_lr (`float`, *optional*, defaults to `0.002`):
            Peak learning rate of base pretraining.
        finetune_lr (`float`, *optional*, defaults to `0.0005`):
            Peak learning rate of the finetunes.
        alphas (`list[float]`, *optional*, defaults to `[round(0.1 * i, 1) for i in range(11)]`):
            Interpolation weights α of the first year.
        seed (`int`, *optional*, defaults to `0`):
            Seed for sampling, initialisation and training.
        output_dir (`str`, *optional*, defaults to `"outputs/time_vectors"`):
            Where time vectors, metrics.json and the plot go.
        save_vectors (`bool`, *optional*, defaults to `True`):
            Save each year's time vector (safetensors + card).
        base_hub_id (`str` or `None`, *optional*, defaults to `None`):
            Hub id the cards name for the base (e.g. where you push it).
    """

    data_file: str | None = field(default=None, metadata={"help": "JSON Lines with `year` and `text` (e.g. time/wmt_newstest_en_by_year.jsonl.gz of the staged datasets)."})
    dataset_id: str = field(default="Helsinki-NLP/OPUS-MT-testsets", metadata={"help": "Hub id the cards name as the data source."})
    years: list[int] = field(default_factory=lambda: [2012, 2013, 2014, 2015, 2016], metadata={"help": "Years, in order; the first and last are the interpolation ends."})
    train_sentences: int = field(default=2500, metadata={"help": "Training sentences per year."})
    eval_sentences: int = field(default=400, metadata={"help": "Held-out sentences per year (taken after the training ones, disjoint)."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id or folder of θ_pre; empty trains a small base on pretrain_file."})
    pretrain_file: str | None = field(default=None, metadata={"help": "General English for the small base (JSON Lines with `text`, e.g. lm_corpus/gutenberg_books.jsonl.gz)."})
    pretrain_chars: int = field(default=3_000_000, metadata={"help": "Characters of pretrain_file used for the base and the tokenizer."})
    vocab_size: int = field(default=4096, metadata={"help": "BPE vocabulary of the small base."})
    hidden_size: int = field(default=192, metadata={"help": "Width of the small base."})
    num_layers: int = field(default=4, metadata={"help": "Layers of the small base."})
    pretrain_steps: int = field(default=600, metadata={"help": "Optimizer steps of base pretraining."})
    finetune_steps: int = field(default=200, metadata={"help": "Optimizer steps of each year's finetune."})
    batch_size: int = field(default=16, metadata={"help": "Blocks per step."})
    block_size: int = field(default=128, metadata={"help": "Tokens per block."})
    pretrain_lr: float = field(default=2e-3, metadata={"help": "Peak learning rate of base pretraining."})
    finetune_lr: float = field(default=5e-4, metadata={"help": "Peak learning rate of the finetunes."})
    alphas: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)], metadata={"help": "Interpolation weights α of the first year."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, initialisation and training."})
    output_dir: str = field(default="outputs/time_vectors", metadata={"help": "Where time vectors, metrics.json and the plot go."})
    save_vectors: bool = field(default=True, metadata={"help": "Save each year's time vector (safetensors + card)."})
    base_hub_id: str | None = field(default=None, metadata={"help": "Hub id the cards name for the base (e.g. where you push it)."})

    def __post_init__(self) -> None:
        if len(self.years) < 3:
            raise InputError(f"years needs at least 3 entries (two ends and one in between), got {self.years}.")
        super().__post_init__()  # output folder and Hub settings


def _year_texts(config: TimeVectorExperimentConfig) -> dict[int, tuple[list[str], list[str]]]:
    rows = read_jsonl(config.data_file, field="data_file")
    by_year: dict[int, list[str]] = {}
    for r in rows:
        by_year.setdefault(int(r["year"]), []).append(r["text"])
    out = {}
    for year in config.years:
        texts = by_year.get(year, [])
        need = config.train_sentences + config.eval_sentences
        if len(texts) < need:
            raise InputError(f"Year {year} has {len(texts)} sentences in {config.data_file}; train_sentences + eval_sentences = {need}.")
        texts = texts[:]
        random.Random(config.seed + year).shuffle(texts)
        out[year] = (texts[: config.train_sentences], texts[config.train_sentences : need])
    return out


def _pretrain_texts(config: TimeVectorExperimentConfig) -> list[str]:
    rows = read_jsonl(config.pretrain_file, field="pretrain_file")
    texts, total = [], 0
    for r in rows:
        for para in r["text"].split("\n\n"):
            para = " ".join(para.split())
            if len(para) > 40:
                texts.append(para)
                total += len(para)
                if total >= config.pretrain_chars:
                    return texts
    return texts


def run_time_vectors(config: TimeVectorExperimentConfig) -> dict[str, Any]:
    """Run the experiment; returns (and writes) the metrics.

    A base LM (`base_model`, or a tiny Llama pretrained on `pretrain_file`) is fine-tuned once per year; the year
    models' time vectors are then interpolated between the first and the last year and scored on every year.

    Args:
        config (`TimeVectorExperimentConfig`):
            The experiment's settings: the year-labelled data, the base model or pretraining data, training steps,
            interpolation `alphas`, output folder and Hub push.
    """
    require(config.data_file, "data_file", "a JSON Lines file with `year` and `text`")
    if not config.pretrain_file and not config.base_model:
        raise InputError("pretrain_file is not set and there is no base_model: point pretrain_file at English text (JSON Lines with `text`) or give base_model.")
    return run_in_output(config, _run_time_vectors, card=_card, repo_type="model", writer="time_vectors",
                         commit_message="hf_ext: time vectors experiment")


def _card(config: TimeVectorExperimentConfig, metrics: dict[str, Any]):
    """The experiment's root card: per-year losses, the interpolation, the verdict, the plot."""
    from hf_ext.hub.cards import card_hub_id, markdown_table, render_model_card

    years = [str(y) for y in config.years]
    base_loss = {str(y): v for y, v in metrics["base_loss"].items()}
    base = config.base_hub_id or card_hub_id(config.base_model)
    dataset = card_hub_id(config.dataset_id, "datasets")
    card_data = {"tags": ["hf-ext", "time-vectors", "task-arithmetic"], **({"base_model": base, "base_model_relation": "adapter"} if base else {}),
                 **({"datasets": [dataset]} if dataset else {})}
    interp, endpoint = metrics["interp_best_loss_mid"], metrics["endpoint_best_loss_mid"]
    verdict = (f"On the middle years ({', '.join(years[1:-1])}), the best interpolation of "
               f"τ_{years[0]} and τ_{years[-1]} reaches a mean held-out loss of {interp:.4f} against {endpoint:.4f} for the "
               f"better endpoint model: interpolation {'helps' if interp < endpoint else 'does not help'} "
               f"({interp - endpoint:+.4f} nats/token).") if len(years) > 2 else ""
    losses = markdown_table(["model", *(f"eval {y}" for y in years)],
                            [["base", *(base_loss[y] for y in years)]]
                            + [[f"fine-tuned on {m}", *(row[y] for y in years)] for m, row in metrics["year_model_loss"].items()])
    interpolation = markdown_table(["α", *(f"eval {y}" for y in years)],
                                   [[a, *(row[y] for y in years)] for a, row in metrics["interpolation_loss"].items()])
    files = ("One time vector per year in `time_vectors/YEAR/` (safetensors, its config and card; load with "
             "`TimeVector.from_pretrained`), `metrics.json` and `time_vectors.png`." if config.save_vectors
             else "`metrics.json` and `time_vectors.png` (time vectors not saved: `save_vectors: false`).")
    return render_model_card(
        "model_card.md.j2", card_data, title=f"Time vectors {years[0]}–{years[-1]}",
        summary=(f"Time vectors (Nylund et al., arXiv 2312.13401): one fine-tune per year from the same base, τ_year = "
                 f"θ_year − θ_base, and interpolations α·τ_{years[0]} + (1 − α)·τ_{years[-1]}. " + verdict),
        base_model=base, base_model_relation="adapter",
        sections=[{"title": "Held-out loss (nats/token)", "body": losses},
                  {"title": "Interpolation", "body": interpolation + "\n\n![interpolation](time_vectors.png)"},
                  {"title": "Files", "body": files}],
    )


def _run_time_vectors(config: TimeVectorExperimentConfig, out: Path) -> dict[str, Any]:
    from hf_ext.adapters.time_vector import TimeVector, interpolate
    from hf_ext.lm import eval_loss, train_bpe_tokenizer, train_causal_lm

    start = time.perf_counter()
    data = _year_texts(config)
    args = lambda name, steps, lr: training_args(out / ".ckpt" / name, steps=steps, batch_size=config.batch_size,  # noqa: E731
                                                 learning_rate=lr, seed=config.seed)
    if config.base_model:
        base, tokenizer = load_seed(config.base_model)
    else:
        pretrain = _pretrain_texts(config)
        tokenizer = train_bpe_tokenizer(pretrain + [t for tr, _ in data.values() for t in tr], config.vocab_size)
        base = small_llama(tokenizer, config.hidden_size, config.num_layers, config.seed)
        train_causal_lm(base, tokenizer, pretrain, args("base", config.pretrain_steps, config.pretrain_lr), block_size=config.block_size)
    base.eval()
    losses = lambda model: {y: eval_loss(model, tokenizer, data[y][1], block_size=config.block_size) for y in config.years}  # noqa: E731
    base_loss = losses(base)
    vectors, year_loss = {}, {}
    for year in config.years:
        model = copy.deepcopy(base)
        train_causal_lm(model, tokenizer, data[year][0], args(str(year), config.finetune_steps, config.finetune_lr))
        model.eval()
        year_loss[year] = losses(model)
        vectors[year] = TimeVector.from_models(base, model, period=str(year), base_hub_id=config.base_hub_id)
        vectors[year].config.extra = {"dataset": config.dataset_id, "train_sentences": config.train_sentences,
                                      "finetune_steps": config.finetune_steps}  # fmt: skip
        if config.save_vectors:
            vectors[year].save_pretrained(out / "time_vectors" / str(year))
    first, last = config.years[0], config.years[-1]
    interp_loss = {}
    for alpha in config.alphas:
        model = interpolate(vectors[first], vectors[last], alpha).apply_to(copy.deepcopy(base))
        interp_loss[alpha] = losses(model.eval())
    mid = config.years[1:-1]
    best_alpha = {y: min(config.alphas, key=lambda a: interp_loss[a][y]) for y in mid}
    interior = [a for a in config.alphas if 0 < a < 1]
    metrics = {
        "years": config.years,
        "base_loss": base_loss,
        "year_model_loss": {str(m): {str(y): v for y, v in row.items()} for m, row in year_loss.items()},
        "interpolation_loss": {f"{a:g}": {str(y): v for y, v in row.items()} for a, row in interp_loss.items()},
        "interp_best_alpha_mid": {str(y): best_alpha[y] for y in mid},
        "interp_best_loss_mid": sum(interp_loss[best_alpha[y]][y] for y in mid) / len(mid),
        "interp_best_interior_loss_mid": (sum(min(interp_loss[a][y] for a in interior) for y in mid) / len(mid)) if interior else None,
        "endpoint_best_loss_mid": sum(min(year_loss[first][y], year_loss[last][y]) for y in mid) / len(mid),
        "own_year_loss_mid": sum(year_loss[y][y] for y in mid) / len(mid),
        "config": asdict(config),
        "elapsed_seconds": round(time.perf_counter() - start, 1),
        "params": sum(p.numel() for p in base.parameters()),
    }
    _plot(metrics, config, out / "time_vectors.png")
    return metrics


def _plot(metrics: dict[str, Any], config: TimeVectorExperimentConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    alphas = [float(a) for a in metrics["interpolation_loss"]]
    for year in config.years:
        ax.plot(alphas, [metrics["interpolation_loss"][f"{a:g}"][str(year)] for a in alphas], marker="o", label=f"eval {year}")
    ax.set_xlabel(f"α (weight of τ_{config.years[0]}; 1 − α on τ_{config.years[-1]})")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("Interpolating time vectors")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
