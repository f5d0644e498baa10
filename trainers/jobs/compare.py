"""The ``compare`` job: judge selection methods by the model trained on what they select.

One recipe runs: the pool split into a selectable part and held-out rows (for the response
NLL) → one selection per entry of `selections` (each a ``select``, ``less_select`` or ``embedding_select`` job, its
own config's fields) → an ``sft`` of the same base model on each, same steps and seed → the
``evaluate`` scoring of each trained model and of the untuned base, all in memory → one card
with a method × metric table (± lm-eval's stderr), paired bootstrap 95% CIs of every method's
difference to the `baseline` method, a PNG plot and the verdict in plain words.

    hf-ext run recipes/compare_selection_smollm2.yaml --eval_data_dir DATA/eval
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hf_ext.config import JOBS, check_keys, import_path
from hf_ext.errors import InputError
from hf_ext.jobs import JobOptions, job_output

__all__ = ["CompareConfig", "run_compare", "paired_bootstrap"]

SELECTION_JOBS = ("select", "less_select", "embedding_select", "existing")  # existing: {job: existing, path: folder or Hub id}


@dataclass
class CompareConfig(JobOptions):
    """Settings of the comparison job (`job: compare`); each stage's settings are a mapping of
    that stage's own config fields (SelectionConfig / LessSelectConfig, SFTJobConfig, EvaluateConfig).

    Args:
        pool (`str`, *optional*, defaults to `"dolly_alpagasus_3k"`):
            Instruction pool: bundled name, file or Hub id; every selection reads its selectable part.
        heldout_size (`int`, *optional*, defaults to `100`):
            Pool rows held out of selection (seeded) whose responses give the response NLL (0: none).
        selections (`dict`, *optional*, defaults to `{}`):
            name -> mapping with `job` (select | less_select | embedding_select) and that job's fields; `dataset` and
            `output_dir` are set by the compare job. `{job: existing, path: ...}` reuses a selection folder or Hub
            dataset id made earlier from the same pool split.
        selection_defaults (`dict`, *optional*, defaults to `{}`):
            Fields merged under every select-job mapping in `selections` (e.g. budget, seed).
        sft (`dict`, *optional*, defaults to `{}`):
            SFTJobConfig fields shared by every fine-tune (dataset, output_dir, evaluate are set per selection).
        evaluate (`dict`, *optional*, defaults to `{}`):
            EvaluateConfig fields for every model (tasks, limit, ...).
        eval_data_dir (`str` or `None`, *optional*, defaults to `None`):
            Folder with the local tasks' files; sets evaluate.eval_data_dir (a flag for convenience).
        include_base (`bool`, *optional*, defaults to `True`):
            Also evaluate the untuned base model.
        baseline (`str`, *optional*, defaults to `"random"`):
            Selection every other method is compared to in the verdict.
        bootstrap_samples (`int`, *optional*, defaults to `2000`):
            Paired bootstrap resamples over items for the difference CIs.
        seed (`int`, *optional*, defaults to `42`):
            Seed of the held-out split and the bootstrap.
        output_dir (`str`, *optional*, defaults to `"outputs/compare"`):
            Folder for selections/, sft/, base/, metrics.json, comparison.png and the card.
    """

    pool: str = field(default="dolly_alpagasus_3k", metadata={"help": "Instruction pool: bundled name, file or Hub id; every selection reads its selectable part."})
    heldout_size: int = field(default=100, metadata={"help": "Pool rows held out of selection (seeded) whose responses give the response NLL (0: none)."})
    selections: dict = field(default_factory=dict, metadata={"help": "name -> mapping with `job` (select | less_select | embedding_select) and that job's fields; `dataset` and `output_dir` are set by the compare job. `{job: existing, path: ...}` reuses a selection folder or Hub dataset id made earlier from the same pool split."})
    selection_defaults: dict = field(default_factory=dict, metadata={"help": "Fields merged under every select-job mapping in `selections` (e.g. budget, seed)."})
    sft: dict = field(default_factory=dict, metadata={"help": "SFTJobConfig fields shared by every fine-tune (dataset, output_dir, evaluate are set per selection)."})
    evaluate: dict = field(default_factory=dict, metadata={"help": "EvaluateConfig fields for every model (tasks, limit, ...)."})
    eval_data_dir: Optional[str] = field(default=None, metadata={"help": "Folder with the local tasks' files; sets evaluate.eval_data_dir (a flag for convenience)."})
    include_base: bool = field(default=True, metadata={"help": "Also evaluate the untuned base model."})
    baseline: str = field(default="random", metadata={"help": "Selection every other method is compared to in the verdict."})
    bootstrap_samples: int = field(default=2000, metadata={"help": "Paired bootstrap resamples over items for the difference CIs."})
    seed: int = field(default=42, metadata={"help": "Seed of the held-out split and the bootstrap."})
    output_dir: str = field(default="outputs/compare", metadata={"help": "Folder for selections/, sft/, base/, metrics.json, comparison.png and the card."})

    def __post_init__(self) -> None:
        if not self.selections:
            raise InputError("`selections` is empty: name at least one selection, e.g. {random: {job: select, method: random}}.")
        for name, spec in self.selections.items():
            if not isinstance(spec, dict) or spec.get("job") not in SELECTION_JOBS:
                raise InputError(f"selections.{name} must be a mapping with `job:` one of {list(SELECTION_JOBS)}, got {spec!r}.")
            if spec["job"] == "existing":
                if set(spec) != {"job", "path"}:
                    raise InputError(f"selections.{name}: `job: existing` takes only `path` (a selection folder or Hub dataset id), got {sorted(spec)}.")
                continue
            config_cls = import_path(JOBS[spec["job"]].config)
            values = self._selection_values(name)
            if getattr(config_cls, "check_recipe", None) is not None:  # renamed keys: the error names the new ones
                config_cls.check_recipe(values)
            check_keys(config_cls, values, source=f"selections.{name}")
        if self.baseline not in self.selections:
            raise InputError(f"baseline {self.baseline!r} is not one of the selections: {sorted(self.selections)}.")
        from .sft import SFTJobConfig
        from hf_ext.evaluation import EvaluateConfig

        check_keys(SFTJobConfig, self.sft, source="`sft` mapping")
        check_keys(EvaluateConfig, self.evaluate, source="`evaluate` mapping")
        for key in ("dataset", "output_dir", "evaluate"):
            if key in self.sft:
                raise InputError(f"sft.{key} is set by the compare job per selection; remove it from the `sft` mapping.")
        if self.heldout_size < 0:
            raise InputError(f"heldout_size must be >= 0, got {self.heldout_size}.")
        super().__post_init__()  # output folder and Hub settings

    def _selection_values(self, name: str) -> dict[str, Any]:
        spec = dict(self.selections[name])
        job = spec.pop("job")
        return {**(self.selection_defaults if job == "select" else {}), **spec}

    def evaluate_values(self) -> dict[str, Any]:
        values = dict(self.evaluate)
        if self.eval_data_dir is not None:
            values["eval_data_dir"] = self.eval_data_dir
        return values


def paired_bootstrap(a: list[float], b: list[float], samples: int, seed: int) -> dict[str, float]:
    """Mean of a - b over paired items with a percentile 95% CI (resampling items).

    Args:
        a (`list[float]`):
            Per-item scores of one model.
        b (`list[float]`):
            Per-item scores of the other, same items in the same order (same length, non-empty).
        samples (`int`):
            Bootstrap resamples of the items.
        seed (`int`):
            Seed of the resampling.

    Returns:
        `dict[str, float]`: ``diff`` (mean of a − b), ``ci_low``, ``ci_high`` (2.5 and 97.5 percentiles) and ``n``.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise InputError(f"Paired bootstrap needs two equal, non-empty item lists, got {x.size} and {y.size}.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(samples, x.size))
    diffs = (x[idx] - y[idx]).mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float((x - y).mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(x.size)}


def _macro_bootstrap(a: dict, b: dict, tasks: list[str], samples: int, seed: int) -> dict[str, float]:
    """Difference of macro-mean task scores, items resampled within each task (paired)."""
    rng = np.random.default_rng(seed)
    diffs = np.zeros(samples)
    point = 0.0
    for task in tasks:
        x, y = np.asarray(a[task], dtype=float), np.asarray(b[task], dtype=float)
        idx = rng.integers(0, x.size, size=(samples, x.size))
        diffs += (x[idx] - y[idx]).mean(axis=1) / len(tasks)
        point += float((x - y).mean()) / len(tasks)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": point, "ci_low": float(lo), "ci_high": float(hi), "n": sum(len(a[t]) for t in tasks)}


def _stage(msg: str, start: float) -> None:
    print(f"[compare {time.perf_counter() - start:7.1f}s] {msg}", flush=True)


def _split_pool(c: CompareConfig, folder: Path):
    from hf_ext.data import load_pool

    ds, source = load_pool(c.pool)
    if c.heldout_size >= len(ds):
        raise InputError(f"heldout_size={c.heldout_size} leaves no pool to select from ({len(ds)} rows).")
    order = np.random.default_rng(c.seed).permutation(len(ds))
    heldout = ds.select(sorted(order[: c.heldout_size].tolist()))
    train = ds.select(sorted(order[c.heldout_size:].tolist()))
    folder.mkdir(parents=True)
    train.to_json(str(folder / "selectable.jsonl"))
    if c.heldout_size:
        heldout.to_json(str(folder / "heldout.jsonl"))
    return source, len(train)


def _plot(path: Path, table: dict[str, dict[str, Any]], tasks: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    has_nll = any(r.get("response_nll") for r in table.values())
    fig, axes = plt.subplots(1, 2 if has_nll else 1, figsize=(11 if has_nll else 7, 4), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]} if has_nll else None)
    ax = axes[0][0]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(tasks))
    for k, name in enumerate(names):
        rows = [table[name]["tasks"].get(t, {}) for t in tasks]
        ax.bar(x + k * width, [r.get("score", np.nan) for r in rows], width, yerr=[r.get("stderr") or 0 for r in rows],
               capsize=2, label=name)
    ax.set_xticks(x + 0.4 - width / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel("accuracy (± stderr)")
    ax.set_title("Downstream accuracy by selection method")
    ax.legend(fontsize=8)
    if has_nll:
        ax = axes[0][1]
        vals = [table[n].get("response_nll") or {} for n in names]
        ax.bar(range(len(names)), [v.get("mean", np.nan) for v in vals], yerr=[v.get("stderr", 0) for v in vals], capsize=3,
               color=[f"C{k}" for k in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        finite = [v["mean"] for v in vals if v]
        if finite:
            ax.set_ylim(min(finite) - 0.15, max(finite) + 0.15)
        ax.set_ylabel("held-out response NLL / token (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdict(name: str, baseline: str, d: dict[str, float], what: str, scale: float, unit: str, lower_better: bool) -> str:
    diff, lo, hi = d["diff"] * scale, d["ci_low"] * scale, d["ci_high"] * scale
    significant = lo > 0 or hi < 0
    better = (diff < 0) if lower_better else (diff > 0)
    word = ("better" if better else "worse") if significant else "not significantly different"
    p = 1 if unit == "points" else 4
    return (f"{name} vs {baseline}: {diff:+.{p}f} {unit} {what} (95% CI [{lo:+.{p}f}, {hi:+.{p}f}], {d['n']} paired items): {word}.")


def run_compare(config: CompareConfig) -> dict[str, Any]:
    """Run every stage and write the comparison; returns its metrics.

    Args:
        config (`CompareConfig`):
            The comparison's settings: the pool, the selections, the shared `sft` and `evaluate` fields, the baseline
            and the output folder.
    """
    from hf_ext.evaluation import EvaluateConfig, evaluate_model, load_for_eval
    from hf_ext.evaluation.local_tasks import resolve_tasks
    from hf_ext.hub.cards import card_hub_id, markdown_table, render_model_card

    from .sft import SFTJobConfig, run_sft

    c = config
    start = time.perf_counter()
    eval_values = c.evaluate_values()
    eval_config = EvaluateConfig(**{"model_name_or_path": c.sft.get("model_name_or_path", "HuggingFaceTB/SmolLM2-135M-Instruct"), **eval_values})
    if eval_config.tasks:
        resolve_tasks(eval_config.tasks, eval_config.eval_data_dir)  # bad task names / files fail before any training
    stages = 1 + len(c.selections) * 2 + int(c.include_base) + 1
    step = 0

    def stage(msg: str) -> None:
        nonlocal step
        step += 1
        _stage(f"stage {step}/{stages}: {msg}", start)

    with job_output(c, repo_type="model", writer="compare", commit_message="hf_ext: selection methods compared downstream") as job:
        out = job.dir
        stage(f"splitting the pool {c.pool!r} ({c.heldout_size} held out for the response NLL)")
        source, pool_rows = _split_pool(c, out / "pool")
        if c.heldout_size and eval_config.response_nll_dataset is None:
            eval_values["response_nll_dataset"] = str(out / "pool" / "heldout.jsonl")
        stage_times: dict[str, float] = {}
        selection_metrics: dict[str, dict] = {}
        for name in c.selections:
            t0 = time.perf_counter()
            stage(f"selection {name!r} ({c.selections[name]['job']})")
            if c.selections[name]["job"] == "existing":  # made earlier (same pool split): read its metrics.json
                from .sft import selection_info

                selection_metrics[name] = selection_info(c.selections[name]["path"]) or {}
                continue
            spec = JOBS[c.selections[name]["job"]]
            values = {**c._selection_values(name), "dataset": str(out / "pool" / "selectable.jsonl"),
                      "output_dir": str(out / "selections" / name)}
            values.setdefault("dataset_license", source.license)  # every selection job has the field
            selection_metrics[name] = import_path(spec.runner)(import_path(spec.config)(**values))
            stage_times[f"select/{name}"] = round(time.perf_counter() - t0, 1)
        results: dict[str, dict[str, Any]] = {}
        items: dict[str, dict[str, list[float]]] = {}
        if c.include_base:
            t0 = time.perf_counter()
            stage("evaluating the untuned base model")
            base_config = EvaluateConfig(**{**eval_values, "model_name_or_path": eval_config.model_name_or_path})
            model, tok = load_for_eval(base_config.model_name_or_path, dtype=base_config.dtype)
            base = evaluate_model(model, tok, base_config)
            del model
            items["base"] = base.pop("items")
            results["base"] = base
            (out / "base").mkdir()
            (out / "base" / "metrics.json").write_text(json.dumps(base, indent=2) + "\n", encoding="utf-8")
            stage_times["evaluate/base"] = round(time.perf_counter() - t0, 1)
        sft_summary: dict[str, dict[str, Any]] = {}
        for name in c.selections:
            t0 = time.perf_counter()
            stage(f"sft + evaluate on the {name!r} selection")
            made = c.selections[name]["job"] != "existing"
            sft_values = {**c.sft, "dataset": str(out / "selections" / name) if made else c.selections[name]["path"],
                          "output_dir": str(out / "sft" / name),
                          "evaluate": eval_values}
            if source.source_datasets:
                sft_values.setdefault("dataset_id", source.source_datasets[0])
            m = run_sft(SFTJobConfig(**sft_values))
            items[name] = json.loads((out / "sft" / name / "items.json").read_text(encoding="utf-8"))
            results[name] = m["eval"]
            sft_summary[name] = {"train_loss": m["train_loss"], "global_step": m["global_step"], "elapsed_seconds": m["elapsed_seconds"]}
            stage_times[f"sft+evaluate/{name}"] = round(time.perf_counter() - t0, 1)

        stage("table, bootstrap CIs, plot and card")
        tasks = [t for t in results[next(iter(results))]["tasks"] if all(t in items[n] for n in results)]
        table: dict[str, dict[str, Any]] = {}
        for name, r in results.items():
            row = {"tasks": {}, "response_nll": r.get("response_nll")}
            for t in tasks:
                tr = r["tasks"][t]
                row["tasks"][t] = {"metric": tr["metric"], "score": tr[tr["metric"]], "stderr": tr.get(f"{tr['metric']}_stderr"), "n": tr.get("n")}
            row["macro_mean"] = float(np.mean([row["tasks"][t]["score"] for t in tasks])) if tasks else None
            if r.get("dclm"):
                row["dclm_core_over_present"] = r["dclm"]["core_over_present"]
            table[name] = row
        comparisons: dict[str, dict[str, Any]] = {}
        verdicts = []
        others = [n for n in results if n != c.baseline]
        for name in others:
            comp: dict[str, Any] = {"tasks": {}}
            for t in tasks:
                comp["tasks"][t] = paired_bootstrap(items[name][t], items[c.baseline][t], c.bootstrap_samples, c.seed)
            if tasks:
                comp["macro_mean"] = _macro_bootstrap(items[name], items[c.baseline], tasks, c.bootstrap_samples, c.seed)
                verdicts.append(_verdict(name, c.baseline, comp["macro_mean"], f"mean accuracy over {len(tasks)} tasks", 100, "points", False))
            if "response_nll" in items[name] and "response_nll" in items[c.baseline]:
                comp["response_nll"] = paired_bootstrap(items[name]["response_nll"], items[c.baseline]["response_nll"], c.bootstrap_samples, c.seed)
                verdicts.append(_verdict(name, c.baseline, comp["response_nll"], "held-out response NLL per token", 1, "nats", True))
            comparisons[name] = comp
        _plot(out / "comparison.png", table, tasks)
        metrics = {
            "pool": c.pool, "pool_rows_selectable": pool_rows, "heldout_size": c.heldout_size, "baseline": c.baseline,
            "selections": {n: {k: m.get(k) for k in ("method", "budget", "selected_size", "mean_response_tokens") if k in m}
                           for n, m in selection_metrics.items()},
            "sft": sft_summary, "table": table, "comparisons": comparisons, "verdict": verdicts, "tasks": tasks,
            "stage_seconds": stage_times,
        }
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 1)
        base_id = card_hub_id(c.sft.get("base_model_id") or eval_config.model_name_or_path)  # None: a local model, the card names none
        card = render_model_card(
            "model_card.md.j2",
            {"tags": ["hf-ext", "data-selection", "comparison", "sft"], **({"base_model": base_id, "base_model_relation": "finetune"} if base_id else {}),
             **({"datasets": list(source.source_datasets)} if source.source_datasets else {})},
            title=f"Selection methods judged downstream: {', '.join(c.selections)}",
            summary=("**Verdict.** " + " ".join(verdicts)) if verdicts else "",
            sections=[{"title": "Results (method × metric)", "body": _table_markdown(table, tasks, comparisons, c.baseline)},
                      {"title": "Plot", "body": "![comparison](comparison.png)"},
                      {"title": "Setup", "body": _setup_text(c, metrics, eval_values)}],
        )
        job.metrics, job.card = metrics, card
        _stage(f"done in {metrics['elapsed_seconds']:.0f}s", start)
    return metrics


def _table_markdown(table: dict, tasks: list[str], comparisons: dict, baseline: str) -> str:
    """The card's two tables: scores per model, then differences to `baseline`. The macro mean
    column is there only when tasks ran, the response NLL column only when it was measured."""
    from hf_ext.hub.cards import markdown_table

    first = table[next(iter(table))]
    with_nll = any(row.get("response_nll") for row in table.values())
    macro = ["macro mean"] if tasks else []
    rows = []
    for name, row in table.items():
        cells = [f"{row['tasks'][t]['score']:.3f} ± {row['tasks'][t]['stderr']:.3f}" if row["tasks"][t]["stderr"] is not None
                 else f"{row['tasks'][t]['score']:.3f}" for t in tasks]
        if tasks:
            cells.append(f"{row['macro_mean']:.3f}" if row.get("macro_mean") is not None else "n/a")
        if with_nll:
            nll = row.get("response_nll")
            cells.append(f"{nll['mean']:.4f} ± {nll['stderr']:.4f}" if nll else "n/a")
        rows.append([name, *cells])
    fmt = lambda d, s=100: f"{d['diff'] * s:+.1f} [{d['ci_low'] * s:+.1f}, {d['ci_high'] * s:+.1f}]"  # noqa: E731
    diffs = []
    for name, comp in comparisons.items():
        cells = [fmt(comp["tasks"][t]) for t in tasks]
        if tasks:
            cells.append(fmt(comp["macro_mean"]) if "macro_mean" in comp else "n/a")
        if with_nll:
            cells.append(f"{comp['response_nll']['diff']:+.4f} [{comp['response_nll']['ci_low']:+.4f}, {comp['response_nll']['ci_high']:+.4f}]"
                         if "response_nll" in comp else "n/a")
        diffs.append([name, *cells])
    nll_head = ["response NLL"] if with_nll else []
    return "\n".join([
        markdown_table(["model", *(f"{t} ({first['tasks'][t]['metric']})" for t in tasks), *macro, *(f"{h} ↓" for h in nll_head)], rows),
        "", f"Differences to `{baseline}` (paired bootstrap over items, 95% CI):", "",
        markdown_table(["model", *tasks, *macro, *nll_head], diffs),
        "", "Accuracy differences in points (×100); response NLL in nats per token (negative is better).",
    ])


def _setup_text(c: CompareConfig, metrics: dict, eval_values: dict) -> str:
    def described(name: str, m: dict) -> str:
        out = f"`{name}`: {m.get('selected_size', m.get('budget'))} examples"
        tokens = m.get("mean_response_tokens")  # {"selected", "pool"} from the select job's selection_stats
        if isinstance(tokens, dict) and isinstance(tokens.get("selected"), (int, float)):
            out += f", mean response tokens {tokens['selected']:.0f}"
            if isinstance(tokens.get("pool"), (int, float)):
                out += f" (pool {tokens['pool']:.0f})"
        return out

    sel = "; ".join(described(n, m) for n, m in metrics["selections"].items())
    lora = c.sft.get("peft_config")
    times = ", ".join(f"{k} {v:.0f}s" for k, v in metrics["stage_seconds"].items())
    return (f"Pool `{c.pool}`: {metrics['pool_rows_selectable']} selectable rows, {c.heldout_size} held out (seed {c.seed}) for the "
            f"response NLL. Selections: {sel}. Fine-tune: TRL SFTTrainer, {'LoRA ' + json.dumps(lora) if lora else 'full fine-tune'}, "
            f"same steps and seed for every selection; loss on response tokens only. Evaluation: lm-evaluation-harness, tasks "
            f"{metrics['tasks']} (limit {eval_values.get('limit')}). Stage times: {times}; total {metrics['elapsed_seconds']:.0f}s.\n\n"
            "```json\n" + json.dumps({"selections": c.selections, "selection_defaults": c.selection_defaults, "sft": c.sft,
                                      "evaluate": {k: v for k, v in eval_values.items() if k != "eval_data_dir"}}, indent=2) + "\n```")
