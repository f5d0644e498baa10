"""DCLM's own heuristic steps on a JSONL file, as the reference hf_ext's ``dclm_heuristics``
pipeline is checked against (tests/data/web/c4_en_train_first150.dclm_reference.jsonl.gz).

Runs the steps of DCLM's ``baselines/baselines_configs/dclm_baseline_refinedweb.yaml`` from
``newline_removal_modifier`` through ``word_removal_ratio_filter`` with DCLM's code from a
clone of ``mlfoundations/dclm`` (MIT), loading each step the way DCLM's processor does
(``baselines.core.factories.get_mapper`` with ``_safe=True``) and applying it page by page.
Language ID and the URL rules are left out (the two language steps and everything before
``newline_removal_modifier``); ``--lid-model`` puts the language steps back, scoring with the
given fastText file (e.g. the packaged lid.176.ftz hf_ext uses offline). Modules that these steps never call (language ID, KenLM, HTML,
S3 I/O) are replaced by stubs when they are not installed; a stub raises if it is ever used.
DCLM's code is imported from the clone, never copied into hf_ext.

    git --git-dir=<dclm.git> archive HEAD baselines | tar -x -C /tmp/dclm
    pip install uniseg==0.10.1 nltk   # the tokenizers the steps call (fasttext comes with hf-ext[curate])
    python benchmarks/dclm_reference.py --dclm-dir /tmp/dclm \\
        --input tests/data/web/c4_en_train_first150.jsonl.gz \\
        --out tests/data/web/c4_en_train_first150.dclm_reference.jsonl.gz
    # with DCLM's language-ID steps, scoring with the lid.176.ftz hf_ext ships:
    python benchmarks/dclm_reference.py --dclm-dir /tmp/dclm --decisions-only \\
        --lid-model "$(python -c 'from hf_ext.curate.langid import packaged_lid_model as p; print(p())')" \\
        --input tests/data/web/c4_en_train_first150.jsonl.gz \\
        --out tests/data/web/c4_en_train_first150.dclm_reference_lid.jsonl.gz

Output, one row per input document in input order: ``index``, ``kept``, ``dropped_by`` (the
DCLM function that removed it, None when kept), ``dropped_at`` (its position in the config),
``text`` (DCLM's output text when kept, None when dropped) and ``previous_word_count`` (what
``word_counter_enricher`` stored, when the document got that far).
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path

CONFIG = "baselines/baselines_configs/dclm_baseline_refinedweb.yaml"
FIRST_STEP, LAST_STEP = "newline_removal_modifier", "word_removal_ratio_filter"
LEFT_OUT = {"detect_lang_whole_page_enricher", "language_filter"}
# Imported at module level by DCLM's mapper modules but never called by the steps run here.
STUBBED = ("retrie", "retrie.retrie", "langdetect", "kenlm", "sentencepiece", "bs4", "boto3", "cloudpathlib",
           "zstandard", "jsonlines", "justext", "lxml", "lxml.etree", "unidecode")


class _Stub(types.ModuleType):
    """A module whose every attribute is a callable that raises: proof the step never used it."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def never(*_a, **_k):
            raise RuntimeError(f"stubbed module {self.__name__!r} was called ({name}); install it")

        never.__name__ = name
        return type(name, (Exception,), {"__init__": never}) if name[:1].isupper() else never


def install_stubs() -> list[str]:
    stubbed = []
    for name in STUBBED:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = _Stub(name)
            sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
            stubbed.append(name)
    return stubbed


def remove_stubs(stubbed: list[str]) -> None:
    """Once DCLM's modules hold their stub references, take the stubs out of sys.modules so
    later imports in the same process (e.g. accelerate probing for boto3) see them missing."""
    for name in stubbed:
        if isinstance(sys.modules.get(name), _Stub):
            del sys.modules[name]


@contextmanager
def working_dir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def load_steps(dclm_dir: Path, with_language_id: bool = False) -> list[dict]:
    import yaml

    with open(dclm_dir / CONFIG) as f:
        config = yaml.safe_load(f)
    steps = config[0]["steps"] if isinstance(config, list) else config["cc"]["steps"]
    names = [s["func"] for s in steps]
    chosen = steps[names.index(FIRST_STEP) : names.index(LAST_STEP) + 1]
    return [dict(s, _position=names.index(FIRST_STEP) + i) for i, s in enumerate(chosen)
            if with_language_id or s["func"] not in LEFT_OUT]


