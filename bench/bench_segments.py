"""Listener segments per cutting rule: segments, hours and listener-time coverage.

    .venv/bin/python bench/bench_segments.py                 # the sample corpus (generated into a temp folder)
    .venv/bin/python bench/bench_segments.py --corpus DIR    # a generated sample corpus (needs ground_truth/)
    .venv/bin/python bench/bench_segments.py --quick         # the quick sample corpus

Runs the real session step (`pipeline.conversation.session.build_session_segments`: turn file ->
floor -> listener stretches -> segments) with all head frames valid, so only the floor and cutting
rules decide. Two conversation sets: five hand-made 300 s monologues (A talks in 2-5 s phrases with
pauses of 0.3-2 s, B says 0.3-0.5 s "un" in some pauses; listening time = A's first start to last
end) and the sample corpus (listening time = the other participant's planted turns, from
ground_truth/). Coverage = share of listening time inside a segment (overlapping training windows
not counted). Each line: rule, set, segments, hours, coverage, and with --stride the extra
overlapping training windows the stride would add before splitting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import SessionConfig  # noqa: E402
from pipeline.conversation.session import build_session_segments  # noqa: E402
from schemas.conventions import HEAD_HOP_S  # noqa: E402

Conversation = tuple[str, Path, list[str], dict[str, list[tuple[float, float]]], float]


def monologue(folder: Path, seed: int, duration_s: float = 300.0) -> Conversation:
    rng = np.random.default_rng(seed)
    rows, t = [], 0.5
    while t < duration_s - 5:
        d = rng.uniform(2, 5)
        rows.append(("A", t, t + d))
        t += d
        pause = rng.uniform(0.3, 2.0)
        if rng.random() < 0.4 and pause > 0.8:
            b0 = t + rng.uniform(0.1, pause - 0.6)
            rows.append(("B", b0, b0 + rng.uniform(0.3, 0.5)))
        t += pause
    path = folder / f"monologue{seed}.csv"
    path.write_text("participant_id,start_s,end_s\n" + "".join(f"{p},{s:.3f},{e:.3f}\n" for p, s, e in rows))
    talk = [(s, e) for p, s, e in rows if p == "A"]
    return f"m{seed}", path, ["A", "B"], {"B": [(talk[0][0], talk[-1][1])]}, duration_s


def sample_sessions(corpus: Path) -> list[Conversation]:
    found = []
    for folder in sorted((corpus / "sessions").iterdir()):
        gt = json.loads((corpus / "ground_truth" / f"{folder.name}.json").read_text())
        pids = sorted({t["participant_id"] for t in gt["turns"]} | {b["participant_id"] for b in gt["backchannels"]})
        listening = {p: [(t["start_s"], t["end_s"]) for t in gt["turns"] if t["participant_id"] != p] for p in pids}
        turns = next(p for p in folder.iterdir() if p.stem == "turns")
        found.append((folder.name, turns, pids, listening, float(gt["duration_s"])))
    return found


def measure(conversations: list[Conversation], cfg: SessionConfig) -> dict:
    listen = cover = seconds = 0.0
    n_segments = n_extra = 0
    for sid, turns, pids, listening, duration_s in conversations:
        n = int(duration_s / HEAD_HOP_S) + 2
        head = pd.DataFrame({"time_s": np.arange(n) * HEAD_HOP_S, "valid": np.ones(n, bool)})
        seg = build_session_segments(sid, turns, pids, {p: head for p in pids}, {p: 8 * n for p in pids},
                                     cfg).segments
        n_extra += int(seg["overlap_extra"].sum())
        seg = seg[~seg["overlap_extra"]]
        n_segments += len(seg)
        seconds += float((seg["end_s"] - seg["start_s"]).sum())
        for pid, spans in listening.items():
            listen += sum(e - s for s, e in spans)
            mine = seg[seg["listener_id"] == pid]
            cover += sum(max(0.0, min(e, b) - max(s, a)) for s, e in zip(mine["start_s"], mine["end_s"], strict=True)
                         for a, b in spans)
    return {"segments": n_segments, "hours": seconds / 3600, "coverage": cover / listen, "extra": n_extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", help="a generated sample corpus (default: generate one)")
    parser.add_argument("--quick", action="store_true", help="generate the quick sample corpus")
    parser.add_argument("--stride", type=float, default=0.0, help="also count overlapping windows at this stride")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "corpus"
        if not args.corpus:
            from pipeline.sample.generate import make_sample_corpus

            make_sample_corpus(corpus, quick=args.quick)
        sets = {"monologues": [monologue(Path(tmp), seed) for seed in range(5)],
                "sample corpus": sample_sessions(corpus)}
        for rule in ("equal", "greedy"):
            cfg = SessionConfig(cut_rule=rule, train_stride_s=args.stride)
            for name, conversations in sets.items():
                m = measure(conversations, cfg)
                extra = f", +{m['extra']} overlapping windows" if args.stride else ""
                print(f"{rule:6s} {name:13s}: {m['segments']:4d} segments, {m['hours']:.4f} h, "
                      f"coverage {m['coverage']:.1%}{extra}")


if __name__ == "__main__":
    main()
