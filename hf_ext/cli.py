"""The ``hf-ext`` command.

    hf-ext run RECIPE.yaml [--field value ...]   run a recipe; flags override its fields
    hf-ext select [--recipe R] [--field value]   the selection job as a single step
    hf-ext push FOLDER --repo_id ID              upload a folder to the Hub in one commit
    hf-ext pull ID [--local_dir DIR]             download a Hub repo (honours HF_ENDPOINT/offline)

Recipes are YAML files whose keys are the fields of a job's config dataclass, plus ``job``
(default ``select``). This module is the one place in hf_ext that may reach the
``trainers`` package, and only lazily, by the import path a job registers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from collections.abc import Callable

from .config import JOBS, import_path, load_recipe, parse_config
from .errors import HfExtError, RecipeError


def _fields_help(config_cls: type, indent: str = "  ") -> str:
    lines = []
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required"
        )
        help_text = f.metadata.get("help", "")
        lines.append(f"{indent}{f.name} (default: {default!r})")
        lines.extend(textwrap.wrap(help_text, width=88, initial_indent=indent * 3, subsequent_indent=indent * 3))
    return "\n".join(lines)


def _jobs_help() -> str:
    parts = []
    for job, (config_path, _) in JOBS.items():
        try:
            config_cls = import_path(config_path)
        except ImportError as exc:  # an optional extra is missing: still list the job
            parts.append(f"job: {job}  (unavailable: {exc})")
            continue
        parts.append(f"job: {job}  ({config_cls.__name__})\n{_fields_help(config_cls)}")
    return "Recipe fields, by job (every field is also a --flag):\n\n" + "\n\n".join(parts)


def _run_job(job: str, values: dict, overrides: list[str]) -> int:
    if job not in JOBS:
        raise RecipeError(f"Unknown job {job!r} in the recipe. Valid jobs: {', '.join(sorted(JOBS))}.")
    config_path, runner_path = JOBS[job]
    config_cls, runner = import_path(config_path), import_path(runner_path)
    config = parse_config(config_cls, values, overrides)
    result = runner(config)
    if isinstance(result, dict):
        print(json.dumps(_summary(result), indent=2, default=str))
    return 0


def _summary(metrics: dict) -> dict:
    # The full metrics go to metrics.json; the terminal gets the headline numbers.
    keep = ("method", "budget", "pool_size", "selected_size", "mean_response_tokens", "category_counts", "hub_commit", "elapsed_seconds")
    return {k: metrics[k] for k in keep if k in metrics} or metrics


def cmd_run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-ext run",
        description="Run a recipe. Flags after the recipe override its fields (--budget 100).",
        epilog=_jobs_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="Path of a YAML recipe, e.g. recipes/quickstart.yaml.")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args, overrides = parser.parse_known_args(argv)
    values = load_recipe(args.recipe)
    job = values.pop("job", "select")
    return _run_job(job, values, overrides)


def _job_command(job: str) -> Callable[[list[str]], int]:
    def command(argv: list[str]) -> int:
        config_cls = import_path(JOBS[job][0])
        parser = argparse.ArgumentParser(
            prog=f"hf-ext {job}",
            description=f"Run the {job} job from flags (and optionally a recipe).",
            epilog=f"Fields of {config_cls.__name__}:\n{_fields_help(config_cls)}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--recipe", default=None, help="Optional YAML recipe; flags override its fields.")
        if argv and argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0
        args, overrides = parser.parse_known_args(argv)
        values = load_recipe(args.recipe) if args.recipe else {}
        recipe_job = values.pop("job", job)
        if recipe_job != job:
            raise RecipeError(f"Recipe {args.recipe!r} is for job {recipe_job!r}, not {job!r}; run it with `hf-ext run`.")
        return _run_job(job, values, overrides)

    return command


def cmd_push(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hf-ext push", description="Upload a folder to a Hub repo in one commit.")
    parser.add_argument("folder", help="Folder to upload (e.g. outputs/quickstart).")
    parser.add_argument("--repo_id", required=True, help="Target repo id, e.g. username/my-selection.")
    parser.add_argument("--repo_type", default="dataset", choices=["dataset", "model"], help="Repo type.")
    parser.add_argument("--hub_endpoint", default=None, help="Hub endpoint URL (default: HF_ENDPOINT or huggingface.co).")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--commit_message", default=None, help="Commit message.")
    args = parser.parse_args(argv)
    from .hub import push_folder

    url = push_folder(
        args.folder, args.repo_id, repo_type=args.repo_type, endpoint=args.hub_endpoint,
        private=args.private, commit_message=args.commit_message,
    )
    print(url)
    return 0


def cmd_pull(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hf-ext pull", description="Download a Hub repo (honours HF_ENDPOINT and HF_HUB_OFFLINE).")
    parser.add_argument("repo_id", help="Repo id, e.g. username/my-selection.")
    parser.add_argument("--repo_type", default="dataset", choices=["dataset", "model"], help="Repo type.")
    parser.add_argument("--revision", default=None, help="Branch, tag or commit sha.")
    parser.add_argument("--local_dir", default=None, help="Folder to place the files in (default: the HF cache).")
    parser.add_argument("--hub_endpoint", default=None, help="Hub endpoint URL.")
    args = parser.parse_args(argv)
    from .hub import pull

    print(pull(args.repo_id, repo_type=args.repo_type, revision=args.revision, local_dir=args.local_dir, endpoint=args.hub_endpoint))
    return 0


# Subcommand -> (function or "module:function", one-line description). Later components add theirs.
COMMANDS: dict[str, tuple[Callable[[list[str]], int] | str, str]] = {
    "run": (cmd_run, "Run a YAML recipe (flags override its fields)."),
    "select": (_job_command("select"), "Select instruction data: score with datasets.map, pick a budget, write a card."),
    "push": (cmd_push, "Upload a folder to the Hub in one commit."),
    "pull": (cmd_pull, "Download a repo from the Hub (or a local Hub endpoint)."),
    "curate": ("hf_ext.curate.job:cmd_curate", "Curate pretraining text: DCLM/Llama 3 heuristics, dedup, quality classifier, drop counts, card."),
    "merge": ("hf_ext.merge.job:cmd_merge", "Merge models from a recipe: soup, task arithmetic, TIES, DARE (streamed, card with base_model list)."),
    "scaling": ("hf_ext.scaling.cli:main", "Scaling laws: reproduce arXiv 2403.08540, fit L(N, M)/Err(L)/Chinchilla to runs, plan compute."),
}


def _top_help() -> str:
    lines = ["usage: hf-ext COMMAND [options]", "", "Commands:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run `hf-ext COMMAND --help` for a command's options.", "", _jobs_help()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"hf-ext {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hf-ext: unknown command {name!r}. Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    command = COMMANDS[name][0]
    if isinstance(command, str):
        command = import_path(command)
    try:
        return command(rest)
    except HfExtError as exc:
        print(f"hf-ext {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