def dclm_mappers(dclm_dir: Path, lid_model: Path | None = None):
    """(position, func name, callable) for each step, built with DCLM's own get_mapper. With
    `lid_model`, DCLM's language-ID steps run too, loading that fastText file where DCLM loads
    its lid.176.bin."""
    dclm_dir = dclm_dir.resolve()
    if not (dclm_dir / CONFIG).is_file():
        raise SystemExit(f"--dclm-dir {dclm_dir} has no {CONFIG}: pass a clone of mlfoundations/dclm.")
    sys.path[:0] = [str(dclm_dir), str(dclm_dir / "baselines")]
    stubbed = install_stubs()
    with working_dir(dclm_dir):  # DCLM resolves its module list relative to the working directory
        factories = importlib.import_module("baselines.core.factories")
        if lid_model is not None:
            import fasttext

            lid = importlib.import_module("mappers.enrichers.language_id_enrichers")  # the name get_mapper imports
            lid.load_fasttext_model = lambda: fasttext.load_model(str(lid_model))
        steps = load_steps(dclm_dir, with_language_id=lid_model is not None)
        mappers = []
        for step in steps:
            kwargs = {k: v for k, v in step.items() if k != "_position"}
            mappers.append((step["_position"], step["func"], factories.get_mapper(**kwargs, _safe=True)))
    remove_stubs(stubbed)
    return mappers, stubbed


def run(mappers, text: str) -> dict:
    page = {"text": text}
    for position, func, mapper in mappers:
        result = mapper(page)
        if not isinstance(result, list):  # _safe: the error's repr; DCLM's processor drops the page
            return {"kept": False, "dropped_by": f"error:{func}", "dropped_at": position, "text": None,
                    "error": result, "previous_word_count": page.get("previous_word_count")}
        if not result:
            return {"kept": False, "dropped_by": func, "dropped_at": position, "text": None,
                    "previous_word_count": page.get("previous_word_count")}
        (page,) = result
    return {"kept": True, "dropped_by": None, "dropped_at": None, "text": page["text"],
            "previous_word_count": page.get("previous_word_count")}


def read_texts(path: Path, text_key: str) -> list[str]:
    """Texts of a JSONL(.gz) file; a Dolma-style ``record`` dict holding the text also works."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["record"] if text_key not in r and "record" in r else r)[text_key] for r in rows]


def reference(dclm_dir: Path, texts: list[str], lid_model: Path | None = None) -> list[dict]:
    mappers, _ = dclm_mappers(dclm_dir, lid_model)
    return [{"index": i, **run(mappers, t)} for i, t in enumerate(texts)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dclm-dir", type=Path, required=True, help="A clone (or `git archive`) of mlfoundations/dclm.")
    parser.add_argument("--input", type=Path, required=True, help="JSONL(.gz) with a text field.")
    parser.add_argument("--text-key", default="text")
    parser.add_argument("--out", type=Path, required=True, help="Output JSONL(.gz).")
    parser.add_argument("--lid-model", type=Path, default=None,
                        help="Also run DCLM's language-ID steps, with this fastText model in place of its lid.176.bin.")
    parser.add_argument("--decisions-only", action="store_true", help="Leave the output texts out (text: null).")
    args = parser.parse_args()
    texts = read_texts(args.input, args.text_key)
    mappers, stubbed = dclm_mappers(args.dclm_dir, args.lid_model)
    print(f"DCLM steps: {[f for _, f, _ in mappers]}; stubbed modules: {stubbed}", file=sys.stderr)
    rows = [{"index": i, **run(mappers, t)} for i, t in enumerate(texts)]
    if args.decisions_only:
        rows = [{**r, "text": None} for r in rows]
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(gzip.compress(data, mtime=0) if args.out.suffix == ".gz" else data)  # same bytes every run
    os.replace(tmp, args.out)
    kept = sum(r["kept"] for r in rows)
    print(f"{kept}/{len(rows)} kept -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
