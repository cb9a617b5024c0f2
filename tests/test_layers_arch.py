"""The package's layers: imports run one way (core <- data, models <- accel <- inference <- engine <- analysis <- service <- apps).

The check reads every module's imports with ``ast`` (top-level and inside functions), so a
wrong import fails here whether or not it would run. ``ARCHITECTURE.md`` explains the layers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Each top-level part of the package and the parts it may import (below it, or itself).
LAYERS: dict[str, int] = {
    "core": 0,
    "data": 1, "models": 1,
    "accel": 2,
    "inference": 3,
    "engine": 4,
    "analysis": 5,
    "service": 6,
    "apps": 7,
}
# Only these may import cnnlab inside a function, each for a stated reason (ARCHITECTURE.md):
# the CLI imports a command's module when the command runs (so --help and completion stay instant),
# and `import cnnlab` resolves its public names on first use.
LAZY_ALLOWED = {"cnnlab", "cnnlab.apps.cli"}


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path, src: Path) -> list[tuple[str, int, bool]]:
    """(imported cnnlab module, line, inside a function) for every import in ``path``."""
    name = module_name(path, src)
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            f = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, f) for a in child.names if a.name.split(".")[0] == "cnnlab")
            elif isinstance(child, ast.ImportFrom):
                mod = child.module or ""
                if child.level:
                    base = name.split(".")[: len(name.split(".")) - child.level + (1 if is_pkg else 0)]
                    mod = ".".join(base + ([mod] if mod else []))
                if mod.split(".")[0] == "cnnlab":
                    # `from cnnlab.data import sets` imports the submodule cnnlab.data.sets
                    out.extend([(f"{mod}.{a.name}" if mod.count(".") == 1 and a.name.islower() and
                             (src / mod.replace(".", "/") / f"{a.name}.py").exists() else mod, child.lineno, f)
                            for a in child.names])
            visit(child, f)

    visit(ast.parse(path.read_text()), False)
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def violations(src: Path) -> list[str]:
    found = []
    for path in sorted((src / "cnnlab").rglob("*.py")):
        me = module_name(path, src)
        mine = layer_of(me)
        for target, line, in_func in imports(path, src):
            where = f"{path.relative_to(src)}:{line}"
            if in_func and me not in LAZY_ALLOWED:
                found.append(f"{where}: {me} imports {target} inside a function")
            theirs = layer_of(target)
            if mine is None or theirs is None:
                continue
            if LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine] and theirs != mine):
                found.append(f"{where}: {me} ({mine}) imports {target} ({theirs}), which is not below it")
    return found


def test_layers_import_downward_only() -> None:
    assert violations(SRC) == []


@pytest.mark.parametrize("bad", [
    ("core/errors.py", "from cnnlab.engine.train import fit\n"),          # core reaching up to engine
    ("data/tensors.py", "from cnnlab.models import create_model\n"),      # a peer in the same layer
    ("inference.py", "def f():\n    from cnnlab.analysis import metrics\n"),  # hidden in a function
])
def test_a_wrong_import_is_caught(tmp_path: Path, bad: tuple[str, str]) -> None:
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(SRC / "cnnlab", copy / "cnnlab", ignore=shutil.ignore_patterns("__pycache__"))
    target, line = bad
    with open(copy / "cnnlab" / target, "a") as fh:
        fh.write("\n" + line)
    assert any(target in v for v in violations(copy)), violations(copy)


def test_no_import_cycles() -> None:
    """Counting function-level imports too, no module reaches itself again."""
    graph: dict[str, set[str]] = {}
    for path in (SRC / "cnnlab").rglob("*.py"):
        me = module_name(path, SRC)
        graph[me] = set()
        for target, _, _ in imports(path, SRC):
            while target and target not in {module_name(p, SRC) for p in (SRC / "cnnlab").rglob("*.py")}:
                target = target.rpartition(".")[0]
            # a package's own __init__ is imported on the way to its modules; that is not a cycle
            if target and target != me and not me.startswith(target + "."):
                graph[me].add(target)

    state: dict[str, int] = {}

    def cycle_from(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return stack + [node, nxt]
            if nxt not in state and (c := cycle_from(nxt, stack + [node])):
                return c
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            assert cycle_from(node, []) is None


def front_door_of(module: str) -> str | None:
    """The front door a module of ``apps`` belongs to (``serve`` for cnnlab.apps.serve.app), else None."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "apps" else None


def crossings(src: Path) -> list[str]:
    """Imports from one front door (apps module or package) into another; only the CLI may."""
    found = []
    for path in sorted((src / "cnnlab" / "apps").rglob("*.py")):
        me = module_name(path, src)
        door = front_door_of(me)
        if door in (None, "cli"):
            continue
        for target, line, _ in imports(path, src):
            theirs = front_door_of(target)
            if theirs is not None and theirs != door:
                found.append(f"{path.relative_to(src)}:{line}: {me} imports {target}")
    return found


def test_front_doors_share_only_the_layers_below() -> None:
    """serve, export and the notebook API meet in service/, never in each other (the CLI calls them all)."""
    assert crossings(SRC) == []


def test_a_front_door_importing_another_is_caught(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(SRC / "cnnlab", copy / "cnnlab", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "cnnlab" / "apps" / "export.py", "a") as fh:
        fh.write("\nfrom cnnlab.apps.serve import create_app\n")
    assert any("export.py" in c for c in crossings(copy)), crossings(copy)
