"""A CPU testbed for the over-training law: train tiny Llamas at several sizes and token
multipliers on real text, fit L(N, M) on the smaller sizes, predict the largest.

Every run is a `transformers.Trainer` run from scratch (cosine schedule, AdamW) on the first
D = M·N tokens of one packed token stream; its held-out loss is logged by ``trainer.evaluate``
and the run is read back with `runs_from_trainer_state`, the same loader users point at
their own Trainer outputs. The output folder is a scaling-fit folder (laws, runs, plots,
card; `hf_ext.scaling.card`) plus ``metrics.json``.

Recipe: ``recipes/scaling_tiny.yaml`` (``hf-ext run recipes/scaling_tiny.yaml``).
"""

from __future__ import annotations

import gc
import gzip
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hf_ext.errors import InputError
from hf_ext.jobs import JobOptions

from .common import read_jsonl, require, run_in_output, small_llama, training_args

LM_CORPUS = ["lm_corpus/gutenberg_books.jsonl.gz", "lm_corpus/tinyshakespeare.txt.gz", "lm_corpus/botchan.txt.gz"]


@dataclass
class ScalingTestbedConfig(JobOptions):
    """Tiny-Llama scaling testbed (recipe job ``scaling_tiny``).

    Args:
        data_dir (`str` or `None`, *optional*, defaults to `None`):
            Folder the corpus_files paths are relative to (a copy of the staged datasets); required.
        corpus_files (`list[str]`, *optional*, defaults to `list(LM_CORPUS)`):
            Text files under data_dir: .txt(.gz) (one text) or .jsonl(.gz) with a 'text' field (one text per line).
        output_dir (`str`, *optional*, defaults to `"outputs/scaling_tiny"`):
            Where runs, the fit, plots and the card go.
        hidden_sizes (`list[int]`, *optional*, defaults to `[16, 24, 32, 40]`):
            Model widths, one model size each (>= 4 for a fit on all but the largest).
        num_layers (`int`, *optional*, defaults to `2`):
            Decoder layers of every model.
        head_dim (`int`, *optional*, defaults to `8`):
            Attention head size (heads = width / head_dim).
        token_multipliers (`list[float]`, *optional*, defaults to `[5.0, 20.0]`):
            Tokens per parameter M; every size trains once at each (D = M·N).
        count_embeddings (`bool`, *optional*, defaults to `False`):
            Count embedding/unembedding weights in N (the paper does; for tiny models the vocabulary would dominate).
        vocab_size (`int`, *optional*, defaults to `512`):
            Byte-level BPE vocabulary trained on the corpus.
        tokenizer_chars (`int`, *optional*, defaults to `2000000`):
            Characters of the corpus the tokenizer is trained on.
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per training block.
        batch_size (`int`, *optional*, defaults to `8`):
            Blocks per optimiser step.
        learning_rate (`float`, *optional*, defaults to `0.003`):
            Peak learning rate (cosine decay, 5% warmup).
        eval_fraction (`float`, *optional*, defaults to `0.02`):
            Tail of each text held out for the loss (never trained on).
        max_eval_blocks (`int`, *optional*, defaults to `256`):
            Held-out blocks used for the loss.
        max_chars (`int`, *optional*, defaults to `0`):
            Use only this many characters of the corpus (0: all). For quick checks.
        seed (`int`, *optional*, defaults to `0`):
            Seed for initialisation and block order.
        num_threads (`int`, *optional*, defaults to `0`):
            torch CPU threads (0: torch's default). On a busy shared machine 1 is often fastest.
        bootstrap (`int`, *optional*, defaults to `100`):
            Bootstrap resamples for the law's parameter intervals (0: none).
    """

    data_dir: str | None = field(default=None, metadata={"help": "Folder the corpus_files paths are relative to (a copy of the staged datasets); required."})
    corpus_files: list[str] = field(default_factory=lambda: list(LM_CORPUS), metadata={
        "help": "Text files under data_dir: .txt(.gz) (one text) or .jsonl(.gz) with a 'text' field (one text per line)."})
    output_dir: str = field(default="outputs/scaling_tiny", metadata={"help": "Where runs, the fit, plots and the card go."})
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 24, 32, 40], metadata={
        "help": "Model widths, one model size each (>= 4 for a fit on all but the largest)."})
    num_layers: int = field(default=2, metadata={"help": "Decoder layers of every model."})
    head_dim: int = field(default=8, metadata={"help": "Attention head size (heads = width / head_dim)."})
    token_multipliers: list[float] = field(default_factory=lambda: [5.0, 20.0], metadata={
        "help": "Tokens per parameter M; every size trains once at each (D = M·N)."})
    count_embeddings: bool = field(default=False, metadata={
        "help": "Count embedding/unembedding weights in N (the paper does; for tiny models the vocabulary would dominate)."})
    vocab_size: int = field(default=512, metadata={"help": "Byte-level BPE vocabulary trained on the corpus."})
    tokenizer_chars: int = field(default=2_000_000, metadata={"help": "Characters of the corpus the tokenizer is trained on."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training block."})
    batch_size: int = field(default=8, metadata={"help": "Blocks per optimiser step."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate (cosine decay, 5% warmup)."})
    eval_fraction: float = field(default=0.02, metadata={"help": "Tail of each text held out for the loss (never trained on)."})
    max_eval_blocks: int = field(default=256, metadata={"help": "Held-out blocks used for the loss."})
    max_chars: int = field(default=0, metadata={"help": "Use only this many characters of the corpus (0: all). For quick checks."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation and block order."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default). On a busy shared machine 1 is often fastest."})
    bootstrap: int = field(default=100, metadata={"help": "Bootstrap resamples for the law's parameter intervals (0: none)."})

    def __post_init__(self):
        if len(self.hidden_sizes) < 2 or len(set(self.hidden_sizes)) != len(self.hidden_sizes):
            raise InputError(f"hidden_sizes must list at least 2 distinct widths, got {self.hidden_sizes}.")
        bad = [h for h in self.hidden_sizes if h % self.head_dim]
        if bad:
            raise InputError(f"Every hidden size must be a multiple of head_dim={self.head_dim}; {bad} are not.")
        if not self.token_multipliers or any(m <= 0 for m in self.token_multipliers):
            raise InputError(f"token_multipliers must be positive numbers, got {self.token_multipliers}.")
        n_fit = (len(self.hidden_sizes) - 1) * len(self.token_multipliers)
        if n_fit < 4:
            raise InputError(
                f"The fit uses all sizes but the largest at every M: {n_fit} points, fewer than the law's 4 parameters. "
                "Add sizes or token multipliers."
            )
        super().__post_init__()  # output folder and Hub settings
        if not 0 < self.eval_fraction < 0.5:
            raise InputError(f"eval_fraction must be in (0, 0.5), got {self.eval_fraction}.")


def read_texts(data_dir: str | Path, files: list[str]) -> list[str]:
    """Texts from .txt(.gz) files (one text each) and .jsonl(.gz) files (field 'text').

    Args:
        data_dir (`str` or `Path`):
            Folder holding the files.
        files (`list[str]`):
            File names inside `data_dir`, read in order; a name containing `.jsonl` gives one text per row, any
            other file is one text (gunzipped when it ends in `.gz`). Blank texts are dropped.
    """
    texts = []
    for name in files:
        path = Path(data_dir) / name
        if not path.is_file():
            raise InputError(f"Corpus file {str(path)!r} does not exist; set data_dir (now {str(data_dir)!r}) to the folder holding {name}.")
        if ".jsonl" in path.name:
            texts += [row["text"] for row in read_jsonl(path, field="data_dir and corpus_files")]
        else:
            with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
                texts.append(f.read())
    return [t for t in texts if t.strip()]


def _split(texts: list[str], eval_fraction: float, max_chars: int) -> tuple[list[str], list[str]]:
    """Hold out the tail of every text (cut at a newline) so both splits see every source."""
    if max_chars:
        per = max(1, max_chars // len(texts))
        texts = [t[:per] for t in texts]
    train, held = [], []
    for t in texts:
        cut = t.rfind("\n", 0, int(len(t) * (1 - eval_fraction)))
        cut = cut if cut > 0 else int(len(t) * (1 - eval_fraction))
        train.append(t[:cut])
        held.append(t[cut:])
    # Split long texts into paragraphs-sized pieces so the tokenizer and packer stream them.
    return [p for t in train for p in t.split("\n\n") if p.strip()], [p for t in held for p in t.split("\n\n") if p.strip()]


def _param_count(model, count_embeddings: bool) -> int:
    skip = set()
    if not count_embeddings:
        skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def run_scaling_testbed(config: ScalingTestbedConfig) -> dict[str, Any]:
    """Train the grid of tiny models, fit on all but the largest size, predict the largest.

    Args:
        config (`ScalingTestbedConfig`):
            The testbed's settings: corpus files, model widths × token multipliers, training and fit settings, output
            folder and Hub push.
    """
    require(config.data_dir, "data_dir", "the folder holding the corpus_files")
    return run_in_output(config, _run_scaling_testbed, repo_type="dataset", writer="scaling_tiny", commit_message="hf_ext: scaling-law fit")


def _run_scaling_testbed(config: ScalingTestbedConfig, out: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from tqdm.auto import tqdm
    from transformers import Trainer, TrainingArguments, default_data_collator

    from hf_ext.lm import pack_texts, train_bpe_tokenizer
    from hf_ext.scaling.card import write_fit_folder
    from hf_ext.scaling.laws import OvertrainingLaw
    from hf_ext.scaling.plots import plot_loss_vs_compute, plot_predicted_vs_actual
    from hf_ext.scaling.runs import runs_from_trainer_state, size_label, split_largest

    start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    train_texts, eval_texts = _split(read_texts(config.data_dir, config.corpus_files), config.eval_fraction, config.max_chars)
    sample, total = [], 0
    for t in train_texts:  # tokenizer trained on a prefix of the training split only
        if total >= config.tokenizer_chars:
            break
        sample.append(t)
        total += len(t)
    tokenizer = train_bpe_tokenizer(sample, vocab_size=config.vocab_size, chat_template=False)
    train_blocks = pack_texts(tokenizer, train_texts, config.block_size).shuffle(seed=config.seed)
    eval_blocks = pack_texts(tokenizer, eval_texts, config.block_size)
    eval_blocks = eval_blocks.select(range(min(len(eval_blocks), config.max_eval_blocks)))
    available = len(train_blocks) * config.block_size

    grid = [(h, m) for h in sorted(config.hidden_sizes) for m in sorted(config.token_multipliers)]
    run_dirs, sizes, repeats = [], {}, {}
    # Trainer ends every run with gc.collect() (accelerate's free_memory); with the stack's
    # millions of long-lived objects that costs seconds per run. Freezing them skips them.
    gc.freeze()
    for width, mult in tqdm(grid, desc="scaling runs"):
        heads = width // config.head_dim
        model = small_llama(tokenizer, width, config.num_layers, config.seed, num_heads=heads, num_kv_heads=heads,
                            max_positions=config.block_size)
        n = _param_count(model, config.count_embeddings)
        tokens = mult * n
        n_blocks = max(config.batch_size, math.ceil(tokens / config.block_size))
        # More tokens than the corpus has: repeat it (recorded; the law assumes unique data).
        idx = [i % len(train_blocks) for i in range(n_blocks)]
        run_dir = out / "runs" / f"h{width}_M{mult:g}"
        args = TrainingArguments(**training_args(
            run_dir, steps=-1, batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
            num_train_epochs=1, per_device_eval_batch_size=64, warmup_steps=max(1, int(0.05 * n_blocks / config.batch_size)),
            weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0, logging_steps=50, bf16=False, data_seed=config.seed,
            include_num_input_tokens_seen=True, dataloader_drop_last=False,
        ))
        trainer = Trainer(model=model, args=args, train_dataset=train_blocks.select(idx), eval_dataset=eval_blocks,
                          data_collator=default_data_collator, processing_class=tokenizer)
        trainer.train()
        trainer.evaluate()
        trainer.save_state()
        run_dirs.append(run_dir)
        sizes[str(run_dir)] = n
        repeats[str(run_dir)] = n_blocks * config.block_size / available
        del trainer, model
    gc.unfreeze()

    runs = runs_from_trainer_state(run_dirs, n_params=sizes)
    for rec, width, (_, mult), path in zip(runs.records, [h for h, _ in grid], grid, run_dirs, strict=True):
        rec.update(model=f"h{width}_l{config.num_layers}", size=size_label(rec["N"]), M_target=mult, epochs=repeats[str(path)])
    fit_runs, held = split_largest(runs)
    law = OvertrainingLaw().fit(fit_runs)
    if config.bootstrap:
        law.bootstrap(config.bootstrap, seed=config.seed)
    predicted = law.predict(held)
    rel = np.abs(predicted - held["loss"]) / held["loss"]
    predictions = [{"run": r["name"], "N": r["N"], "M": r["M"], "quantity": "loss", "predicted": float(p), "actual": r["loss"], "rel_err": float(e)}
                   for r, p, e in zip(held.records, predicted, rel, strict=True)]
    plots = [
        (plot_loss_vs_compute(law, runs, out / "loss_vs_compute.png", fit_runs=fit_runs, title="Tiny Llamas: held-out loss vs compute"),
         "Held-out loss vs compute with the fitted L(N, M) per M (hollow: predicted, not fitted)"),
        (plot_predicted_vs_actual(predicted, held["loss"], out / "predicted_vs_actual.png",
                                  labels=[f"{r['size']}, M={r['M']:.0f}" for r in held.records]), "Predicted vs actual loss of the largest model"),
    ]
    metrics = {
        "law_params": law.params, "intervals": law.intervals,
        "fit_points": len(fit_runs), "held_out": predictions,
        "max_rel_err": float(rel.max()), "mean_rel_err": float(rel.mean()),
        "runs": [{k: r[k] for k in ("name", "N", "D", "M", "loss", "epochs")} for r in runs.records],
        "corpus_train_tokens": available, "vocab_size": config.vocab_size, "seconds": time.perf_counter() - start,
    }
    write_fit_folder(
        out, {"loss": law}, runs, title="Over-training law on tiny Llamas (CPU testbed)",
        summary=(f"{len(runs)} tiny Llama runs ({len(config.hidden_sizes)} sizes × {len(config.token_multipliers)} token multipliers) "
                 f"trained from scratch on {', '.join(config.corpus_files)}; L(N, M) fitted on the {len(fit_runs)} smaller runs "
                 f"predicts the largest model's held-out loss within {100 * rel.max():.2f}% (max relative error)."),
        predictions=predictions, plots=plots,
        data_description=("N counts non-embedding parameters" if not config.count_embeddings else "N counts all parameters")
        + f"; D is tokens seen (Trainer's num_input_tokens_seen); loss is mean cross-entropy on {len(eval_blocks)} held-out blocks.",
        extra={"config": asdict(config)},
    )
    return metrics
