"""The lesson notebooks (docs/lesson/es, docs/lesson/en) run as a student would run them.

Each notebook is executed from a copy outside the repository (the lesson folder: the notebook
and the shipped photos of digits), with ``HOME`` a fresh empty folder and ``CNNLAB_DATA_DIR``
unset, so the notebook's own data resolution runs for real: cnnlab's default data folder under
that ``HOME``, and torchvision's MNIST download into it. The download comes from a local HTTP
mirror this test starts, serving the real MNIST files gzipped as torchvision expects.

How the mirror reaches torchvision is test-only: an IPython startup file (``$IPYTHONDIR``, a
temporary folder) points ``torchvision.datasets.MNIST.mirrors`` at the local server and its
checksums at the served files. Neither cnnlab nor the notebooks know about it.

Quick mode (``CNNLAB_LESSON_QUICK=1``: one epoch on a few thousand images); skipped where the
real MNIST files are absent. The kernel imports this checkout's ``src``.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import re
import shutil
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from conftest import real_mnist_dir

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "docs" / "lesson"
NOTEBOOKS = sorted(LESSON.glob("*/*.ipynb"))
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def test_both_languages_are_there() -> None:
    assert {p.parent.name for p in NOTEBOOKS} >= {"es", "en"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_matches_its_py_source(path: Path) -> None:
    """The .py (jupytext percent format) is the source; the .ipynb must hold the same cells, without outputs."""
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    source = path.with_suffix(".py")
    assert source.is_file(), f"{path.name} has no paired {source.name}"
    want = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    nb = nbformat.read(path, as_version=4)
    have = [(c.cell_type, c.source) for c in nb.cells]
    assert have == want, f"{path} differs from {source.name}: run `jupytext --to ipynb {source}`"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path} is committed with outputs: the docs site shows them executed"


def repository_url() -> str:
    """The one place the repository's public address is written: pyproject's [project.urls]."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


@pytest.mark.parametrize("page", [*NOTEBOOKS, *(p.with_suffix(".py") for p in NOTEBOOKS),
                                  LESSON / "README.md", ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_colab_badges_and_downloads_point_at_this_repository(page: Path) -> None:
    """Every "Open in Colab" badge, install line and raw download names pyproject's repository."""
    repo = repository_url()
    owner_name = repo.removeprefix("https://github.com/")
    text = page.read_text(encoding="utf-8")
    badges = re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/main/(\S+?\.ipynb)", text)
    assert badges, f"{page.name} has no Open in Colab badge"
    for repo_in_badge, nb_path in badges:
        assert repo_in_badge == owner_name, f"{page.name}: badge for {repo_in_badge}, pyproject says {owner_name}"
        assert (ROOT / nb_path).is_file(), f"{page.name}: the badge opens {nb_path}, which does not exist"
    for other in re.findall(r"(?:github\.com|githubusercontent\.com)/([\w.-]+/[\w.-]+)", text):
        assert other.removesuffix(".git") in (owner_name, "googlecolab/colabtools"), f"{page.name} links to {other}, not {owner_name}"


@pytest.fixture(scope="module")
def mnist_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A local HTTP server with the four MNIST files gzipped (torchvision downloads the .gz and unpacks it)."""
    real = real_mnist_dir()
    if real is None:
        pytest.skip("real MNIST not found (../shared/data or $CNNLAB_TEST_REAL_DATA)")
    served = tmp_path_factory.mktemp("mnist-mirror")
    md5 = {}
    for name in RAW_FILES:
        data = gzip.compress((real / "MNIST" / "raw" / name).read_bytes(), compresslevel=6, mtime=0)
        (served / f"{name}.gz").write_bytes(data)
        md5[f"{name}.gz"] = hashlib.md5(data).hexdigest()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}/", "md5": md5, "requests": requests}
    finally:
        server.shutdown()
        server.server_close()


STARTUP = '''\
# Test-only (tests/test_notebooks.py): torchvision downloads MNIST from the test's local mirror.
from torchvision.datasets import MNIST

MNIST.mirrors = [{url!r}]
MNIST.resources = {resources!r}
'''


def figure_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and re.search(r"plt\.subplots|interp\.plot_", c.source)]


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_runs_from_a_fresh_copy(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         mnist_mirror: dict) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # The lesson folder as a student downloads it: the notebook, and the photos beside it.
    copy = tmp_path / "lesson"
    shutil.copytree(path.parent, copy / path.parent.name, ignore=shutil.ignore_patterns("runs", "*.py"))
    shutil.copytree(LESSON / "images", copy / "images", ignore=shutil.ignore_patterns("*.py"))
    notebook = copy / path.parent.name / path.name

    home = tmp_path / "home"
    home.mkdir()
    ipython = tmp_path / "ipython"
    (ipython / "profile_default" / "startup").mkdir(parents=True)
    (ipython / "profile_default" / "startup" / "00-mnist-mirror.py").write_text(
        STARTUP.format(url=mnist_mirror["url"], resources=list(mnist_mirror["md5"].items())))
    for var in ("CNNLAB_DATA_DIR", "CNNLAB_LESSON_RUNS", "XDG_CACHE_HOME", "TORCH_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("IPYTHONDIR", str(ipython))
    monkeypatch.setenv("CNNLAB_LESSON_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    before = len(mnist_mirror["requests"])

    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(notebook.parent)}})
    try:
        client.execute()  # raises CellExecutionError, naming the cell, on the first error
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, for a look after a failure

    data = home / ".cache" / "cnnlab" / "data" / "MNIST" / "raw"
    assert all((data / name).is_file() for name in RAW_FILES), "MNIST did not land in cnnlab's default data folder"
    fetched = {Path(r.split("?")[0]).name for r in mnist_mirror["requests"][before:]}
    assert fetched == set(mnist_mirror["md5"]), f"the notebook did not download MNIST from the mirror: {fetched}"
    blank = [c.source.splitlines()[0] for c in figure_cells(nb)
             if not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    assert not blank, f"cells that draw a figure showed none: {blank}"
    assert len(figure_cells(nb)) >= 12
    assert (notebook.parent / "runs" / "lenet5-own" / "best.pt").is_file()
    assert len(list((notebook.parent / "runs" / "ignite-lenet5").glob("*.pt"))) == 1
