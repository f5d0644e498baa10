"""``hf-ext scaling``: reproduce the over-training paper, fit a law to your runs, plan compute.

    hf-ext scaling reproduce --data DIR [--json FILE] [--out DIR] [--bootstrap N]
    hf-ext scaling fit --runs FILE [--law overtraining|chinchilla|error] [--rule 11M@20,...] [--out DIR]
    hf-ext scaling plan --fit FILE (--target_loss L | --target_error E | --flops C) [--multiplier M]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError


def _write_json(path: str | None, payload: dict) -> None:
    text = json.dumps(payload, indent=2, default=float)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")


def cmd_reproduce(argv: list[str]) -> int:
    """``hf-ext scaling reproduce``: refit Gadre et al. 2024's laws from its released runs, print the table and
    optionally write JSON and fit folders.

    Args:
        argv (`list[str]`):
            The subcommand's arguments (after `reproduce`): `--data DIR` and optional `--json`, `--out`,
            `--datasets`, `--bootstrap`, `--seed`.

    Returns:
        `int`: the exit status, 0.
    """
    from .paper import format_table, reproduce_paper, save_reproduction, to_json

    p = argparse.ArgumentParser(prog="hf-ext scaling reproduce", description="Reproduce Gadre et al. 2024 from its released runs.")
    p.add_argument("--data", required=True, help="Folder with mlfoundations_scaling_{models,evals}.jsonl.gz (or a clone of mlfoundations/scaling).")
    p.add_argument("--json", default=None, help="Write {distribution: {loss_params, loss_rel_err, err17_params, ...}} here.")
    p.add_argument("--out", default=None, help="Also write one fit folder per distribution (laws, runs, PNG plots, card) here.")
    p.add_argument("--datasets", default=None, help="Comma-separated distributions (default: all in the data).")
    p.add_argument("--bootstrap", type=int, default=0, help="Bootstrap resamples for parameter intervals (0: none).")
    p.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    a = p.parse_args(argv)
    results = reproduce_paper(a.data, datasets=a.datasets.split(",") if a.datasets else None, bootstrap=a.bootstrap, seed=a.seed)
    print(format_table(results))
    _write_json(a.json, to_json(results))
    if a.out:
        for name, folder in save_reproduction(results, a.out).items():
            print(f"{name}: {folder}")
    return 0


def _law(name: str, target: str, starts: str | None):
    from .laws import ChinchillaLaw, DownstreamErrorLaw, OvertrainingLaw

    if name == "overtraining":
        return OvertrainingLaw()
    if name == "error":
        return DownstreamErrorLaw(target=target)
    if name == "chinchilla":
        law = ChinchillaLaw()
        if starts == "coarse":
            law.starts = ChinchillaLaw.coarse_starts()
        return law
    raise InputError(f"--law must be overtraining, chinchilla or error, got {name!r}.")


def cmd_fit(argv: list[str]) -> int:
    """``hf-ext scaling fit``: fit a law to a table of runs, print it and optionally save it and a fit folder.

    Args:
        argv (`list[str]`):
            The subcommand's arguments (after `fit`): `--runs FILE` and optional `--law`, `--columns`, `--rule`,
            `--target`, `--starts`, `--drop_highest_loss`, `--bootstrap`, `--seed`, `--json`, `--out`.

    Returns:
        `int`: the exit status, 0.
    """
    from .card import write_fit_folder
    from .plots import plot_error_vs_loss, plot_loss_vs_compute
    from .runs import FitRule, load_runs

    p = argparse.ArgumentParser(prog="hf-ext scaling fit", description="Fit a scaling law to a table of runs.")
    p.add_argument("--runs", required=True, help="CSV / JSONL / JSON table with N (params) and D (tokens) or M, and loss.")
    p.add_argument("--law", default="overtraining", help="overtraining (L(N, M)), chinchilla (L(N, D)) or error (Err(L)).")
    p.add_argument("--columns", default=None, help="Renames, e.g. params=N,tokens=D,eval_loss=loss.")
    p.add_argument("--rule", default=None, help="Fit points as SIZE@M, comma-separated (e.g. 11M@20,79M@20,11M@320); default: all runs.")
    p.add_argument("--target", default="error", help="Error column for --law error.")
    p.add_argument("--starts", default=None, help="For chinchilla: 'coarse' for a 108-start grid instead of Hoffmann's 4,500.")
    p.add_argument("--drop_highest_loss", type=int, default=0, help="Drop the K highest-loss runs first (Besiroglu et al. drop 5).")
    p.add_argument("--bootstrap", type=int, default=0, help="Bootstrap resamples for parameter intervals.")
    p.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    p.add_argument("--json", default=None, help="Write the fitted law here.")
    p.add_argument("--out", default=None, help="Write a fit folder (law, runs, plots, card) here.")
    a = p.parse_args(argv)
    columns = dict(kv.split("=", 1) for kv in a.columns.split(",")) if a.columns else None
    runs = load_runs(a.runs, columns=columns)
    if a.drop_highest_loss:
        order = sorted(range(len(runs)), key=lambda i: runs.records[i]["loss"])
        runs = runs.select(sorted(order[: len(runs) - a.drop_highest_loss]))
    fit_runs = FitRule.parse(a.rule.split(",")).select(runs) if a.rule else runs
    law = _law(a.law, a.target, a.starts).fit(fit_runs)
    if a.bootstrap:
        law.bootstrap(a.bootstrap, seed=a.seed)
    print(json.dumps(law.to_dict(), indent=2, default=float))
    if a.json:
        law.save(a.json)
    if a.out:
        out = Path(a.out)
        plots = []
        if a.law == "error":
            plots.append((plot_error_vs_loss(law, runs, out / "error_vs_loss.png", fit_runs=fit_runs), "Error vs loss"))
        else:
            plots.append((plot_loss_vs_compute(law, runs, out / "loss_vs_compute.png", fit_runs=fit_runs), "Loss vs compute"))
        write_fit_folder(out, {law.name: law}, runs, plots=plots, fit_points={law.name: a.rule.split(",")} if a.rule else None,
                         data_description=f"{len(runs)} runs from `{Path(a.runs).name}`.")
        print(out)
    return 0


def cmd_plan(argv: list[str]) -> int:
    """``hf-ext scaling plan``: size a run (N, D, compute) from a fitted law and print the plan as JSON.

    Args:
        argv (`list[str]`):
            The subcommand's arguments (after `plan`): `--fit` and exactly one of `--target_loss`, `--target_error`,
            `--flops`; optional `--error_law`, `--multiplier`.

    Returns:
        `int`: the exit status, 0.
    """
    from .card import load_fit
    from .laws import ChinchillaLaw, DownstreamErrorLaw
    from .planning import compute_optimal, plan_for_error, plan_for_loss

    p = argparse.ArgumentParser(prog="hf-ext scaling plan", description="Size a run from a fitted law.")
    p.add_argument("--fit", required=True, help="A fit folder, scaling_fit.json, saved law JSON, or Hub dataset id.")
    p.add_argument("--target_loss", type=float, default=None, help="Loss to reach.")
    p.add_argument("--target_error", type=float, default=None, help="Downstream error to reach (needs an error law in the fit).")
    p.add_argument("--error_law", default=None, help="Name of the error law in the fit (default: the only/first one).")
    p.add_argument("--multiplier", type=float, default=20.0, help="Tokens per parameter M.")
    p.add_argument("--flops", type=float, default=None, help="Compute budget: Chinchilla compute-optimal N*, D*.")
    a = p.parse_args(argv)
    laws = load_fit(a.fit)
    loss_laws = {k: v for k, v in laws.items() if not isinstance(v, DownstreamErrorLaw)}
    error_laws = {k: v for k, v in laws.items() if isinstance(v, DownstreamErrorLaw)}
    if sum(x is not None for x in (a.target_loss, a.target_error, a.flops)) != 1:
        raise InputError("Pass exactly one of --target_loss, --target_error, --flops.")
    if not loss_laws:
        raise InputError(f"The fit {a.fit!r} has no loss law (laws: {list(laws)}).")
    loss_law = next(iter(loss_laws.values()))
    if a.flops is not None:
        if not isinstance(loss_law, ChinchillaLaw):
            raise InputError("--flops needs a fitted Chinchilla law (hf-ext scaling fit --law chinchilla).")
        plan = compute_optimal(loss_law, a.flops)
    elif a.target_loss is not None:
        plan = plan_for_loss(loss_law, a.target_loss, multiplier=a.multiplier)
    else:
        if not error_laws:
            raise InputError(f"--target_error needs an error law in the fit; it has {list(laws)}.")
        if a.error_law and a.error_law not in error_laws:
            raise InputError(f"No error law {a.error_law!r}; the fit has {list(error_laws)}.")
        err_law = error_laws[a.error_law] if a.error_law else next(iter(error_laws.values()))
        plan = plan_for_error(loss_law, err_law, a.target_error, multiplier=a.multiplier)
    print(json.dumps(plan.as_dict(), indent=2))
    return 0


SUBCOMMANDS = {"reproduce": cmd_reproduce, "fit": cmd_fit, "plan": cmd_plan}


def main(argv: list[str]) -> int:
    """Dispatch ``hf-ext scaling SUBCOMMAND ...`` to `cmd_reproduce`, `cmd_fit` or `cmd_plan`.

    Args:
        argv (`list[str]`):
            The arguments after `hf-ext scaling`; the first names the subcommand. Empty, `-h` or `--help` prints
            the usage.

    Returns:
        `int`: the subcommand's exit status; 0 after printing the usage, 2 for an unknown subcommand.
    """
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"hf-ext scaling: unknown subcommand {argv[0]!r}; use one of {', '.join(SUBCOMMANDS)}.", file=sys.stderr)
        return 2
    return SUBCOMMANDS[argv[0]](argv[1:])
