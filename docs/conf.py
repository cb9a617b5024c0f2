"""Sphinx configuration of cnnlab's docs site.

Build it from the repository root (one command; README.md "Documentation")::

    python -m sphinx -W --keep-going -c docs . docs/_build/html

The source folder is the repository root, so README.md, ARCHITECTURE.md, CHANGELOG.md, the
reference pages (docs/*.md) and the lessons keep the relative links they have on GitHub;
``include_patterns`` picks the pages. The lesson notebooks are committed without outputs and
executed here by myst-nb (cache mode: a notebook runs again only when its code changed).
``CNNLAB_LESSON_QUICK=1`` executes them in quick mode (one epoch on a few thousand images), as CI does.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # autodoc and sphinx-click import this checkout's cnnlab
# The notebooks' kernel imports this checkout too (an installed cnnlab may be another version).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

import cnnlab  # noqa: E402

project = "cnnlab"
author = "The cnnlab authors"
copyright = "the cnnlab authors"
release = version = cnnlab.__version__

extensions = [
    "myst_nb",               # Markdown pages and executed notebooks
    "sphinx.ext.autodoc",    # the API reference, from the docstrings
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_click",          # the CLI reference, from click itself
]

root_doc = "docs/site/index"
include_patterns = [
    "README.md", "ARCHITECTURE.md", "CHANGELOG.md", "benchmarks/README.md",
    "docs/*.md", "docs/site/*.md", "docs/lesson/README.md", "docs/lesson/*/*.ipynb",
]
exclude_patterns = ["docs/_build", "**/runs", "**/.ipynb_checkpoints"]

# MyST: GitHub-style heading anchors, so README.md#run-the-lesson links resolve.
myst_heading_anchors = 4
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]

# myst-nb: execute the lessons at build time, cached; a failing cell fails the build.
nb_execution_mode = "cache"
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "furo"
html_title = f"cnnlab {release}"
html_static_path: list[str] = []
html_extra_path = ["site/extra"]  # index.html at the top: a redirect to the root page
html_show_sourcelink = False


def _escape_star_params(app, what, name, obj, options, lines: list[str]) -> None:
    """Docstrings list ``**config_fields`` as a parameter name; in reST a leading ``**`` opens bold."""
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("**") and not stripped.startswith("``") and stripped.count("**") == 1:
            lines[i] = line[: len(line) - len(stripped)] + "\\*\\*" + stripped[2:]


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _escape_star_params)
