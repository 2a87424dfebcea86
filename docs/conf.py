"""Sphinx configuration of chanserve's documentation (``make docs``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "chanserve"
author = "the chanserve developers"
copyright = "chanserve developers"
release = version = "0.1"

extensions = []
templates_path = []
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext"}
master_doc = root_doc = "index"

html_theme = "alabaster"
html_theme_options = {
    "description": "Django Channels' original model on Twisted",
    "fixed_sidebar": True,
}
html_static_path = []
pygments_style = "sphinx"
highlight_language = "python3"
nitpicky = False
