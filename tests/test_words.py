"""What the code says: the library names no command-line flag, and every ``cnnlab.x.y`` name it mentions exists.

The library layers speak no front door's language (ARCHITECTURE.md, "Errors and hints"): an error
carries the setting it concerns as data, and the CLI, the notebook API and the server each write
their own hint. And a module path named in code, docstrings, docs or export metadata must be one a
user can import: names from an older layout (``cnnlab.preprocess``) mislead whoever follows them.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "cnnlab"
# Everything below the front doors (apps/ and the package's __init__).
LIBRARY = ["core", "data", "models", "accel", "inference.py", "engine", "analysis", "service"]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _option_declarations(tree: ast.AST) -> set[int]:
    """String constants inside ``option(...)`` calls: core/config's declarations of the train command's
    flags and help, kept beside the defaults on purpose (a default is written once)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "option":
            out.update(id(c) for c in ast.walk(node) if isinstance(c, ast.Constant))
    return out


def flags_named(source: str) -> list[tuple[int, str]]:
    """(line, flag) for every ``--flag`` in a string literal of ``source`` that is not a docstring."""
    tree = ast.parse(source)
    skip = _docstring_nodes(tree) | _option_declarations(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            found.extend((node.lineno, m) for m in FLAG.findall(node.value))
    return found


def library_files() -> list[Path]:
    files: list[Path] = []
    for part in LIBRARY:
        path = SRC / part
        files.extend([path] if path.suffix == ".py" else sorted(path.rglob("*.py")))
    return files


def test_the_library_names_no_command_line_flag() -> None:
    found = [f"{path.relative_to(SRC)}:{line}: {flag}" for path in library_files()
             for line, flag in flags_named(path.read_text(encoding="utf-8"))]
    assert found == []


def test_a_flag_in_a_library_message_is_caught() -> None:
    source = 'def f(path):\n    """Docs may say --overwrite."""\n    raise OSError(f"{path} exists; pass --overwrite")\n'
    assert flags_named(source) == [(3, "--overwrite")]


# --- module paths ------------------------------------------------------------------------------

DOTTED = re.compile(r"(?<![\w./-])cnnlab(?:\.[A-Za-z_]\w*)+")
# Dotted names that are not Python paths: a file name and a logger name.
NOT_PATHS = {"cnnlab.json", "cnnlab.ignite"}


def resolves(name: str) -> bool:
    """Whether ``name`` is an importable module, or an attribute reached from one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def named_paths() -> dict[str, list[str]]:
    files = [*SRC.rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "ARCHITECTURE.md"]
    found: dict[str, list[str]] = {}
    for path in files:
        for name in DOTTED.findall(path.read_text(encoding="utf-8")):
            if name not in NOT_PATHS:
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_cnnlab_module_path_named_exists() -> None:
    missing = {name: where for name, where in named_paths().items() if not resolves(name)}
    assert missing == {}


@pytest.mark.parametrize("name, ok", [("cnnlab.service.predictor.load", True), ("cnnlab.load", True),
                                      ("cnnlab.preprocess.preprocess", False), ("cnnlab.data.nothing", False)])
def test_module_paths_resolve_as_a_user_would_import_them(name: str, ok: bool) -> None:
    assert resolves(name) is ok
