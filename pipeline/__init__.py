"""Listening-head-generation dataset pipeline.

`pipeline` holds the domain code (plain functions and classes, no Luigi). `luigi --module pipeline
BuildSplits` imports this package with Luigi already loaded: only then are the Luigi tasks in
`tasks/` registered, so domain users never pay for (or depend on) Luigi.
"""

import sys

if "luigi" in sys.modules:  # pragma: no cover - exercised through the luigi CLI
    import tasks  # noqa: F401  (registers BuildSplits and friends with Luigi)
