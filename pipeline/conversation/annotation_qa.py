"""Annotation QA: a human turn file checked against the voice activity of each participant's own track.

Per participant, on 10 ms frames: how much of the detected own talk is annotated and how much
annotated talk has detected own talk (coverage), the median onset / offset difference between an
annotated span and the detected span it overlaps most, talk annotated where the own track is quiet
but another person's track carries their own speech (a tier given to the wrong person), and the
longest detected own speech with no annotated talk (untranscribed). The detected talk is the
automatic-turns stage's output for the same audio (`voice_activity`: bleed of the other person
suppressed), so QA costs nothing beyond that stage. Gross disagreements name the tier and the time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common.errors import AnnotationError
from pipeline.common.fsutil import write_json_atomic
from pipeline.config import AnnotationQAConfig
from pipeline.conversation.annotations import read_turns
from pipeline.conversation.turns_stage import AutoTurnsRecord
from pipeline.conversation.voice_activity import FRAME_S, spans_to_frames
from pipeline.corpus.layout import SessionSpec

log = logging.getLogger(__name__)

Span = tuple[float, float]


def _spans(turns: pd.DataFrame, pid: str) -> list[Span]:
    rows = turns[turns["participant_id"] == pid]
    return [(float(s), float(e)) for s, e in zip(rows["start_s"], rows["end_s"], strict=True)]


def _longest_run(mask: np.ndarray) -> Span:
    """(start, end) in seconds of the longest True run; (0, 0) when there is none."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return 0.0, 0.0
    k = int(np.argmax(ends - starts))
    return round(float(starts[k]) * FRAME_S, 2), round(float(ends[k]) * FRAME_S, 2)


def _boundary_ms(annotated: list[Span], detected: list[Span]) -> tuple[float | None, float | None]:
    """Median (detected - annotated) onset and offset in ms, each annotated span paired with the
    detected span it overlaps most; None when no span overlaps."""
    onsets, offsets = [], []
    for a0, a1 in annotated:
        overlaps = [(min(a1, d1) - max(a0, d0), d0, d1) for d0, d1 in detected if min(a1, d1) > max(a0, d0)]
        if overlaps:
            _, d0, d1 = max(overlaps)
            onsets.append(d0 - a0)
            offsets.append(d1 - a1)
    return _median_ms(onsets), _median_ms(offsets)


def _median_ms(seconds: list[float]) -> float | None:
    return round(float(np.median(seconds)) * 1000, 1) if seconds else None


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def participant_qa(pid: str, annotated: np.ndarray, detected: Mapping[str, np.ndarray],
                   spans: tuple[list[Span], list[Span]]) -> dict:
    """The QA figures of one participant (frame masks of everyone's detected own talk in `detected`)."""
    own = detected[pid]
    others = np.zeros_like(own)
    for q, mask in detected.items():
        if q != pid:
            others |= mask
    both = annotated & own
    wrong = annotated & ~own & others
    untranscribed = own & ~annotated
    onset, offset = _boundary_ms(*spans)
    w0, w1 = _longest_run(wrong)
    u0, u1 = _longest_run(untranscribed)
    return {"annotated_s": round(annotated.sum() * FRAME_S, 2), "detected_s": round(own.sum() * FRAME_S, 2),
            "detected_annotated": _share(both.sum(), own.sum()), "annotated_detected": _share(both.sum(), annotated.sum()),
            "onset_ms": onset, "offset_ms": offset,
            "on_other_speech_s": round(wrong.sum() * FRAME_S, 2), "on_other_speech": _share(wrong.sum(), annotated.sum()),
            "on_other_speech_at": [w0, w1], "on_silence_s": round((annotated & ~own & ~others).sum() * FRAME_S, 2),
            "untranscribed_max_s": round(u1 - u0, 2), "untranscribed_at": [u0, u1]}


def compare_turns(annotated: pd.DataFrame, detected: pd.DataFrame, participant_ids: list[str],
                  duration_s: float, cfg: AnnotationQAConfig) -> dict:
    """QA of annotated turns against detected own talk: per-participant figures and gross `problems`."""
    end = max([duration_s, *annotated["end_s"], *detected["end_s"]])
    n = int(np.ceil(end / FRAME_S)) + 1
    det = {p: spans_to_frames(_spans(detected, p), n) for p in participant_ids}
    figures = {p: participant_qa(p, spans_to_frames(_spans(annotated, p), n), det,
                                 (_spans(annotated, p), _spans(detected, p))) for p in participant_ids}
    problems = []
    for p, f in figures.items():
        share = f["on_other_speech"]
        if share is not None and share > cfg.wrong_tier_share:
            t0, t1 = f["on_other_speech_at"]
            problems.append({"participant_id": p, "where": f"tier {p}, t={t0:.2f}-{t1:.2f} s", "reason": (
                f"tier {p}: {share:.0%} of its {f['annotated_s']:g} s of annotated talk lies on another person's own "
                f"speech while {p}'s track is quiet (longest at t={t0:.2f}-{t1:.2f} s); a tier given to the wrong "
                f"person? (--qa-wrong-tier-share {cfg.wrong_tier_share:g})")})
        if f["untranscribed_max_s"] > cfg.max_untranscribed_s:
            t0, t1 = f["untranscribed_at"]
            problems.append({"participant_id": p, "where": f"tier {p}, t={t0:.2f}-{t1:.2f} s", "reason": (
                f"tier {p}: {f['untranscribed_max_s']:g} s of {p}'s own speech on their track at t={t0:.2f}-{t1:.2f} s "
                f"has no annotated talk (--qa-max-untranscribed-s {cfg.max_untranscribed_s:g})")})
    return {"participants": figures, "problems": problems}


def run_annotation_qa(spec: SessionSpec, auto: AutoTurnsRecord, cfg: AnnotationQAConfig,
                      out_record: str | Path) -> dict:
    """QA of a session's human turn file against its automatic turns; written to `out_record` (JSON).

    An unreadable turn file is not judged here: the session step rejects it with the reason.
    """
    if spec.turns_path is None:
        raise ValueError(f"session {spec.session_id} has no human turns file to check")
    record: dict = {"session_id": spec.session_id, "turns_file": str(spec.turns_path)}
    if not auto.turns_table:
        record.update(status="skipped", reason=f"no voice activity: {auto.rejection.reason if auto.rejection else ''}")
    else:
        try:
            annotated = read_turns(spec.turns_path, participant_ids=spec.participant_ids)
        except AnnotationError as exc:
            record.update(status="skipped", reason=f"turn file unreadable: {exc.message}")
        else:
            detected = read_turns(auto.turns_table, participant_ids=spec.participant_ids)
            record.update(status="ok", **compare_turns(annotated, detected, spec.participant_ids, auto.duration_s, cfg))
    write_json_atomic(out_record, record)
    return record


def read_qa(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def qa_rejection(qa: dict, mode: str):
    """The rejection of a session whose QA found gross disagreements under `mode` quarantine (else None):
    one row naming the first tier and time, every problem in the reason."""
    from schemas.records import Rejection

    problems = qa.get("problems") or []
    if mode != "quarantine" or not problems:
        return None
    first = problems[0]
    return Rejection(session_id=qa["session_id"], participant_id=first["participant_id"], stage="annotation_qa",
                     kind="annotation", file=qa["turns_file"], where=first["where"],
                     reason="annotation QA: " + "; ".join(p["reason"] for p in problems))
