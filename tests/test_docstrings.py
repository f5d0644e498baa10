"""Public API documentation in TRL's format, and config ``help`` texts that say the same.

Every config dataclass whose docstring has an ``Args:`` block documents each of its own fields (and those
of private mixins it inherits) as ``name (`type`, *optional*, defaults to `X`):`` with the field's ``help``
text word for word: ``hf-ext JOB --help`` and the API docs cannot drift apart. Every public class and function
that takes parameters documents each of them in an ``Args:`` block.

``python tests/test_docstrings.py`` prints how many public classes and functions of hf_ext/ and trainers/
have an ``Args:`` block (and how many of those use TRL's entry format).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_ENTRY = re.compile(r"^(?P<name>\*{0,2}\w+) \((?P<spec>.+)\):$")
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Yields|Raises|Example|Examples|Note|Notes|Attributes):\s*$")


def args_block(doc: str) -> dict[str, str] | None:
    """``{name: text}`` of the ``Args:`` block of a (cleaned) docstring, None when it has none. An entry is a
    line ``name (`type`, ...):`` at the block's indent; its text is the more-indented lines under it."""
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    if start is None:
        return None
    base = len(lines[start]) - len(lines[start].lstrip())
    entries: dict[str, list[str]] = {}
    indent, current = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= base:
            break
        if indent is None:
            indent = depth
        if depth == indent:
            match = _ENTRY.match(line.strip())
            current = match.group("name") if match else None
            if current:
                entries[current] = []
        elif current and depth > indent:
            entries[current].append(line.strip())
    return {name: " ".join(text) for name, text in entries.items()}


def public_objects(root: Path = ROOT):
    """(module path, node) of every top-level public class and function in hf_ext/ and trainers/."""
    for path in sorted([*(root / "hf_ext").rglob("*.py"), *(root / "trainers").rglob("*.py")]):
        if any(part.startswith("_") and part != "__init__.py" for part in path.relative_to(root).parts):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                yield path, node


def coverage(root: Path = ROOT) -> dict[str, int]:
    counts = {"public": 0, "with_args": 0, "trl_format": 0}
    for _, node in public_objects(root):
        counts["public"] += 1
        doc = ast.get_docstring(node) or ""
        block = args_block(doc)
        if block is not None:
            counts["with_args"] += 1
            lines = doc.splitlines()
            start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
            if block and all("`" in _spec(lines[start:], name) for name in block):
                counts["trl_format"] += 1
    return counts


def _is_dataclass(node: ast.ClassDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if (isinstance(target, ast.Name) and target.id == "dataclass") or (isinstance(target, ast.Attribute) and target.attr == "dataclass"):
            return True
    return False


def _init_false(value: ast.expr | None) -> bool:
    return (isinstance(value, ast.Call) and any(kw.arg == "init" and isinstance(kw.value, ast.Constant) and kw.value.value is False
                                                for kw in value.keywords))


def parameters(node: ast.FunctionDef | ast.ClassDef) -> list[str]:
    """The names a caller passes: a function's parameters (not ``self``/``cls``, not ``*args``/``**kwargs``), a
    class's own ``__init__`` parameters, or a dataclass's own init fields."""
    if isinstance(node, ast.ClassDef):
        if _is_dataclass(node):
            return [stmt.target.id for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and "ClassVar" not in ast.unparse(stmt.annotation) and not _init_false(stmt.value)]
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:
            return []
        node = init
    args = node.args
    return [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs] if a.arg not in ("self", "cls")]


def undocumented(root: Path = ROOT, under: str = "") -> list[str]:
    """``path:line name: missing`` for every public class or function (under the folder ``under``) that takes
    parameters but has no ``Args:`` block, or whose block leaves some of them out."""
    out = []
    for path, node in public_objects(root):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(under):
            continue
        names = parameters(node)
        if not names:
            continue
        block = args_block(ast.get_docstring(node) or "")
        documented = {name.lstrip("*") for name in (block or {})}
        missing = [n for n in names if n not in documented]
        if block is None or missing:
            out.append(f"{rel}:{node.lineno} {node.name}: " + ("no Args block" if block is None else f"Args lacks {missing}"))
    return out


