"""Sphinx configuration of the ntkit documentation (build: ``make -C docs html``)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Document the ntkit of this checkout (not another installed copy), and find _ext/.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import ntkit  # noqa: E402

project = "ntkit"
author = "the ntkit authors"
copyright = "2026, the ntkit authors"
release = ntkit.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "ntkit_docs",
    "rst_sanitize",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json",
                    "lab/results/**", "sg_execution_times.rst"]
templates_path = ["_templates"]
default_role = "py:obj"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# --- API reference: Google-style docstrings ("Args:", "Returns:") through napoleon.
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True      # Attributes: as fields, not as second object descriptions
napoleon_custom_sections = [("Shapes", "notes_style"), ("Conventions", "notes_style"),
                            ("Claims", "notes_style")]

# --- The example gallery: every script in examples/ runs at build time (each ≲ 20 s here).
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/",            # execute every example
    "ignore_pattern": r"__init__\.py|/_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "abort_on_example_error": True,
    "show_memory": False,
    "min_reported_time": 1,
    "capture_repr": ("__repr__",),
    "reset_modules": ("matplotlib",),
}
# The examples set torch's threads themselves; keep BLAS from oversubscribing a small box.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# --- HTML: the scientific-Python look.
html_theme = "pydata_sphinx_theme"
html_title = f"ntkit {release}"
html_static_path = ["_static"]
html_css_files = ["ntkit.css"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_sidebars = {"index": [], "changelog": [], "benchmarks": []}
html_show_sourcelink = False
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# No network at build time: no intersphinx; external references stay plain text.
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg")
