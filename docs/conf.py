"""Sphinx configuration for tabb-torchrl.

Build (warnings are errors; this is what CI runs)::

    OMP_NUM_THREADS=1 python -m sphinx -W --keep-going -b html docs docs/_build/html
    OMP_NUM_THREADS=1 python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

The build works offline. Cross-references to torch, tensordict and torchrl
(intersphinx) are only resolved when ``TABB_DOCS_INTERSPHINX=1`` is set,
because fetching the inventories needs the network.

Set ``TABB_DOCS_SKIP_GALLERY=1`` to build the pages without executing the
sphinx-gallery tutorials (faster while editing prose; CI leaves it unset).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parent
ROOT = DOCS_DIR.parent
sys.path.insert(0, str(DOCS_DIR / "_ext"))
sys.path.insert(0, str(ROOT))

# Keep the build cheap and deterministic on shared CPU machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# -- Project information -----------------------------------------------------

project = "tabb-torchrl"
author = "tabb-torchrl developers"
copyright = "2026, tabb-torchrl developers"
try:
    from importlib.metadata import version as _version

    release = _version("tabb-torchrl")
except Exception:  # pragma: no cover - docs built from a plain checkout
    release = "0.1.0"
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax ships with the HTML (docs/_build/html/_static/mathjax/): the method page
    # renders its equations offline. docs/check_offline.py checks no page loads a CDN.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "myst_parser",
    "tabb_docs",  # docs/_ext/tabb_docs.py: env catalogue, results, policies pages
]

extensions.append("sphinx_gallery.gen_gallery")
_SKIP_GALLERY = os.environ.get("TABB_DOCS_SKIP_GALLERY", "0") == "1"

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    # The results pages are docs/results/*.md; the grids' output folders below
    # them (table.md, table.csv, curves) are data that those pages include or link.
    "results/*/**",
    # Included into envs.md / datasets.md / behaviour_policies.md by the tabb_docs
    # extension, never built as pages of their own.
    "_generated/**",
    # sphinx-gallery sources; the rendered pages live in auto_examples/.
    "examples/**",
]

# -- autodoc / autosummary / napoleon ------------------------------------------

# An explicit list (not ``True``): with ``True`` Sphinx only scans the pages it
# already knew from the previous build, so a new API page gets no stubs in an
# incremental build.
autosummary_generate = sorted(str(p.relative_to(DOCS_DIR)) for p in (DOCS_DIR / "api").glob("*.rst"))
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
# Show signatures without expanding every default tensor/TensorDict repr.
autodoc_preserve_defaults = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autoclass_content = "class"
# Heavy optional imports that are not needed to render the API pages.
autodoc_mock_imports = ["submitit", "hydra_plugins", "gymnasium_robotics"]

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_param = True
napoleon_use_rtype = True
napoleon_use_ivar = True

# -- doctest ------------------------------------------------------------------
# Only the explicit ``.. doctest::`` / ``.. testcode::`` blocks of the pages
# are run here; the ``>>>`` examples in docstrings are run by pytest
# (``python -m pytest`` collects the package doctests).
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
"""

# -- intersphinx (opt-in: needs the network) -----------------------------------

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
    "tensordict": ("https://docs.pytorch.org/tensordict/stable/", None),
    "torchrl": ("https://docs.pytorch.org/rl/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
}
if os.environ.get("TABB_DOCS_INTERSPHINX", "0") != "1":
    # Offline default: no inventory is fetched, references to external
    # objects stay plain text (nitpicky is off, so they do not warn).
    intersphinx_mapping = {}
intersphinx_timeout = 10

# -- MyST -----------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
suppress_warnings = [
    # Third-party markdown files we include (results tables written by the
    # benchmark scripts, the policies README) may start below H1.
    "myst.header",
]

# -- sphinx-gallery -------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": ["examples"],
    "gallery_dirs": ["auto_examples"],
    # Execute every example whose file name starts with plot_.
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": True,
    "plot_gallery": "False" if _SKIP_GALLERY else "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "backreferences_dir": None,
    "show_memory": False,
    "write_computation_times": False,
}

# -- HTML -----------------------------------------------------------------------

# Furo: a wide content column (the paper's table, long code lines) and a light /
# dark mode; it loads no asset from the network.
html_theme = "furo"
html_title = f"tabb-torchrl {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # docs/_static/custom.css: a wider content column
html_theme_options = {
    "navigation_with_keys": True,
}
