"""Sphinx configuration of mlxp's documentation site.

Build it (as ``tests/test_docs.py`` does, warnings as errors, every example executed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing is fetched from the network at build time (no remote intersphinx); the built
pages load MathJax from its CDN unless ``-D mathjax_path=...`` points elsewhere.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's mlxp, also when not installed

import mlxp  # noqa: E402

project = "mlxp"
author = "the mlxp developers"
copyright = "the mlxp developers"
release = version = mlxp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "sg_execution_times.rst"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
default_role = "literal"

autosummary_generate = True
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # the signatures are shown; types are in the text
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": os.path.join(HERE, "..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "write_computation_times": False,
    "show_memory": False,
    "show_signature": False,
    "reset_modules": ("matplotlib",),
    "matplotlib_animations": False,
    "run_stale_examples": True,  # every build executes every example, also after a first build
}

html_theme = "pydata_sphinx_theme"
html_title = f"mlxp {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
html_copy_source = False
