"""Reading Praat TextGrid turn files (long and short text formats, UTF-8 or UTF-16 with BOM).

A Praat text file is a sequence of numbers, strings and flags; the long format's labels only decorate
them, so one tokenizer reads both formats. Non-blank intervals of IntervalTiers are talk; TextTiers
are skipped. No praatio dependency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import AnnotationError
from pipeline.conversation.turn_files import RawSpan, read_annotation_text

_TG_TOKEN = re.compile(
    r'(?P<str>"(?:[^"]|"")*")'
    r"|(?P<flag><[A-Za-z]+>)"
    r"|(?P<br>\[[^\]\n]*\]:?)"
    r"|(?P<comment>![^\n]*)"
    r"|(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?=\s|$)"
    r"|(?P<word>[^\s\"\[]+)"
    r"|(?P<ws>\s+)"
)
# Labels of the long format; skipped like Praat does. Any other bare word is an error.
_TG_LABELS = {
    "file",
    "type",
    "=",
    "object",
    "class",
    "xmin",
    "xmax",
    "tiers",
    "size",
    "item",
    "intervals",
    "points",
    "text",
    "number",
    "mark",
    "name",
    "",
}


@dataclass
class _Tok:
    kind: str  # "str" | "num" | "flag" | "word" (unexpected bare text)
    value: str
    line: int


class _TokenStream:
    """Praat text files are a sequence of numbers, strings and flags; labels only decorate them."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.toks: list[_Tok] = []
        line = 1
        pos = 0
        while pos < len(text):
            m = _TG_TOKEN.match(text, pos)
            if m is None:  # pragma: no cover - the word branch matches anything else
                raise AnnotationError(path, f"unreadable text {text[pos : pos + 20]!r}", f"line {line}")
            kind = m.lastgroup
            val = m.group()
            if kind == "str":
                self.toks.append(_Tok("str", val[1:-1].replace('""', '"'), line))
            elif kind in ("num", "flag"):
                self.toks.append(_Tok(kind, val, line))
            elif kind == "word" and val.lower().rstrip(":?") not in _TG_LABELS:
                # Kept as a token so the error names the tier / interval where it was expected.
                self.toks.append(_Tok("word", val, line))
            line += val.count("\n")
            pos = m.end()
        self.i = 0

    def _next(self, expected: str, where: str) -> _Tok:
        if self.i >= len(self.toks):
            last = self.toks[-1].line if self.toks else 1
            raise AnnotationError(self.path, f"file ends early: expected {expected}", f"{where}, line {last}")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def string(self, where: str) -> str:
        tok = self._next("a quoted string", where)
        if tok.kind != "str":
            raise AnnotationError(
                self.path, f"expected a quoted string, found {tok.value!r}", f"{where}, line {tok.line}"
            )
        return tok.value

    def number(self, what: str, where: str) -> tuple[float, int]:
        tok = self._next(f"{what} (a number)", where)
        if tok.kind != "num":
            raise AnnotationError(
                self.path, f"{what} must be a number, found {tok.value!r}", f"{where}, line {tok.line}"
            )
        return float(tok.value), tok.line

    def count(self, what: str, where: str) -> int:
        x, line = self.number(what, where)
        if x < 0 or x != int(x):
            raise AnnotationError(
                self.path, f"{what} must be a whole number >= 0, found {x!r}", f"{where}, line {line}"
            )
        return int(x)

    def flag(self, where: str) -> str:
        tok = self._next("<exists> or <absent>", where)
        if tok.kind != "flag":
            raise AnnotationError(
                self.path, f"expected <exists> or <absent>, found {tok.value!r}", f"{where}, line {tok.line}"
            )
        return tok.value

    @property
    def done(self) -> bool:
        return self.i >= len(self.toks)


def read_textgrid_spans(path: Path, known: set[str] | None) -> list[RawSpan]:
    """Non-blank intervals of IntervalTiers are talk; TextTiers (points) are skipped."""
    ts = _TokenStream(path, read_annotation_text(path))
    ftype = ts.string("header")
    if not ftype.startswith("ooTextFile"):
        raise AnnotationError(path, f"expected a Praat text file ('ooTextFile'), found {ftype!r}", "line 1")
    oclass = ts.string("header")
    if oclass != "TextGrid":
        raise AnnotationError(path, f"expected object class 'TextGrid', found {oclass!r}", "header")
    ts.number("xmin", "header")
    ts.number("xmax", "header")
    n_tiers = ts.count("tier count", "header") if ts.flag("header") == "<exists>" else 0
    raws: list[RawSpan] = []
    for t in range(1, n_tiers + 1):
        tclass = ts.string(f"tier {t}")
        name = ts.string(f"tier {t}")
        where_t = f"tier {name!r}"
        ts.number("tier xmin", where_t)
        ts.number("tier xmax", where_t)
        if tclass == "TextTier":
            for k in range(1, ts.count("point count", where_t) + 1):
                ts.number("point time", f"{where_t}, point {k}")
                ts.string(f"{where_t}, point {k}")
            continue
        if tclass != "IntervalTier":
            raise AnnotationError(path, f"expected IntervalTier or TextTier, found {tclass!r}", where_t)
        pid = name.strip()
        if known is not None and pid not in known:
            raise AnnotationError(
                path, f"tier {name!r} is not a known participant: expected one of {sorted(known)}", where_t
            )
        for k in range(1, ts.count("interval count", where_t) + 1):
            where = f"{where_t}, interval {k}"
            x0, line = ts.number("interval xmin", where)
            x1, _ = ts.number("interval xmax", where)
            text = ts.string(where)
            if text.strip():
                raws.append(RawSpan(pid, x0, x1, text, f"{where}, line {line}"))
    if not ts.done:
        tok = ts.toks[ts.i]
        raise AnnotationError(
            path, f"expected end of file after {n_tiers} tier(s), found {tok.value!r}", f"line {tok.line}"
        )
    return raws
