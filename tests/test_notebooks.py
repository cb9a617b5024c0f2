"""The lesson notebooks (docs/lesson/es, docs/lesson/en) run top to bottom without a cell error.

Quick mode (``CNNLAB_LESSON_QUICK=1``: one epoch on a few thousand images) on the real MNIST
files; skipped where those are absent. The kernel imports this checkout's ``src``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import real_mnist_dir

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "docs" / "lesson"
NOTEBOOKS = sorted(LESSON.glob("*/*.ipynb"))


def test_both_languages_are_there() -> None:
    assert {p.parent.name for p in NOTEBOOKS} >= {"es", "en"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_matches_its_py_source(path: Path) -> None:
    """The .py (jupytext percent format) is the source; the .ipynb must hold the same cells."""
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    source = path.with_suffix(".py")
    assert source.is_file(), f"{path.name} has no paired {source.name}"
    want = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    have = [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]
    assert have == want, f"{path} differs from {source.name}: run `jupytext --to ipynb {source}`"


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.timeout(1200)
@pytest.mark.skipif(real_mnist_dir() is None, reason="real MNIST not found (../shared/data or $CNNLAB_TEST_REAL_DATA)")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_runs_in_quick_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("CNNLAB_LESSON_QUICK", "1")
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(real_mnist_dir()))
    monkeypatch.setenv("CNNLAB_LESSON_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()  # raises CellExecutionError, naming the cell, on the first error
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, for a look after a failure
    shown = [o for c in nb.cells if c.cell_type == "code" and "interp.plot_" in c.source
             for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) >= 5, "the interpretation figures did not display inline"
