"""Errors for bad input. Each names the file, the place in it and what was expected, so a
quarantine report tells a user exactly what to fix."""

from __future__ import annotations

from pathlib import Path

QUOTE_LIMIT = 80  # characters of input text echoed in a message


def quote_input(text: object, limit: int = QUOTE_LIMIT) -> str:
    """Input text as it may appear in a message: quoted (repr, so control characters are visible) and
    cut to `limit` characters, so a report never carries more of a file than it needs to name the fault."""
    text = str(text)
    cut = text if len(text) <= limit else text[:limit] + "..."
    return repr(cut)


class InputError(Exception):
    """A user-supplied file is unusable. Recorded as a quarantine reason, never a crash."""

    kind = "input"

    def __init__(self, path: str | Path, message: str, where: str | None = None):
        self.path = str(path)
        self.where = where
        self.message = message
        loc = f" ({where})" if where else ""
        super().__init__(f"{self.path}{loc}: {message}")


class CorpusLayoutError(InputError):
    kind = "layout"


class AnnotationError(InputError):
    kind = "annotation"


class MediaError(InputError):
    kind = "media"


class NoFaceError(MediaError):
    kind = "no_face"


class CorruptOutputError(RuntimeError):
    """A file the pipeline wrote earlier is missing, truncated or altered (a disk fault, a kill, a
    hand edit). Names the file and says how to check the rest (`python -m pipeline verify`)."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")
