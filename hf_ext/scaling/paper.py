"""The over-training paper's released runs (Gadre et al. 2024, github.com/mlfoundations/scaling)
and its reproduction: fit L(N, M) and Err(L) per training distribution on the paper's fit
points, predict the held-out 1.4B (over-trained) and 6.9B (M = 20) runs.

Reads either the staged files (``mlfoundations_scaling_models.jsonl.gz`` and
``mlfoundations_scaling_evals.jsonl.gz``, one original JSON per line under ``content``) or
the repository's layout (``exp_data/models/*.json`` and ``exp_data/evals/*.json``).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .laws import DownstreamErrorLaw, OvertrainingLaw
from .runs import FitRule, Runs, size_label

# The 46 downstream tasks of the paper and its 17-task subset ("avg" and "avg_subset" in the
# paper's code: tasks whose 0.411B models beat chance by 10 points).
TASKS_46 = (
    "agi_eval_lsat_ar", "agi_eval_lsat_rc", "agi_eval_lsat_lr", "agi_eval_sat_en", "arc_easy", "arc_challenge", "bbq",
    "bigbench_conceptual_combinations", "bigbench_conlang_translation", "bigbench_cs_algorithms", "bigbench_dyck_languages",
    "bigbench_elementary_math_qa", "bigbench_misconceptions", "bigbench_language_identification", "bigbench_logical_deduction",
    "bigbench_novel_concepts", "bigbench_operators", "bigbench_repeat_copy_logic", "bigbench_qa_wikidata",
    "bigbench_strange_stories", "bigbench_strategy_qa", "bigbench_understanding_fables", "boolq", "commonsense_qa", "copa",
    "coqa", "enterprise_pii_classification", "hellaswag", "hellaswag_zeroshot", "jeopardy", "lambada_openai", "logi_qa",
    "math_qa", "mmlu", "mmlu_zeroshot", "openbook_qa", "piqa", "pubmed_qa_labeled", "simple_arithmetic_nospaces",
    "simple_arithmetic_withspaces", "siqa", "squad", "winogender_mc_female", "winogender_mc_male", "winograd", "winogrande",
)
TASKS_17 = (
    "bigbench_operators", "pubmed_qa_labeled", "hellaswag_zeroshot", "boolq", "arc_easy", "coqa", "bigbench_dyck_languages",
    "lambada_openai", "bigbench_novel_concepts", "winograd", "bigbench_cs_algorithms", "commonsense_qa",
    "bigbench_qa_wikidata", "hellaswag", "copa", "squad", "piqa",
)

# The paper's fit points (Table 2 defaults): four sizes at M = 20 and the smallest at M = 320;
# the error law adds the 1.4B model at M = 20.
PAPER_LOSS_RULE = FitRule.parse(["11M@20", "79M@20", "154M@20", "411M@20", "11M@320"])
PAPER_ERROR_RULE = PAPER_LOSS_RULE + FitRule.parse(["1.4B@20"])
HELD_OUT_SIZES = ("1.4B", "6.9B")
DATASETS = ("c4_original", "rpj", "rw_original")

_MODELS_FILE = "mlfoundations_scaling_models.jsonl.gz"
_EVALS_FILE = "mlfoundations_scaling_evals.jsonl.gz"


def _iter_json(data_dir: Path, packed: str, folder: str) -> Iterable[tuple[str, dict]]:
    """(file name, JSON content) from the staged .jsonl.gz or the repository's folder."""
    if (data_dir / packed).is_file():
        with gzip.open(data_dir / packed, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    yield row["source_file"].rsplit("/", 1)[-1], row["content"]
        return
    for base in (data_dir / "exp_data" / folder, data_dir / folder):
        if base.is_dir():
            for path in sorted(base.glob("*.json")):
                yield path.name, json.loads(path.read_text(encoding="utf-8"))
            return
    raise InputError(
        f"{str(data_dir)!r} has neither {packed} nor exp_data/{folder}/*.json. Point --data at the staged "
        "scaling folder or a clone of github.com/mlfoundations/scaling."
    )


def load_paper_runs(data_dir: str | os.PathLike, *, val: str = "c4_val", with_errors: bool = True) -> Runs:
    """The paper's 104 runs with ``loss`` on the `val` split (default C4 eval, as the paper).

    Columns: name, dataset, model, size, N (params incl. embeddings, as the paper), D, M,
    loss, loss_<split> for every split, and (with `with_errors`) err46 and err17, the mean
    top-1 error (1 − accuracy) over the 46 tasks and the 17-task subset.

    Args:
        data_dir (`str` or `os.PathLike`):
            Folder with the staged `mlfoundations_scaling_{models,evals}.jsonl.gz`, or a clone of
            github.com/mlfoundations/scaling (`exp_data/models/`, `exp_data/evals/`).
        val (`str`, *optional*, defaults to `"c4_val"`):
            Validation split whose loss becomes the `loss` column; every run must have it.
        with_errors (`bool`, *optional*, defaults to `True`):
            Also read the downstream evaluations and add the `err46` and `err17` columns.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"--data {str(data_dir)!r} is not a folder.")
    evals = dict(_iter_json(data_dir, _EVALS_FILE, "evals")) if with_errors else {}
    records = []
    for file_name, content in _iter_json(data_dir, _MODELS_FILE, "models"):
        hp = content["hyperparameters"]
        rec: dict[str, Any] = {
            "name": content["name"],
            "dataset": content["dataset_name"],
            "model": hp["model"].rsplit("/", 1)[-1].removesuffix(".json"),
            "N": float(hp["params"]),
            "D": float(hp["tokens"]),
            "M": 20.0 * float(hp["chinchilla_multiplier"]),
        }
        rec["size"] = size_label(rec["N"])
        for result in content.get("results", []):
            split = result["val_data"][0].split("/")[-2]
            if "de-en" in split:
                split = result["val_data"][0].split("/")[-1].split(".")[0]
            rec[f"loss_{split}"] = float(result["loss"])
        if f"loss_{val}" not in rec:
            raise InputError(f"Run {rec['name']} has no loss on split {val!r}; splits: {[k[5:] for k in rec if k.startswith('loss_')]}.")
        rec["loss"] = rec[f"loss_{val}"]
        if with_errors:
            eval_name = f"evaluation_{Path(file_name).stem}_heavy.json"
            if eval_name not in evals:
                raise InputError(f"No downstream evaluation {eval_name} for run {rec['name']}.")
            acc = evals[eval_name]["eval_metrics"]["icl"]
            missing = [t for t in TASKS_46 if t not in acc]
            if missing:
                raise InputError(f"Evaluation {eval_name} lacks tasks {missing}.")
            rec["err46"] = float(np.mean([1.0 - acc[t] for t in TASKS_46]))
            rec["err17"] = float(np.mean([1.0 - acc[t] for t in TASKS_17]))
        records.append(rec)
    records.sort(key=lambda r: (r["dataset"], r["N"] * r["D"]))
    return Runs(records, source=str(data_dir))


def rel_err(pred: float, actual: float) -> float:
    """|pred − actual| / actual (the paper's relative error), as a fraction.

    Args:
        pred (`float`):
            Predicted value.
        actual (`float`):
            Observed value (the denominator).
    """
    return float(abs(pred - actual) / actual)


def reproduce_distribution(runs: Runs) -> dict[str, Any]:
    """Fit and predict for one training distribution's runs (as the paper's Table 2 / Fig. 1).

    Args:
        runs (`Runs`):
            The runs of one training distribution, as `load_paper_runs` gives them (with `err17` and `err46`);
            they must include the paper's fit points and exactly one held-out 1.4B (over-trained) and 6.9B run.
    """
    loss_law = OvertrainingLaw().fit(PAPER_LOSS_RULE.select(runs))
    error_points = PAPER_ERROR_RULE.select(runs)
    laws = {key: DownstreamErrorLaw(target=key).fit(error_points) for key in ("err17", "err46")}
    held = {}
    for size in HELD_OUT_SIZES:
        candidates = [r for r in runs if r["size"] == size and not (size == "1.4B" and r["M"] == 20)]
        if len(candidates) != 1:
            raise InputError(f"Expected one held-out {size} run (the 1.4B one over-trained, the 6.9B one at M = 20), got {len(candidates)}.")
        held[size] = candidates[0]
    out: dict[str, Any] = {
        "loss_params": loss_law.params,
        "loss_rel_err": {},
        "loss_pred": {},
        "held_out": {s: {"name": r["name"], "N": r["N"], "M": r["M"], "loss": r["loss"], "err17": r["err17"], "err46": r["err46"]} for s, r in held.items()},
    }
    for key, law in laws.items():
        out[f"{key}_params"] = law.params
        out[f"{key}_rel_err"] = {}
    for size, r in held.items():
        # Error is predicted from the *predicted* loss, as in the paper: Err(L(N, M)).
        pred_loss = float(loss_law.predict(N=[r["N"]], M=[r["M"]])[0])
        out["loss_pred"][size] = pred_loss
        out["loss_rel_err"][size] = rel_err(pred_loss, r["loss"])
        for key, law in laws.items():
            out[f"{key}_rel_err"][size] = rel_err(float(law.predict(loss=[pred_loss])[0]), r[key])
    out["_laws"] = {"loss": loss_law, **laws}
    out["fit_points"] = {"loss": PAPER_LOSS_RULE.specs(), "error": PAPER_ERROR_RULE.specs()}
    return out


def reproduce_paper(data_dir: str | os.PathLike, *, datasets: Iterable[str] | None = None, bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
    """{distribution: {loss_params, loss_rel_err, err17_params, err17_rel_err, err46_params, err46_rel_err, ...}}.

    Relative errors are fractions (0.0071 = 0.71%). Each entry also holds the fitted law
    objects under ``"_laws"`` (dropped by `to_json`). With `bootstrap` > 0, each law gets
    percentile intervals from that many resamples of its fit points.

    Args:
        data_dir (`str` or `os.PathLike`):
            The paper's released runs (see `load_paper_runs`).
        datasets (`Iterable[str]` or `None`, *optional*, defaults to `None`):
            Training distributions to reproduce (e.g. `"c4_original"`); `None` means all in the data.
        bootstrap (`int`, *optional*, defaults to `0`):
            Bootstrap resamples per law for parameter intervals; 0 computes none.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the bootstrap resampling.
    """
    runs = load_paper_runs(data_dir)
    present = sorted({r["dataset"] for r in runs})
    chosen = list(datasets) if datasets else present
    unknown = [d for d in chosen if d not in present]
    if unknown:
        raise InputError(f"Unknown distribution(s) {unknown}; the data has {present}.")
    results = {}
    for name in chosen:
        res = reproduce_distribution(runs.where(dataset=name))
        if bootstrap:
            for key, law in res["_laws"].items():
                res.setdefault("intervals", {})[key] = law.bootstrap(bootstrap, seed=seed)
        res["_runs"] = runs.where(dataset=name)
        results[name] = res
    return results


def to_json(results: dict[str, Any]) -> dict[str, Any]:
    """Drop the in-memory objects (keys starting with '_') for writing.

    Args:
        results (`dict[str, Any]`):
            The output of `reproduce_paper`.
    """
    return {name: {k: v for k, v in res.items() if not k.startswith("_")} for name, res in results.items()}


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the reproduction, one row per distribution.

    Args:
        results (`dict[str, Any]`):
            The output of `reproduce_paper` (or `to_json` of it).
    """
    head = (
        f"{'distribution':<13} {'alpha':>8} {'beta_p':>8} {'beta':>8} {'E':>7} | {'L 1.4B':>7} {'L 6.9B':>7} | "
        f"{'eps':>6} {'k':>6} {'gamma':>6} | {'e17 1.4B':>8} {'e17 6.9B':>8} | {'e46 1.4B':>8} {'e46 6.9B':>8}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        p, q = r["loss_params"], r["err17_params"]
        pct = lambda d, s: f"{100 * d[s]:.2f}%"  # noqa: E731
        lines.append(
            f"{name:<13} {p['alpha']:>8.1f} {p['beta_prime']:>8.1f} {p['beta']:>8.4f} {p['E']:>7.4f} | "
            f"{pct(r['loss_rel_err'], '1.4B'):>7} {pct(r['loss_rel_err'], '6.9B'):>7} | "
            f"{q['epsilon']:>6.3f} {q['k']:>6.3f} {q['gamma']:>6.3f} | "
            f"{pct(r['err17_rel_err'], '1.4B'):>8} {pct(r['err17_rel_err'], '6.9B'):>8} | "
            f"{pct(r['err46_rel_err'], '1.4B'):>8} {pct(r['err46_rel_err'], '6.9B'):>8}"
        )
    return "\n".join(lines)


def save_reproduction(results: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """One fit folder per distribution (laws, runs, plots, card) under `out_dir`.

    Args:
        results (`dict[str, Any]`):
            The output of `reproduce_paper` (with its in-memory `_laws` and `_runs`, so not `to_json` of it).
        out_dir (`str` or `os.PathLike`):
            Parent folder; each distribution's fit folder is `out_dir/<distribution>`.
    """
    from .card import write_fit_folder
    from .plots import plot_error_vs_loss, plot_loss_vs_compute, plot_predicted_vs_actual

    out_dir = Path(out_dir)
    folders = {}
    for name, res in results.items():
        folder = out_dir / name
        runs, laws = res["_runs"], res["_laws"]
        fit_loss, fit_err = PAPER_LOSS_RULE.select(runs), PAPER_ERROR_RULE.select(runs)
        plots = [
            (plot_loss_vs_compute(laws["loss"], runs, folder / "loss_vs_compute.png", fit_runs=fit_loss,
                                  title=f"{name}: C4-eval loss vs compute"), "Loss vs compute with the fitted L(N, M) per M"),
            (plot_predicted_vs_actual([res["loss_pred"][s] for s in HELD_OUT_SIZES], [res["held_out"][s]["loss"] for s in HELD_OUT_SIZES],
                                      folder / "predicted_vs_actual.png", labels=list(HELD_OUT_SIZES)), "Predicted vs actual loss of the held-out runs"),
            (plot_error_vs_loss(laws["err17"], runs, folder / "error_vs_loss.png", fit_runs=fit_err,
                                title=f"{name}: 17-task error vs loss"), "17-task top-1 error vs loss with the fitted Err(L)"),
        ]
        predictions = []
        for size in HELD_OUT_SIZES:
            h = res["held_out"][size]
            predictions.append({"run": h["name"], "N": h["N"], "M": h["M"], "quantity": "loss", "predicted": res["loss_pred"][size],
                                "actual": h["loss"], "rel_err": res["loss_rel_err"][size]})
            for key in ("err17", "err46"):
                pred = float(laws[key].predict(loss=[res["loss_pred"][size]])[0])
                predictions.append({"run": h["name"], "N": h["N"], "M": h["M"], "quantity": key, "predicted": pred,
                                    "actual": h[key], "rel_err": res[f"{key}_rel_err"][size]})
        folders[name] = write_fit_folder(
            folder, laws, runs, title=f"Over-training scaling laws: {name}",
            summary=(f"A reproduction of Gadre et al. 2024 ([arXiv 2403.08540](https://arxiv.org/abs/2403.08540)) from the "
                     f"paper's released runs trained on `{name}`: loss is C4-eval loss, error is mean top-1 error over 17 and 46 tasks."),
            predictions=predictions, plots=plots,
            fit_points={"loss": res["fit_points"]["loss"], "err17": res["fit_points"]["error"], "err46": res["fit_points"]["error"]},
            data_description=f"{len(runs)} runs of the paper (github.com/mlfoundations/scaling, MIT licence) trained on {name}.",
            license="mit",
        )
    return folders
