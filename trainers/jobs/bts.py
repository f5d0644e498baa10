"""The ``bts`` job: Branch-Train-Stitch end to end (arXiv 2502.00075).

1. a seed: a Hub model (``seed_model``) or a small Llama trained here on general text;
2. one expert per domain, branched from the seed by continued pretraining (`hf_ext.lm.branch_experts`);
3. stitch layers trained with `StitchTrainer` on a mix of the domains and general text
   (``mix_ratios``; the paper's 15/15/15/55 by default);
4. held-out loss per domain and on the mix for the seed, every expert, a model soup (uniform
   average of the experts' weights), a BTM-style ensemble (seed + experts mixed by their
   Bayesian posterior) and the stitched model — written to ``metrics.json`` and the card.

The stitch component's settings are two values of the config, each checked by the component's
own dataclass with one default per setting: ``stitch`` (the layers: a mapping of
:class:`~hf_ext.adapters.stitch.StitchConfig` fields) and ``stitch_training`` (a mapping of
:class:`~trainers.stitch.StitchTrainingConfig` fields). The annealed gate offset is runtime state
of the trainer (:class:`~trainers.stitch.GateOffsetAnneal`), never written back into either.

Run with ``hf-ext run recipes/bts_tiny.yaml``.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hf_ext.errors import InputError
from hf_ext.jobs import JobOptions

from .common import load_seed, read_jsonl, require, run_in_output, small_llama, training_args

__all__ = ["BTSConfig", "run_bts", "load_domain_texts", "mixed_blocks"]


@dataclass
class BTSConfig(JobOptions):
    """Settings of the ``bts`` job. Data specs are JSON Lines files (``.jsonl`` / ``.jsonl.gz``)
    relative to ``data_dir`` (or absolute), turned into texts by a ``str.format`` template.

    Args:
        output_dir (`str`, *optional*, defaults to `"outputs/bts"`):
            Where the seed, experts, stitch layers and metrics.json go.
        data_dir (`str` or `None`, *optional*, defaults to `None`):
            Folder the data files are relative to (a copy of the staged datasets); required.
        general_data (`str`, *optional*, defaults to `"lm_corpus/gutenberg_books.jsonl.gz"`):
            General text (the seed's data and the general share of the stitch mix).
        general_template (`str`, *optional*, defaults to `"{text}"`):
            Template turning a general row into text.
        general_chunk_chars (`int`, *optional*, defaults to `1500`):
            General documents longer than this are cut at paragraph breaks into chunks of about this size (0: keep
            whole).
        expert_data (`dict[str, str]`, *optional*):
            Domain name -> data file of that expert.
        expert_templates (`dict[str, str]`, *optional*):
            Domain name -> template turning a row into text.
        expert_filters (`dict[str, str]`, *optional*, defaults to `{'german': 'lang=de'}`):
            Domain name -> 'field=value' row filter.
        group_rows (`dict[str, int]`, *optional*, defaults to `{'german': 8}`):
            Domain name -> join this many consecutive rows into one text (sentence-level corpora).
        dataset_ids (`list[str]`, *optional*, defaults to `['openai/gsm8k', 'openai/openai_humaneval', 'wmt/wmt19']`):
            Hub ids of the datasets, for the cards.
        max_texts (`int`, *optional*, defaults to `4000`):
            At most this many texts per domain (after shuffling).
        eval_fraction (`float`, *optional*, defaults to `0.1`):
            Held-out fraction of every domain (at most eval_max_texts texts).
        eval_max_texts (`int`, *optional*, defaults to `200`):
            At most this many held-out texts per domain.
        mix_ratios (`dict[str, float]`, *optional*, defaults to `{'math': 0.15, 'code': 0.15, 'german': 0.15, 'general': 0.55}`):
            Share of each domain (and 'general') in the stitch-training mix and in the 'mixed' loss.
        seed_model (`str` or `None`, *optional*, defaults to `None`):
            Hub id of a pretrained seed; None trains a small Llama from scratch on general_data.
        seed_hub_id (`str`, *optional*, defaults to `"hf-ext/bts-tiny-seed"`):
            Hub id the seed is (or would be) published under, for the cards.
        vocab_size (`int`, *optional*, defaults to `8192`):
            BPE vocabulary trained on all domains (scratch seed only).
        hidden_size (`int`, *optional*, defaults to `96`):
            Scratch seed: hidden size.
        num_layers (`int`, *optional*, defaults to `12`):
            Scratch seed: layers.
        num_heads (`int`, *optional*, defaults to `4`):
            Scratch seed: attention heads.
        intermediate_size (`int`, *optional*, defaults to `256`):
            Scratch seed: MLP width.
        block_size (`int`, *optional*, defaults to `128`):
            Tokens per training / evaluation block.
        batch_size (`int`, *optional*, defaults to `16`):
            Blocks per training step (all stages).
        seed_steps (`int`, *optional*, defaults to `600`):
            Steps of seed pretraining (scratch seed only).
        seed_lr (`float`, *optional*, defaults to `0.003`):
            Seed pretraining learning rate.
        expert_steps (`int`, *optional*, defaults to `150`):
            Continued-pretraining steps per expert.
        expert_lr (`float`, *optional*, defaults to `0.001`):
            Expert continued-pretraining learning rate.
        stitch (`dict[str, Any]`, *optional*):
            The stitch layers: a mapping of StitchConfig fields (num_stitch_layers, stitch_after, dropout, init,
            gate_offset, width_projections, init_std), checked by StitchConfig, whose defaults hold for the rest (e.g.
            {num_stitch_layers: 2}). The expert names and Hub ids are set by the job.
        stitch_training (`dict[str, Any]`, *optional*, defaults to `{'max_steps': 200}`):
            Stitch training: a mapping of StitchTrainingConfig fields (max_steps, required; learning_rate, optim,
            gate_offset_final, gate_offset_anneal_steps, ...), checked by StitchTrainingConfig, whose defaults hold
            for the rest; the job's stage settings (cosine schedule, 5% warmup, no saving) apply where
            StitchTrainingConfig keeps TrainingArguments' default. output_dir, per_device_train_batch_size
            (batch_size) and seed and the Hub settings are the job's.
        baselines (`list[str]`, *optional*, defaults to `['soup', 'ensemble']`):
            Baselines to evaluate: 'soup' (uniform weight average of the experts), 'ensemble' (BTM-style posterior
            mixture of seed + experts).
        seed (`int`, *optional*, defaults to `0`):
            Seed for data splits, initialisation and training.
    """

    output_dir: str = field(default="outputs/bts", metadata={"help": "Where the seed, experts, stitch layers and metrics.json go."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder the data files are relative to (a copy of the staged datasets); required."})
    general_data: str = field(default="lm_corpus/gutenberg_books.jsonl.gz", metadata={"help": "General text (the seed's data and the general share of the stitch mix)."})
    general_template: str = field(default="{text}", metadata={"help": "Template turning a general row into text."})
    general_chunk_chars: int = field(default=1500, metadata={"help": "General documents longer than this are cut at paragraph breaks into chunks of about this size (0: keep whole)."})
    expert_data: dict[str, str] = field(default_factory=lambda: {"math": "eval/gsm8k_train.jsonl.gz", "code": "eval/humaneval.jsonl.gz", "german": "multilingual/wmt_newstest_monolingual.jsonl.gz"}, metadata={"help": "Domain name -> data file of that expert."})
    expert_templates: dict[str, str] = field(default_factory=lambda: {"math": "Question: {question}\nAnswer: {answer}", "code": "{prompt}{canonical_solution}", "german": "{text}"}, metadata={"help": "Domain name -> template turning a row into text."})
    expert_filters: dict[str, str] = field(default_factory=lambda: {"german": "lang=de"}, metadata={"help": "Domain name -> 'field=value' row filter."})
    group_rows: dict[str, int] = field(default_factory=lambda: {"german": 8}, metadata={"help": "Domain name -> join this many consecutive rows into one text (sentence-level corpora)."})
    dataset_ids: list[str] = field(default_factory=lambda: ["openai/gsm8k", "openai/openai_humaneval", "wmt/wmt19"], metadata={"help": "Hub ids of the datasets, for the cards."})
    max_texts: int = field(default=4000, metadata={"help": "At most this many texts per domain (after shuffling)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Held-out fraction of every domain (at most eval_max_texts texts)."})
    eval_max_texts: int = field(default=200, metadata={"help": "At most this many held-out texts per domain."})
    mix_ratios: dict[str, float] = field(default_factory=lambda: {"math": 0.15, "code": 0.15, "german": 0.15, "general": 0.55}, metadata={"help": "Share of each domain (and 'general') in the stitch-training mix and in the 'mixed' loss."})
    seed_model: str | None = field(default=None, metadata={"help": "Hub id of a pretrained seed; None trains a small Llama from scratch on general_data."})
    seed_hub_id: str = field(default="hf-ext/bts-tiny-seed", metadata={"help": "Hub id the seed is (or would be) published under, for the cards."})
    vocab_size: int = field(default=8192, metadata={"help": "BPE vocabulary trained on all domains (scratch seed only)."})
    hidden_size: int = field(default=96, metadata={"help": "Scratch seed: hidden size."})
    num_layers: int = field(default=12, metadata={"help": "Scratch seed: layers."})
    num_heads: int = field(default=4, metadata={"help": "Scratch seed: attention heads."})
    intermediate_size: int = field(default=256, metadata={"help": "Scratch seed: MLP width."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training / evaluation block."})
    batch_size: int = field(default=16, metadata={"help": "Blocks per training step (all stages)."})
    seed_steps: int = field(default=600, metadata={"help": "Steps of seed pretraining (scratch seed only)."})
    seed_lr: float = field(default=3e-3, metadata={"help": "Seed pretraining learning rate."})
    expert_steps: int = field(default=150, metadata={"help": "Continued-pretraining steps per expert."})
    expert_lr: float = field(default=1e-3, metadata={"help": "Expert continued-pretraining learning rate."})
    stitch: dict[str, Any] = field(default_factory=dict, metadata={"help": (
        "The stitch layers: a mapping of StitchConfig fields (num_stitch_layers, stitch_after, dropout, init, gate_offset, "
        "width_projections, init_std), checked by StitchConfig, whose defaults hold for the rest (e.g. {num_stitch_layers: 2}). "
        "The expert names and Hub ids are set by the job.")})
    stitch_training: dict[str, Any] = field(default_factory=lambda: {"max_steps": 200}, metadata={"help": (
        "Stitch training: a mapping of StitchTrainingConfig fields (max_steps, required; learning_rate, optim, gate_offset_final, "
        "gate_offset_anneal_steps, ...), checked by StitchTrainingConfig, whose defaults hold for the rest; the job's stage "
        "settings (cosine schedule, 5% warmup, no saving) apply where StitchTrainingConfig keeps TrainingArguments' default. "
        "output_dir, per_device_train_batch_size (batch_size) and seed and the Hub settings are the job's.")})
    baselines: list[str] = field(default_factory=lambda: ["soup", "ensemble"], metadata={"help": "Baselines to evaluate: 'soup' (uniform weight average of the experts), 'ensemble' (BTM-style posterior mixture of seed + experts)."})
    seed: int = field(default=0, metadata={"help": "Seed for data splits, initialisation and training."})

    check_recipe: ClassVar = staticmethod(lambda values, argv=None: _refuse_flat_stitch_keys(values, argv))

    def __post_init__(self) -> None:
        domains = set(self.expert_data)
        if not domains:
            raise InputError("BTSConfig.expert_data is empty; give at least one domain -> data file.")
        args = self.stitch_training_args(Path(self.output_dir) / ".checkpoints" / "stitch")  # before seed and experts train
        if args.max_steps <= 0:
            raise InputError(f"BTSConfig.stitch_training.max_steps must be a positive number of steps, got {args.max_steps}: "
                             "the stitch mix is max_steps x batch_size blocks drawn in mix_ratios.")
        missing = sorted(domains - set(self.expert_templates))
        if missing:
            raise InputError(f"BTSConfig.expert_templates has no template for {missing}; add one per domain of expert_data.")
        super().__post_init__()  # output folder and Hub settings (push_to_hub pushes the stitch layers to hub_model_id)
        wanted = domains | {"general"}
        if set(self.mix_ratios) != wanted:
            raise InputError(f"BTSConfig.mix_ratios must have exactly the keys {sorted(wanted)}, got {sorted(self.mix_ratios)}.")
        if any(v < 0 for v in self.mix_ratios.values()) or abs(sum(self.mix_ratios.values()) - 1.0) > 1e-6:
            raise InputError(f"BTSConfig.mix_ratios must be non-negative and sum to 1, got {self.mix_ratios}.")
        bad = [b for b in self.baselines if b not in ("soup", "ensemble")]
        if bad:
            raise InputError(f"BTSConfig.baselines has unknown entries {bad}; use 'soup' and/or 'ensemble'.")

    def stitch_config(self, seed_model: str | None = None, expert_models: list[str] | None = None) -> Any:
        """The :class:`~hf_ext.adapters.stitch.StitchConfig` of ``stitch``, for the experts of ``expert_data``."""
        from hf_ext.adapters.stitch import StitchConfig

        return _component(StitchConfig, self.stitch, "stitch", _STITCH_SET_BY_JOB, expert_names=list(self.expert_data),
                          seed_model=seed_model, expert_models=expert_models)

    def stitch_training_args(self, output_dir: str | Path) -> Any:
        """The :class:`~trainers.stitch.StitchTrainingConfig` of ``stitch_training``: the training settings only
        (the stitch layers are :meth:`stitch_config`'s, and the trainer takes them from the stitched model)."""
        import dataclasses

        from transformers import TrainingArguments

        from ..stitch import MOVED_TO_STITCH_CONFIG, StitchTrainingConfig

        layers = self.stitch_config()
        given = self.stitch_training if isinstance(self.stitch_training, dict) else {}
        final = given.get("gate_offset_final", StitchTrainingConfig.__dataclass_fields__["gate_offset_final"].default)
        if isinstance(final, (int, float)) and final > layers.gate_offset:
            raise InputError(f"BTSConfig.stitch_training.gate_offset_final={final} is larger than stitch.gate_offset={layers.gate_offset}: "
                             "it would sharpen the gates instead of opening them; use a value <= stitch.gate_offset or null.")
        steps = given.get("max_steps", -1)
        stage = _args(output_dir, steps if isinstance(steps, int) else -1, 0.0, self)  # the job's stage settings
        base = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
        own = {f.name for f in dataclasses.fields(StitchTrainingConfig) if f.name not in base or f.default != base[f.name]}
        stage = {k: v for k, v in stage.items() if k not in own}  # StitchTrainingConfig's own defaults win
        layer_keys = {old: "put it under stitch" + (f" as {new}" if new != old else "") for old, new in MOVED_TO_STITCH_CONFIG.items()}
        return _component(StitchTrainingConfig, self.stitch_training, "stitch_training", {**_TRAINING_SET_BY_JOB, **layer_keys},
                          defaults=stage)


# Keys of the earlier flat BTSConfig -> where they went.
_FLAT_STITCH_KEYS = {
    "num_stitch_layers": "stitch: {num_stitch_layers: ...}",
    "gate_offset": "stitch: {gate_offset: ...}",
    "gate_offset_final": "stitch_training: {gate_offset_final: ...}",
    "gate_anneal_fraction": "stitch_training: {gate_offset_anneal_steps: ...} (below 1: a fraction of max_steps)",
    "stitch_steps": "stitch_training: {max_steps: ...}",
    "stitch_lr": "stitch_training: {learning_rate: ...}",
    "stitch_optim": "stitch_training: {optim: ...}",
}
# Fields of the components the job sets itself, and where to set them instead.
_STITCH_SET_BY_JOB = {name: "set by the job from expert_data and the models" for name in (
    "expert_names", "seed_model", "expert_models", "num_hidden_layers", "hub_hidden_size", "expert_hidden_sizes", "expert_hashes", "seed_hash")}
_TRAINING_SET_BY_JOB = {
    "output_dir": "the job writes checkpoints inside output_dir", "per_device_train_batch_size": "use batch_size (all stages)",
    "seed": "use seed", "push_to_hub": "use push_to_hub (the job pushes the stitch layers last)", "hub_model_id": "use hub_model_id",
}  # and the stitch-layer fields (trainers.stitch.MOVED_TO_STITCH_CONFIG): "put it under stitch"


def _refuse_flat_stitch_keys(values: dict[str, Any], argv: list[str] | None = None) -> None:
    from hf_ext.errors import RecipeError
    from hf_ext.jobs import refuse_old_hub_keys

    refuse_old_hub_keys(values, argv)
    from hf_ext.config import given_keys

    for old in sorted(set(given_keys(values, argv)) & set(_FLAT_STITCH_KEYS)):
        raise RecipeError(f"BTSConfig.{old} moved into the component settings: write {_FLAT_STITCH_KEYS[old]} instead "
                          "(StitchConfig holds the stitch layers, StitchTrainingConfig their training).")


def _component(cls: type, values: Any, key: str, set_by_job: dict[str, str], defaults: dict[str, Any] | None = None,
               **fixed: Any) -> Any:
    """``cls`` built from the mapping ``values`` of BTSConfig field `key` over ``defaults`` (the job's), checked as
    a recipe is (unknown keys, types, NaN, the class's own checks); errors name ``BTSConfig.<key>``. ``fixed`` are
    the values the job sets; a key of ``set_by_job`` given in ``values`` is refused with where it goes instead."""
    from hf_ext.config import parse_config
    from hf_ext.errors import RecipeError

    if not isinstance(values, dict):
        raise RecipeError(f"BTSConfig.{key} must be a mapping of {cls.__name__} fields, got {values!r}.")
    for name in values:
        if name in set_by_job:
            raise RecipeError(f"BTSConfig.{key}.{name} is not a setting here: {set_by_job[name]}.")
    try:
        return parse_config(cls, {**(defaults or {}), **values, **fixed})
    except InputError as exc:
        raise type(exc)(f"BTSConfig.{key}: {exc}") from None


# -- data ---------------------------------------------------------------------------------------
def _chunks(text: str, size: int) -> list[str]:
    # Gutenberg books: drop the licence header/footer, then cut at paragraph breaks.
    start, end = text.find("*** START OF"), text.find("*** END OF")
    if start != -1:
        text = text[text.find("\n", start) + 1 : end if end > start else None]
    out, current = [], ""
    for para in text.replace("\r\n", "\n").split("\n\n"):
        para = para.strip()
        if not para:
            continue
        current = f"{current}\n\n{para}" if current else para
        if len(current) >= size:
            out.append(current)
            current = ""
    return out + ([current] if current else [])


def load_domain_texts(path: Path, template: str, *, row_filter: str | None = None, group: int = 1,
                      chunk_chars: int = 0) -> list[str]:
    """Texts of one domain: rows of a JSON Lines file through `template` (``{field}`` slots).

    Args:
        path (`Path`):
            A JSON Lines file (``.jsonl`` or ``.jsonl.gz``).
        template (`str`):
            ``str.format`` template over a row's fields, e.g. ``"{prompt}{canonical_solution}"``.
        row_filter (`str` or `None`, *optional*, defaults to `None`):
            ``"field=value"``: keep only rows whose field equals value.
        group (`int`, *optional*, defaults to `1`):
            Join this many consecutive texts into one (sentence-level corpora).
        chunk_chars (`int`, *optional*, defaults to `0`):
            Cut texts at paragraph breaks into chunks of about this many characters (0: keep them whole).
    """
    rows = read_jsonl(path, field="data_dir and the domain's file name")
    if row_filter:
        key, _, value = row_filter.partition("=")
        rows = [r for r in rows if str(r.get(key)) == value]
        if not rows:
            raise InputError(f"No rows of {str(path)!r} match the filter {row_filter!r}.")
    try:
        texts = [template.format_map(r) for r in rows]
    except KeyError as exc:
        raise InputError(f"Template {template!r} names the field {exc} that rows of {str(path)!r} lack; fields: {sorted(rows[0])}.") from None
    if group > 1:
        texts = [" ".join(texts[i : i + group]) for i in range(0, len(texts), group)]
    if chunk_chars:
        texts = [c for t in texts for c in _chunks(t, chunk_chars)]
    return [t for t in texts if t.strip()]


def _split(texts: list[str], config: BTSConfig, rng: random.Random) -> tuple[list[str], list[str]]:
    texts = list(texts)
    rng.shuffle(texts)
    texts = texts[: config.max_texts]
    n_eval = min(config.eval_max_texts, max(1, int(len(texts) * config.eval_fraction)))
    return texts[n_eval:], texts[:n_eval]


def mixed_blocks(blocks: dict[str, Any], ratios: dict[str, float], total: int, seed: int = 0):
    """A shuffled dataset of `total` blocks drawn from each domain's packed blocks in `ratios`
    (with replacement where a domain has fewer blocks than its share).

    Args:
        blocks (`dict[str, Any]`):
            Domain name -> a `datasets.Dataset` of packed blocks.
        ratios (`dict[str, float]`):
            Domain name -> share of the mix (a domain of share 0 is left out).
        total (`int`):
            Blocks in the mix (each domain gets ``round(ratio * total)``).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draw and the shuffle.
    """
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    parts = []
    for name, ratio in ratios.items():
        count = int(round(ratio * total))
        if count == 0:
            continue
        n = len(blocks[name])
        idx = rng.choice(n, size=count, replace=count > n)
        parts.append(blocks[name].select(idx.tolist()))
    return datasets.concatenate_datasets(parts).shuffle(seed=seed)


# -- the job ------------------------------------------------------------------------------------
def _args(output_dir: Path, steps: int, lr: float, config: BTSConfig, **extra: Any) -> dict[str, Any]:
    return training_args(output_dir, steps=steps, batch_size=config.batch_size, learning_rate=lr, seed=config.seed,
                         warmup_steps=max(1, steps // 20), logging_steps=25, disable_tqdm=False, **extra)


def run_bts(config: BTSConfig) -> dict[str, Any]:
    """Run the whole pipeline; returns (and writes to ``output_dir/metrics.json``) the losses.

    Everything is written to a temporary folder that replaces ``output_dir`` when the run finished
    (:func:`hf_ext.jobs.job_output`); with ``push_to_hub`` the stitch layers and their card are pushed last.

    Args:
        config (`BTSConfig`):
            The job's settings (``data_dir`` is required).
    """
    return run_in_output(config, _run_bts, repo_type="model", writer="bts", push_subdir="stitch", commit_message="hf_ext: BTS stitch layers")


def _run_bts(config: BTSConfig, out: Path) -> dict[str, Any]:
    from hf_ext.adapters.stitch import StitchedModel
    from hf_ext.lm import branch_experts, pack_texts, train_bpe_tokenizer, train_causal_lm
    from hf_ext.models import load_causal_lm

    from ..stitch import StitchTrainer

    require(config.data_dir, "data_dir", "the folder holding the domain files")
    start = time.perf_counter()
    data_dir = Path(config.data_dir)
    rng = random.Random(config.seed)
    timings: dict[str, float] = {}

    train, held_out = {}, {}
    general = load_domain_texts(data_dir / config.general_data, config.general_template, chunk_chars=config.general_chunk_chars)
    train["general"], held_out["general"] = _split(general, config, rng)
    for name, file in config.expert_data.items():
        texts = load_domain_texts(data_dir / file, config.expert_templates[name], row_filter=config.expert_filters.get(name),
                                  group=config.group_rows.get(name, 1))
        train[name], held_out[name] = _split(texts, config, rng)

    # 1. the seed
    t = time.perf_counter()
    if config.seed_model:
        seed, tokenizer = load_seed(config.seed_model)
        seed_hub_id = config.seed_model
    else:
        corpus = [t for texts in train.values() for t in texts]
        tokenizer = train_bpe_tokenizer(corpus, vocab_size=config.vocab_size)
        seed = small_llama(tokenizer, config.hidden_size, config.num_layers, config.seed, num_heads=config.num_heads,
                           num_kv_heads=config.num_heads, intermediate_size=config.intermediate_size,
                           max_positions=max(256, config.block_size))
        train_causal_lm(seed, tokenizer, train["general"], _args(out / ".checkpoints" / "seed", config.seed_steps, config.seed_lr, config),
                        block_size=config.block_size)
        seed.save_pretrained(out / "seed")
        tokenizer.save_pretrained(out / "seed")
        seed_hub_id = config.seed_hub_id
    timings["seed_seconds"] = time.perf_counter() - t

    # 2. the experts
    t = time.perf_counter()
    paths = branch_experts(seed, {n: train[n] for n in config.expert_data}, tokenizer=tokenizer, output_dir=out / "experts",
                           args=_args(out / "experts", config.expert_steps, config.expert_lr, config),
                           block_size=config.block_size, seed_hub_id=seed_hub_id)
    experts = {n: load_causal_lm(p, role=f"expert {n!r}") for n, p in paths.items()}
    timings["experts_seconds"] = time.perf_counter() - t

    # 3. the stitch layers
    t = time.perf_counter()
    blocks = {n: pack_texts(tokenizer, texts, config.block_size) for n, texts in train.items()}
    stitch_args = config.stitch_training_args(out / ".checkpoints" / "stitch")
    steps = stitch_args.max_steps
    mix = mixed_blocks(blocks, config.mix_ratios, steps * stitch_args.per_device_train_batch_size * stitch_args.gradient_accumulation_steps,
                       seed=config.seed)
    stitch_config = config.stitch_config(seed_model=seed_hub_id, expert_models=[f"{seed_hub_id}-{n}-expert" for n in experts])
    model = StitchedModel(seed, experts, stitch_config, tokenizer=tokenizer)
    trainer = StitchTrainer(model=model, args=stitch_args, train_dataset=mix, processing_class=tokenizer)
    trainer.train()
    model.save_pretrained(out / "stitch")
    timings["stitch_seconds"] = time.perf_counter() - t

    # 4. evaluation
    t = time.perf_counter()
    candidates: dict[str, Any] = {"seed": seed, **{f"expert_{n}": e for n, e in experts.items()}}
    if "soup" in config.baselines:
        from hf_ext.merge import average_models

        candidates["soup"] = average_models(list(experts.values()))
    if "ensemble" in config.baselines:
        from hf_ext.merge import BayesianRouter, ExpertEnsemble

        candidates["ensemble"] = ExpertEnsemble([seed, *experts.values()], BayesianRouter(), names=["seed", *experts])
    candidates["stitched"] = model
    loss = {name: evaluate_domains(m, tokenizer, held_out, config.mix_ratios, config.block_size) for name, m in candidates.items()}
    timings["eval_seconds"] = time.perf_counter() - t

    results = {"loss": loss, "stitch_trainable_params": model.num_trainable_parameters(),
               "expected_trainable_params": model.expected_trainable_parameters(),
               "stitch_after": model.stitch_after, "mix_ratios": config.mix_ratios,
               "held_out_texts": {n: len(v) for n, v in held_out.items()}, **timings,
               "elapsed_seconds": time.perf_counter() - start, "config": asdict(config)}
    card = model.model_card(summary=_summary(loss), datasets=config.dataset_ids, training={"steps": steps, "mix_ratios": config.mix_ratios},
                            plots=[p for p in [trainer.plot_gates(out / "stitch")] if p],
                            eval_results=[{"task_type": "text-generation", "dataset_type": "mixed", "dataset_name": f"held-out {d}",
                                           "metric_type": "loss", "metric_value": v} for d, v in loss["stitched"].items()])
    card.save(str(out / "stitch" / "README.md"))
    return results


def evaluate_domains(model, tokenizer, held_out: dict[str, list[str]], ratios: dict[str, float], block_size: int) -> dict[str, float]:
    """Held-out loss per domain and ``mixed`` = the ratio-weighted mean of the domain losses.

    Args:
        model (`Any`):
            A causal LM (the seed, an expert, a soup, an ensemble or the stitched model).
        tokenizer (`Any`):
            The seed's tokenizer.
        held_out (`dict[str, list[str]]`):
            Domain name -> held-out texts.
        ratios (`dict[str, float]`):
            Domain name -> weight in the ``mixed`` loss.
        block_size (`int`):
            Tokens per evaluation block.
    """
    from hf_ext.lm import eval_loss

    losses = {d: eval_loss(model, tokenizer, texts, block_size=block_size) for d, texts in held_out.items()}
    losses["mixed"] = sum(ratios[d] * losses[d] for d in ratios)
    return losses


def _summary(loss: dict[str, dict[str, float]]) -> str:
    domains = list(next(iter(loss.values())))
    head = "| model | " + " | ".join(domains) + " |\n|---|" + "---|" * len(domains) + "\n"
    rows = "".join(f"| {m} | " + " | ".join(f"{v[d]:.3f}" for d in domains) + " |\n" for m, v in loss.items())
    return "Held-out loss (nats/token) per domain; `mixed` weights the domains by the stitch mix.\n\n" + head + rows
