"""Sphinx configuration for the jaxdl documentation (build: ``python -m sphinx -W -b html docs docs/_build/html``).

Pages that repeat text kept elsewhere are generated at build time by `_pages.py` from their single
source: the getting-started and capability pages from README.md (whose snippets tests/test_readme.py
runs), the examples page from examples/README.md, the benchmark tables from benchmarks/RESULTS.md,
and the API reference from each package's ``__all__`` through autodoc + napoleon.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's jaxdl, as the tests import it
sys.path.insert(0, str(DOCS))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # importing jaxdl for autodoc needs no accelerator

import _pages  # noqa: E402

import jaxdl  # noqa: E402

_pages.write_all(DOCS)

project = "jaxdl"
release = version = jaxdl.__version__
author = "the jaxdl authors"
copyright = "the jaxdl authors, Apache-2.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# Google-style docstrings ("Args:", "Returns:", "Raises:", "Example:").
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass/NamedTuple "Attributes:" as fields, not duplicate attribute entries
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # Flax/optax base-class docstrings are not ours

html_theme = "alabaster"  # ships with Sphinx: no theme package, builds offline
html_title = f"jaxdl {release}"
html_static_path: list[str] = []


def setup(app):
    # After napoleon (priority 500) has turned the Google sections into fields.
    app.connect("autodoc-process-docstring", _pages.plain_text_safe, priority=600)
