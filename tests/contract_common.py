"""What the registry contract tests (tests/test_contracts.py, tests/test_contracts_hub.py) need to build
each kind of entry, PEFT's ``testing_common.py`` for hf_ext: synthetic pools for selectors, the
featurizer cases, a perturbed setting for fingerprints, every recipe of every job (top-level files and
the selection jobs nested in ``compare`` recipes), tiny inputs and recipe values that run every job in
seconds (the ``assets`` and ``judge_server`` fixtures and :func:`job_values`, which tests/test_faults.py
uses too), and a tiny instance of every class that uses hf_ext's Hub mixin (:func:`hub_cases`).

Entries come from the registries themselves (``SELECTORS``, ``MERGE_METHODS``, ``STEPS``, ``JOBS``,
``FEATURIZERS``, the subclasses of ``PushToHubMixin``), so a new entry is checked without editing this
file; what a new entry may need here is named by the failing test (a column maker for a new selector
column, a featurizer case, a job's values, a Hub case).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


# --- selectors: a pool with the columns a selector reads ------------------------------------------------------

def _sae_rows(n: int, rng: np.random.Generator, num_latents: int = 64) -> dict[str, list]:
    ids = [sorted(rng.choice(num_latents, size=int(rng.integers(2, 9)), replace=False).tolist()) for _ in range(n)]
    return {"ids": ids, "values": [rng.uniform(0.5, 5.0, size=len(i)).round(3).tolist() for i in ids],
            "count": [len(i) for i in ids], "embedding": rng.normal(size=(n, 8)).round(4).tolist()}


# Column (without a featurizer prefix) -> maker(n, rng) of that column for n rows.
COLUMN_MAKERS: dict[str, Any] = {
    "response_tokens": lambda n, rng: rng.integers(1, 400, size=n).tolist(),
    "judge_score": lambda n, rng: rng.uniform(4.5, 5.0, size=n).round(2).tolist(),  # all pass AlpaGasus' 4.5
    "less_score": lambda n, rng: rng.uniform(-1.0, 1.0, size=n).round(4).tolist(),  # weighted cosines
    **{f"sae_{part}": (lambda part: lambda n, rng: _sae_rows(n, np.random.default_rng(int(rng.integers(1 << 30))))[part])(part)
       for part in ("ids", "values", "count", "embedding")},
}


def make_pool(columns: tuple[str, ...], n: int = 40, seed: int = 0) -> dict[str, list]:
    """A dict-of-columns pool holding `columns` (plus ``instruction``/``output`` text), n rows."""
    rng = np.random.default_rng(seed)
    pool: dict[str, list] = {"instruction": [f"question {i}" for i in range(n)], "output": [f"answer {i}" for i in range(n)]}
    if any(c.startswith("sae_") for c in columns):  # the SAE columns describe the same rows: one draw
        pool.update({f"sae_{k}": v for k, v in _sae_rows(n, rng).items()})
    for column in columns:
        if column not in pool:
            if column not in COLUMN_MAKERS:
                raise KeyError(f"tests/contract_common.py has no maker for column {column!r}: add one to COLUMN_MAKERS.")
            pool[column] = COLUMN_MAKERS[column](n, rng)
    return pool


# --- a changed setting -------------------------------------------------------------------------------------

def changed(value: Any, annotation: Any = None) -> Any:
    """A different value of the same kind (for "the fingerprint changes when a setting changes")."""
    if get_origin(annotation) is Literal:
        others = [a for a in get_args(annotation) if a != value]
        if others:
            return others[0]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, tuple):
        return value[:-1] if value else ("x",)
    if value is None and annotation is not None:
        for arg in get_args(annotation):
            if arg in (int, float, str):
                return arg(1) if arg is not str else "changed"
    return None


def changed_argument(cls: type) -> tuple[str, Any] | None:
    """(name, new value) of the first constructor argument with a default that `changed` can vary."""
    hints = typing.get_type_hints(cls.__init__) if not dataclasses.is_dataclass(cls) else typing.get_type_hints(cls)
    for name, param in inspect.signature(cls).parameters.items():
        if param.default is inspect.Parameter.empty or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        new = changed(param.default, hints.get(name))
        if new is not None and new != param.default:
            return name, new
    return None


# --- featurizers --------------------------------------------------------------------------------------------

def _lora_checkpoint(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(b"")  # found by name; nothing loads at construction
    return str(folder)


def featurizer_cases(tmp: Path) -> dict[str, dict[str, Any]]:
    """Featurizer class name -> {"build": kwargs -> object, "kwargs", "change": (name, value),
    "bad": (kwargs, field the error must name), "columns": columns it adds, "batch_error": (batch, field)}."""
    from hf_ext.select.judge import JudgeScorer
    from hf_ext.select.less.gradients import GradientFeaturizer
    from hf_ext.select.sae.featurizer import SAEFeaturizer
    from hf_ext.select.scores import ResponseLengthScorer

    ckpt = _lora_checkpoint(tmp / "checkpoint-1")
    return {
        "ResponseLengthScorer": dict(build=lambda **kw: ResponseLengthScorer(**kw), kwargs={"tokenizer": None},
                                     change=("response_column", "answer"), columns=["response_tokens"],
                                     batch_error=({"answer": ["x"]}, "output")),
        "JudgeScorer": dict(build=lambda **kw: JudgeScorer(**kw), kwargs={}, change=("dimension", "helpfulness"),
                            columns=["judge_score", "judge_raw"], batch_error=({"instruction": ["x"], "input": [""]}, "output")),
        "SAEFeaturizer": dict(build=lambda **kw: SAEFeaturizer(**kw), kwargs={"model": "tiny", "sae": "org/sae", "layer": 1},
                              change=("threshold", 1.5), bad=({"max_length": 1}, "max_length"),
                              columns=SAEFeaturizer(model="tiny", sae="org/sae").output_columns()),
        "GradientFeaturizer": dict(build=lambda **kw: GradientFeaturizer(**kw), kwargs={"model": "tiny", "checkpoints": [ckpt]},
                                   change=("proj_dim", 64), bad=({"kind": "newton"}, "kind"), columns=[]),
    }


# --- jobs: every recipe of every job -------------------------------------------------------------------------

def job_recipes() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """job -> [(where, values without `job`)]: each recipes/*.yaml, and each selection job nested in a
    ``compare`` recipe's ``selections`` (what the compare job runs)."""
    from hf_ext.config import load_recipe

    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path in sorted(RECIPES.glob("*.yaml")):
        values = load_recipe(path)
        job = values.pop("job", "select")
        found.setdefault(job, []).append((path.name, values))
        for name, spec in (values.get("selections") or {}).items():
            if isinstance(spec, dict) and spec.get("job") not in (None, "existing"):
                spec = dict(spec)
                nested = spec.pop("job")
                defaults = values.get("selection_defaults") or {} if nested == "select" else {}
                found.setdefault(nested, []).append((f"{path.name}:selections.{name}", {**defaults, **spec}))
    return found


def plain(value: Any) -> Any:
    """A config value as YAML can write it (enums by value, nested dataclasses as mappings)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def as_recipe(config: Any) -> dict[str, Any]:
    """The recipe that rebuilds `config`: its init fields that differ from their defaults."""
    out = {}
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = object()  # required: always written
        value = getattr(config, f.name)
        if value != default:
            out[f.name] = plain(value)
    return out


def int_field(config_cls: type) -> str | None:
    """Name of a plain ``int`` field (for the wrong-type check)."""
    hints = typing.get_type_hints(config_cls)
    return next((f.name for f in dataclasses.fields(config_cls) if f.init and hints.get(f.name) is int), None)


# --- jobs: tiny inputs and recipe values that run every job in seconds (tests/test_faults.py, test_contracts_hub.py) ---

POOL_ROWS = [{"instruction": f"Question {i}?", "input": "", "output": "An answer " + "word " * (i % 7 + 1), "category": "qa"}
             for i in range(24)]  # fmt: skip
CPU = {"use_cpu": True, "report_to": "none", "bf16": False, "save_strategy": "no", "logging_steps": 1, "seed": 0}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tiny local inputs shared by the jobs: two models, a pool, a BTS data folder, a target set."""
    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("fault_inputs")
    tok = tiny_tokenizer()
    model = save_tiny(root / "model", tiny_llama(vocab_size=len(tok), max_position_embeddings=2048), tok)
    other = save_tiny(root / "other", tiny_llama(vocab_size=len(tok), max_position_embeddings=2048, seed=1), tok)
    pool = root / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in POOL_ROWS))
    bts = root / "bts_data"
    bts.mkdir()
    words = "the of a river stone light water green small house north cold".split()
    lines = lambda k: "".join(json.dumps({"text": " ".join(words[(i * j) % len(words)] for j in range(40))}) + "\n" for i in range(k))  # noqa: E731
    (bts / "general.jsonl").write_text(lines(60))
    (bts / "math.jsonl").write_text(lines(60))
    target = root / "target.jsonl"
    target.write_text(json.dumps({"question": "Question 3?", "answer": "An answer word word"}) + "\n")
    return {"model": str(model), "other": str(other), "pool": str(pool), "bts": str(bts), "tok": tok, "target": str(target)}


@pytest.fixture(scope="module")
def judge_server():
    """An OpenAI-compatible judge for quality_judge (tests/openai_server.py, on 127.0.0.1)."""
    from openai_server import OpenAICompatibleServer

    server = OpenAICompatibleServer(lambda body: "Educational score: 4" if "Alice" in str(body) else "Educational score: 1")
    with server:
        yield server.base_url


def job_values(job: str, a: dict, out: Path) -> dict:
    """Tiny recipe values for `job` that run in seconds on a CPU, from the `assets` (and `judge_server`)
    fixtures' inputs; the caller adds ``output_dir`` (a fresh folder: some jobs write inputs beside it)."""
    data = REPO / "tests" / "data"
    if job == "select":
        return {"dataset": a["pool"], "budget": 4, "compare_methods": []}
    if job == "curate":
        return {"dataset": str(data / "web" / "c4_en_train_first150.jsonl.gz"), "pipeline": "dclm_heuristics", "max_docs": 30}
    if job == "audit":
        return {"dataset": str(data / "web" / "c4_en_train_first150.jsonl.gz"), "url_column": "url", "derived_groups": ["url_site_type"],
                "filters": ["gopher_quality"], "n_boot": 20, "min_group_size": 1, "max_docs": 40}
    if job == "merge":
        return {"models": [a["model"], a["other"]], "input_hub_ids": ["org/a", "org/b"]}
    if job == "less_warmup":
        return {"model_name_or_path": a["model"], "dataset": a["pool"], "lora_r": 2, "lora_alpha": 4, "lora_target_modules": ["q_proj"],
                "num_train_epochs": 1.0, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "warmup_fraction": 0.5,
                "max_length": 48, "use_cpu": True, "report_to": "none", "bf16": False}
    if job == "less_select":
        from hf_ext.config import JOBS, import_path, parse_config

        warm = out.parent / "warm_for_select"
        if not warm.exists():
            import_path(JOBS["less_warmup"][1])(parse_config(import_path(JOBS["less_warmup"][0]), {**job_values("less_warmup", a, out),
                                                                                                    "output_dir": str(warm)}))
        return {"model_name_or_path": a["model"], "warmup_dir": str(warm), "dataset": a["pool"],
                "target_dataset": str(data / "less" / "gsm8k_test_24.jsonl.gz"), "target_split": "train", "proj_dim": 32,
                "target_instruction_column": "instruction", "target_input_column": "input", "target_response_column": "output",
                "max_length": 256, "percent": None, "budget": 4}
    if job == "critic_rm":
        pref = data / "preference"
        return {"model_name_or_path": a["model"], "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "train_file": str(pref / "alpaca_eval_gpt4_slice.jsonl.gz"), "critiques_file": str(pref / "alpaca_eval_smollm2_critiques.jsonl.gz"),
                "num_critiques": 1, "eval_pairs": 2, "eval_num_critiques": 0, "max_chars": 2000, "max_length": 2048, "train_pairs": 4,
                "max_steps": 1, "per_device_train_batch_size": 2, **CPU}
    if job == "bts":
        return {"data_dir": a["bts"], "general_data": "general.jsonl", "expert_data": {"math": "math.jsonl"},
                "expert_templates": {"math": "{text}"}, "expert_filters": {}, "group_rows": {}, "dataset_ids": [],
                "mix_ratios": {"math": 0.5, "general": 0.5}, "max_texts": 40, "eval_max_texts": 4, "vocab_size": 300, "hidden_size": 16,
                "num_layers": 2, "num_heads": 2, "intermediate_size": 32, "block_size": 16, "batch_size": 2, "seed_steps": 1,
                "expert_steps": 1, "stitch": {"num_stitch_layers": 1}, "stitch_training": {"max_steps": 1, "gate_offset_final": None},
                "baselines": []}
    if job == "time_vectors":
        f = str(data / "merge" / "wmt_newstest_en_2012_2014_2016_150.jsonl.gz")
        return {"data_file": f, "pretrain_file": f, "pretrain_chars": 5000, "years": [2012, 2014, 2016], "train_sentences": 20,
                "eval_sentences": 10, "vocab_size": 300, "hidden_size": 16, "num_layers": 1, "pretrain_steps": 1, "finetune_steps": 1,
                "batch_size": 2, "block_size": 16, "alphas": [0.0, 1.0], "base_hub_id": "org/tiny-base"}
    if job == "xelm":
        return {"data_file": str(data / "merge" / "flores200_devtest_5lang_80.jsonl.gz"), "languages": ["eng_Latn", "deu_Latn"],
                "train_sentences": 20, "eval_sentences": 10, "experts": [1], "vocab_size": 300, "hidden_size": 16, "num_layers": 1,
                "seed_steps": 0, "expert_steps": 1, "batch_size": 2, "block_size": 16}
    if job == "scaling_tiny":
        return {"data_dir": str(data / "scaling"), "corpus_files": ["tinyshakespeare_head.txt.gz"], "hidden_sizes": [8, 16, 24],
                "num_layers": 1, "token_multipliers": [0.2, 0.4], "vocab_size": 300, "tokenizer_chars": 20000, "block_size": 16,
                "batch_size": 4, "eval_fraction": 0.1, "max_eval_blocks": 8, "bootstrap": 0, "num_threads": 1}
    if job == "sft":
        return {"model_name_or_path": a["model"], "dataset": a["pool"], "max_length": 64, "per_device_train_batch_size": 2,
                "max_steps": 1, "dataset_num_proc": None, **CPU}
    if job == "evaluate":
        # the response NLL only: the lm-eval tasks are covered in test_evaluate.py, the output folder is the same
        return {"model_name_or_path": a["model"], "tasks": [], "response_nll_dataset": a["pool"], "response_nll_limit": 4,
                "chat_template": False}
    if job == "embedding_select":
        return {"dataset": a["pool"], "target_dataset": a["target"], "target_split": "train", "budget": 3, "percent": None}
    if job in ("quality_classifier", "quality_judge"):
        if job == "quality_classifier":
            return {"scorer": "fasttext", "data_dir": str(data), "heldout": [], "fasttext": {"epoch": 2}, "heuristic_negatives": None,
                    "positives": [{"path": "web/wikipedia_demo_first6.jsonl.gz", "name": "wikipedia", "chunk": True}],
                    "negatives": [{"path": "web/c4_en_train_first150.jsonl.gz", "name": "c4_train", "max_docs": 30}]}
        return {"data_dir": str(data), "negatives": [{"path": "web/c4_en_train_first150.jsonl.gz", "max_docs": 10}],
                "pages": [{"path": "quality/gutenberg_alice.jsonl.gz", "chunk": True, "max_pages": 10, "name": "alice"}],
                "heldout": [], "sample_size": 12, "judge_backend": "openai", "judge": {"base_url": a["judge"], "model": "judge"},
                "judge_max_chars": 200, "embedder": {"max_length": 32}}
    if job == "compare":
        return {"pool": a["pool"], "heldout_size": 3, "selections": {"longest": {"job": "select", "method": "longest"}},
                "selection_defaults": {"budget": 4, "compare_methods": [], "tokenizer": a["model"], "dataset_license": "other"},
                "sft": {"model_name_or_path": a["model"], "base_model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_length": 64,
                        "per_device_train_batch_size": 2, "max_steps": 1, **CPU},
                "evaluate": {"tasks": [], "response_nll_dataset": a["pool"], "response_nll_limit": 3, "chat_template": False},
                "bootstrap_samples": 20,
                "baseline": "longest"}
    raise KeyError(job)


# --- Hub artefacts: every class that uses hf_ext's PushToHubMixin, and a tiny instance of each -----------

PACKAGES = ("hf_ext", "trainers")


def _mixin_modules() -> list[str]:
    """Modules of hf_ext and trainers whose source defines a class deriving (by name, at any depth) from
    ``PushToHubMixin``: read with ``ast``, so finding them imports nothing else."""
    import ast

    classes = []  # (module, class name, names of its bases)
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", None) for b in node.bases}
                    classes.append((module, node.name, bases))
    names, size = {"PushToHubMixin"}, 0
    while len(names) != size:  # subclasses of subclasses, to any depth
        size = len(names)
        names |= {name for _, name, bases in classes if bases & names}
    return sorted({module for module, _, bases in classes if bases & names})


def hub_artefact_classes() -> list[type]:
    """Every class of hf_ext and trainers that inherits :class:`hf_ext.hub.PushToHubMixin`: the modules
    that may define one are imported, then the mixin's subclasses are walked (a class a test defines
    is left out)."""
    import importlib

    from hf_ext.hub.mixin import PushToHubMixin

    for module in _mixin_modules():
        importlib.import_module(module)
    found, todo = [], [PushToHubMixin]
    while todo:
        for cls in todo.pop().__subclasses__():
            todo.append(cls)
            if cls.__module__.split(".")[0] in PACKAGES and cls not in found:
                found.append(cls)
    return sorted(found, key=lambda c: c.__qualname__)


@dataclasses.dataclass
class HubCase:
    """How the Hub round-trip tests build, reload and compare one PushToHubMixin class.

    ``build()`` makes a tiny instance whose tensors are not their initial values; ``load(obj, where)``
    reads it back from a folder or a Hub repo id (``obj`` supplies what is not saved, e.g. the frozen
    models of stitch layers); ``state(obj)`` is what must survive: (tensors, config as plain values);
    ``pulled(config, repo_id)`` is the config a load from the Hub gives (what the class adds, e.g. the
    source repo).
    """

    build: Any
    load: Any
    state: Any
    pulled: Any = staticmethod(lambda config, repo_id: config)


def _perturbed(module: Any, seed: int) -> Any:
    """`module` with every parameter moved by seeded noise (so a round trip that kept the initial
    values, zeros or an identity, would be caught)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
    return module


def _time_vector() -> Any:
    from hf_ext.adapters.time_vector import TimeVector
    from hf_ext.testing import tiny_llama

    small = dict(hidden_size=16, num_layers=1, intermediate_size=32, num_heads=2, num_kv_heads=1)
    return TimeVector.from_models(tiny_llama(seed=0, **small), tiny_llama(seed=1, **small), period="2016",
                                  base_hub_id="hf-ext-tests/tiny-base", finetuned_hub_id="hf-ext-tests/tiny-2016")


def _time_vector_state(tv: Any) -> tuple[dict, dict]:
    # Saved in the sources' dtype (float32): τ computed in float64 and stored in float32 is what comes back.
    return {k: v.float() if v.is_floating_point() else v for k, v in tv.items()}, dataclasses.asdict(tv.config)


def _stitched_model() -> Any:
    from hf_ext.adapters.stitch import StitchConfig, StitchedModel
    from hf_ext.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()  # cached per process
    seed = tiny_llama(tokenizer=tok, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=32, seed=0)
    expert = tiny_llama(tokenizer=tok, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=32, seed=1)
    config = StitchConfig(num_stitch_layers=2, gate_offset=3.5, seed_model="hf-ext-tests/seed", expert_models=["hf-ext-tests/math"])
    model = StitchedModel(seed, {"math": expert}, config)
    _perturbed(model.stitch, seed=2)
    return model


def _stitched_state(model: Any) -> tuple[dict, dict]:
    return {k: v.detach().clone() for k, v in model.stitch_state_dict().items()}, {**model.stitch_config.to_dict(), "gate_offset": model.gate_offset}


def _sae() -> Any:
    from hf_ext.select.sae.model import TopKSAE

    sae = TopKSAE(d_in=8, num_latents=16, k=4, seed=0, metadata={"model": "hf-ext-tests/tiny", "layer": 1, "hook_name": "layers.1"})
    return _perturbed(sae, seed=3)


def _sae_state(sae: Any) -> tuple[dict, dict]:
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}, {**sae.config(), "apply_b_dec_to_input": sae.apply_b_dec_to_input}


def _sae_pulled(config: dict, repo_id: str) -> dict:
    # A Hub load records where it came from in the SAE's metadata (published files name Hub ids).
    return {**config, "hf_ext": {**config.get("hf_ext", {}), "source": repo_id}}


def hub_cases() -> dict[str, HubCase]:
    """PushToHubMixin class name -> its :class:`HubCase`; a new class needs one (the test says so)."""
    from hf_ext.adapters.stitch import StitchedModel
    from hf_ext.adapters.time_vector import TimeVector
    from hf_ext.select.sae.model import TopKSAE

    return {
        "TimeVector": HubCase(build=_time_vector, load=lambda obj, where: TimeVector.from_pretrained(where), state=_time_vector_state),
        "StitchedModel": HubCase(build=_stitched_model, state=_stitched_state,
                                 load=lambda obj, where: StitchedModel.from_pretrained(obj.seed, dict(obj.experts), where)),
        "TopKSAE": HubCase(build=_sae, load=lambda obj, where: TopKSAE.from_pretrained(where), state=_sae_state, pulled=_sae_pulled),
    }
