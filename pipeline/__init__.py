"""Listening-head-generation dataset pipeline.

`pipeline` holds the domain code (plain functions and classes, no Luigi). `luigi --module pipeline
BuildSplits` imports this package with Luigi already loaded: only then are the Luigi tasks in
`tasks/` registered, so domain users never pay for (or depend on) Luigi.
"""

import importlib
import sys

if "luigi" in sys.modules:  # pragma: no cover - exercised through the luigi CLI
    # The one pipeline -> tasks edge, and the reason `--module pipeline` works: Luigi finds tasks by
    # importing the module named on its command line. Imported by name at run time so that `pipeline`
    # has no static dependency on `tasks` (dependencies point tasks -> pipeline -> schemas).
    importlib.import_module("tasks")