def _spec(lines: list[str], name: str) -> str:
    for line in lines:
        match = _ENTRY.match(line.strip())
        if match and match.group("name") == name:
            return match.group("spec")
    return ""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dynamic_helps(node: ast.ClassDef) -> set[str]:
    """Fields whose help is computed (an f-string over a registry): their text is checked for presence only."""
    out = set()
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(stmt.value, ast.Call):
            for kw in stmt.value.keywords:
                if kw.arg == "metadata" and isinstance(kw.value, ast.Dict):
                    for k, v in zip(kw.value.keys, kw.value.values):
                        if isinstance(k, ast.Constant) and k.value == "help" and not isinstance(v, ast.Constant):
                            out.add(stmt.target.id)
    return out


def documented_configs():
    """(class, own field names, dynamic-help fields) of every dataclass whose docstring has an Args block and
    whose fields carry ``help``."""
    for path, node in public_objects():
        if not isinstance(node, ast.ClassDef) or "Args:" not in (ast.get_docstring(node) or ""):
            continue
        cls = getattr(importlib.import_module(_module_name(path)), node.name, None)
        if cls is None or not dataclasses.is_dataclass(cls):
            continue
        own = set(cls.__dict__.get("__annotations__", {}))
        for base in cls.__mro__[1:]:  # private mixins document nothing of their own
            if base.__name__.startswith("_") and dataclasses.is_dataclass(base) and base.__module__.split(".")[0] in ("hf_ext", "trainers"):
                own |= set(base.__dict__.get("__annotations__", {}))
        fields = [f for f in dataclasses.fields(cls) if f.name in own and f.init and f.metadata.get("help")]
        if fields:
            yield cls, fields, _dynamic_helps(node)


CONFIGS = list(documented_configs()) if __name__ != "__main__" else []  # the script mode imports nothing


def test_the_scan_sees_the_job_configs():
    names = {cls.__name__ for cls, _, _ in CONFIGS}
    assert {"CurateConfig", "LinearMerge", "SFTJobConfig"} <= names
    assert len(CONFIGS) >= 15


@pytest.mark.parametrize("cls, fields, dynamic", CONFIGS, ids=[c.__name__ for c, _, _ in CONFIGS])
def test_config_args_block_is_its_fields_help(cls, fields, dynamic):
    block = args_block(inspect.cleandoc(cls.__doc__))
    missing = [f.name for f in fields if f.name not in block]
    assert not missing, f"{cls.__name__}'s Args block does not document {missing}"
    for f in fields:
        if f.name in dynamic:
            continue
        assert block[f.name] == " ".join(f.metadata["help"].split()), f"{cls.__name__}.{f.name}: Args text != help"


def test_every_public_parameter_is_documented():
    """Every public class and function of hf_ext/ and trainers/ that takes parameters documents each one in an
    ``Args:`` block (``python tests/test_docstrings.py --missing [FOLDER]`` lists the gaps)."""
    gaps = undocumented()
    assert not gaps, f"{len(gaps)} public objects lack Args entries:\n" + "\n".join(gaps)


def test_the_parameter_scan_reads_functions_classes_and_dataclasses():
    tree = ast.parse("""
def f(a, b=1, *args, c, **kw): pass
class C:
    def __init__(self, x): pass
@dataclass
class D:
    y: int = 0
    z: ClassVar[int] = 1
    w: int = field(default=0, init=False)
""")
    assert [parameters(node) for node in tree.body] == [["a", "b", "c"], ["x"], ["y"]]


def test_args_block_parser():
    doc = "Summary.\n\nArgs:\n    x (`int`, *optional*, defaults to `1`):\n        The x.\n        Two lines.\n    y (`str`):\n        Why.\n\nReturns:\n    z"
    assert args_block(doc) == {"x": "The x. Two lines.", "y": "Why."}
    assert args_block("No block.") is None


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--missing"]:  # python tests/test_docstrings.py --missing [FOLDER]
        gaps = undocumented(under=(sys.argv[2:3] or [""])[0])
        print("\n".join(gaps) + f"\n{len(gaps)} undocumented")
    else:
        print(coverage())
