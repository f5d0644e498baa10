"""The ``hf-ext`` command.

    hf-ext run RECIPE.yaml [--field value ...]   run a recipe; flags override its fields
    hf-ext JOB [RECIPE.yaml] [--field value ...] one job (select, curate, merge, ...) from flags
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

from .config import JOBS, import_path, load_recipe, parse_config, recipe_job
from .errors import HfExtError, RecipeError, redact


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


def _run_job(job: str, values: dict, overrides: list[str]) -> int:
    if job not in JOBS:
        raise RecipeError(f"Unknown job {job!r} in the recipe. Valid jobs: {', '.join(sorted(JOBS))}.")
    config_cls, runner = import_path(JOBS[job].config), import_path(JOBS[job].runner)
    config = parse_config(config_cls, values, overrides)
    result = runner(config)
    if isinstance(result, dict):
        print(redact(json.dumps(_summary(result), indent=2, default=str)))
    return 0


def _summary(metrics: dict) -> dict:
    # The full metrics go to metrics.json; the terminal gets the headline numbers.
    keep = ("method", "budget", "pool_size", "selected_size", "mean_response_tokens", "category_counts", "hub_commit", "elapsed_seconds")
    return {k: metrics[k] for k in keep if k in metrics} or metrics


def _job_parser(job: str, prog: str, recipe_help: str) -> argparse.ArgumentParser:
    config_cls = import_path(JOBS[job].config)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{JOBS[job].help} Flags override the recipe's fields.".strip(),
        epilog=f"Fields of {config_cls.__name__} (job: {job}); each is also a --flag:\n{_fields_help(config_cls)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", nargs="?", default=None, help=recipe_help)
    return parser


def cmd_run(argv: list[str]) -> int:
    """``hf-ext run RECIPE [--field value ...]``; ``hf-ext run RECIPE --help`` lists that job's fields.

    Args:
        argv (`list[str]`):
            The arguments after ``run``: the recipe's path first, then ``--field value`` overrides of its fields
            (or ``--help``). Without a recipe it prints the usage.

    Returns:
        `int`: the exit status, 0 on success.
    """
    wants_help = any(a in ("-h", "--help") for a in argv)
    if not argv or argv[0].startswith("-"):
        print("usage: hf-ext run RECIPE.yaml [--field value ...]\n\n"
              "Run a recipe: a YAML mapping of one job's config fields plus `job` (default: select).\n"
              "Flags after the recipe override its fields. `hf-ext run RECIPE --help` lists the fields of\n"
              f"the recipe's job; jobs: {', '.join(JOBS)}.")  # fmt: skip
        return 0
    values = load_recipe(argv[0])
    job = recipe_job(values, source=f"recipe {argv[0]!r}")
    if wants_help:
        _job_parser(job, "hf-ext run", "Path of the YAML recipe.").print_help()
        return 0
    return _run_job(job, values, argv[1:])


def _job_command(job: str) -> Callable[[list[str]], int]:
    def command(argv: list[str]) -> int:
        parser = _job_parser(job, f"hf-ext {job}", f"Optional YAML recipe for job {job!r}; flags override its fields.")
        parser.add_argument("--recipe", dest="recipe_flag", default=None, help="The recipe, given as a flag.")
        if any(a in ("-h", "--help") for a in argv):
            parser.print_help()
            return 0
        recipe = None
        if argv and not argv[0].startswith("-"):
            recipe, argv = argv[0], argv[1:]
        if "--recipe" in argv:
            i = argv.index("--recipe")
            if i + 1 >= len(argv):
                raise RecipeError("--recipe needs a path, e.g. --recipe recipes/quickstart.yaml.")
            recipe, argv = argv[i + 1], argv[:i] + argv[i + 2:]
        values = load_recipe(recipe) if recipe else {}
        named = recipe_job(values, job, source=f"recipe {recipe!r}")
        if named != job:
            raise RecipeError(f"Recipe {recipe!r} is for job {named!r}, not {job!r}; run it with `hf-ext run`.")
        return _run_job(job, values, argv)

    return command


def cmd_push(argv: list[str]) -> int:
    """``hf-ext push FOLDER --repo_id ID [--repo_type dataset|model] [--private] ...``: upload a folder in one commit.

    Args:
        argv (`list[str]`):
            The arguments after ``push``: the folder, ``--repo_id``, and optionally ``--repo_type``,
            ``--hub_endpoint``, ``--private`` and ``--commit_message`` (see :func:`hf_ext.hub.push_folder`).

    Returns:
        `int`: the exit status, 0 on success (the commit URL is printed).
    """
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
    print(redact(url))
    return 0


def cmd_pull(argv: list[str]) -> int:
    """``hf-ext pull ID [--repo_type ...] [--revision REV] [--local_dir DIR]``: download a repo snapshot.

    Args:
        argv (`list[str]`):
            The arguments after ``pull``: the repo id, and optionally ``--repo_type``, ``--revision``,
            ``--local_dir`` and ``--hub_endpoint`` (see :func:`hf_ext.hub.pull`).

    Returns:
        `int`: the exit status, 0 on success (the folder holding the files is printed).
    """
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


# Commands that are not jobs: (function or "module:function", one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int] | str, str]] = {
    "run": (cmd_run, "Run a YAML recipe of any job (flags override its fields)."),
    "push": (cmd_push, "Upload a folder to the Hub in one commit."),
    "pull": (cmd_pull, "Download a repo from the Hub (or a local Hub endpoint)."),
    "scaling": ("hf_ext.scaling.cli:main", "Scaling laws: reproduce arXiv 2403.08540, fit L(N, M) / Err(L) to runs, plan compute."),
}


def _command(name: str) -> Callable[[list[str]], int] | None:
    if name in COMMANDS:
        command = COMMANDS[name][0]
        return import_path(command) if isinstance(command, str) else command
    if name in JOBS:
        return _job_command(name)
    return None


def _top_help() -> str:
    lines = ["usage: hf-ext COMMAND [options]", "", "Commands:"]
    lines += [f"  {name:<13} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Jobs (`hf-ext JOB [RECIPE] [--field value ...]`, or a recipe with `job: JOB`):"]
    lines += [f"  {name:<13} {job.help}" for name, job in JOBS.items()]
    lines += ["", "`hf-ext COMMAND --help` shows a command's options and a job's fields;",
              "`hf-ext run RECIPE --help` the fields of the recipe's job."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The ``hf-ext`` entry point: dispatch to a command (``run``, ``push``, ``pull``, ``scaling``) or a job.

    Args:
        argv (`list[str]`, *optional*):
            The command line without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        `int`: the exit status: 0 on success, 2 for an unknown command or an hf_ext error (printed, with
        credentials redacted, to stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"hf-ext {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    try:
        command = _command(name)
        if command is None:
            print(f"hf-ext: unknown command {name!r}. Commands: {', '.join([*COMMANDS, *JOBS])}.", file=sys.stderr)
            return 2
        return command(rest)
    except HfExtError as exc:
        print(f"hf-ext {name}: error: {redact(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
