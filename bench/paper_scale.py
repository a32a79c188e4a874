"""A 90-hour dry run: the build's metadata stages on a synthetic paper-size corpus, 0.1x to 10x.

    .venv/bin/python bench/paper_scale.py                  # scales 0.1, 1, 3, 10 (about 5 CPU min)
    .venv/bin/python bench/paper_scale.py --quick          # scales 0.1, 0.3, 1 (about 1 CPU min)
    .venv/bin/python bench/paper_scale.py --scales 1 --keep DIR

The corpus is the paper's (paper §IV): 24 people in one-on-one calls, 180 sessions of 30 min = 90 h
at 1x; each scale multiplies people and sessions. Turns have a floor structure (turns of 3-90 s made
of 1-4.5 s talk spurts with 0.15-1.2 s pauses, backchannels of 0.2-0.7 s in or over the pauses,
gaps and overlaps at turn changes, some long silences); head tables have the head stage's columns
with short face dropouts (about one in 6 min); FBank lengths follow the head tables. Media files are placeholders of a
few bytes: nothing is decoded and hashing costs nothing, so what is timed is the metadata work.

Stages (real pipeline code, each scale and stage in its own process for its peak memory):
  plan     `plan_build`: discover sessions, read participants.csv, hash inputs, session hashes
  segment  `build_session_segments` per session: turns file -> floor -> stretches -> segments
  split    the aggregate's split step: concatenate session tables, `assign_splits`, overlap windows
  index    `write_shard_set` with one byte per frame (shard limit scaled so the segment -> shard
           offset index is the real one) and the core shard-set id
  noop     a second BuildSplits through real Luigi with every output present (the build id is
           planned, the dataset's files are size-checked), then Luigi scheduling the 180 session
           tasks a build yields, all complete (what adding one session costs before its own work)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schemas.conventions import FBANK_FRAMES_PER_HEAD, HEAD_FEATURE_COLUMNS, HEAD_HOP_S  # noqa: E402

PAPER = {"people": 24, "sessions": 180, "session_s": 1800.0}  # 90 h of one-on-one calls
STAGES = ("plan", "segment", "split", "index", "noop")
TRAIN_STRIDE_S = 3.5  # overlapping training windows: about the paper's 63k segments from 90 h (README)
TIMED_SEGMENT_MAX_SCALE = 3.0  # above it the segment stage copies its tables (see `stage_segment`)
BYTES_PER_FRAME = 2 * 4 * len(HEAD_FEATURE_COLUMNS) + 6 + FBANK_FRAMES_PER_HEAD * 80 * 4 + 2  # core shard row


class Clock:
    """Wall and CPU seconds of the timed blocks (`with clock:`); CPU time is what a shared machine cannot inflate."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


@dataclass(frozen=True)
class SyntheticSession:
    session_id: str
    participants: tuple[str, str]
    seed: int


def corpus_shape(scale: float) -> tuple[int, int]:
    """(people, sessions) at `scale` times the paper's corpus (at least 4 people and 2 sessions)."""
    return max(4, round(PAPER["people"] * scale)), max(2, round(PAPER["sessions"] * scale))


def synth_sessions(scale: float, seed: int = 0) -> list[SyntheticSession]:
    """Two-person sessions: pairs drawn so that every person takes part about equally often."""
    n_people, n_sessions = corpus_shape(scale)
    rng = np.random.default_rng(seed)
    people = [f"P{i:03d}" for i in range(n_people)]
    count = np.zeros(n_people)
    out = []
    for k in range(n_sessions):
        order = np.lexsort((rng.random(n_people), count))  # the least used first, ties at random
        a, b = sorted((people[order[0]], people[order[1]]))
        count[order[:2]] += 1
        # conversations repeat every 180 sessions (with other people), so a larger corpus can reuse the
        # segment tables of the first 180 (`stage_segment`)
        out.append(SyntheticSession(f"s{k:05d}", (a, b), seed * 1_000_003 + k % PAPER["sessions"]))
    return out


def session_turns(session: SyntheticSession, duration_s: float = PAPER["session_s"]) -> list[tuple[str, float, float]]:
    """Talk spans `(participant, start, end)` with turns, pauses, backchannels, gaps and overlaps."""
    rng = np.random.default_rng(session.seed)
    holder, other = session.participants if rng.random() < 0.5 else session.participants[::-1]
    rows, t = [], float(rng.uniform(0.3, 2.0))
    while t < duration_s - 8:
        turn_end = min(t + float(np.clip(rng.lognormal(math.log(12), 0.8), 3, 90)), duration_s - 2)
        s = t
        while s < turn_end - 0.3:
            e = min(s + float(rng.uniform(1.0, 4.5)), turn_end)
            rows.append((holder, s, e))
            pause = float(rng.uniform(0.15, 1.2))
            if rng.random() < 0.35:  # "un" in the pause or over the end of the spurt
                b0 = max(e + float(rng.uniform(-0.4, pause)), 0.0)
                rows.append((other, b0, b0 + float(rng.uniform(0.2, 0.7))))
            s = e + pause
        gap = float(rng.uniform(4, 9)) if rng.random() < 0.05 else float(rng.uniform(-0.5, 1.0))
        t = max(turn_end + gap, t + 0.5)
        if rng.random() < 0.85:  # the floor usually changes hands at a turn end
            holder, other = other, holder
    return [(p, round(s, 3), round(e, 3)) for p, s, e in rows if e - s > 0.01]


def head_table(session: SyntheticSession, participant: str, duration_s: float = PAPER["session_s"]) -> pd.DataFrame:
    """A head stage table (12.5 fps): all columns, valid except short face dropouts (about 2% of frames)."""
    rng = np.random.default_rng([session.seed, session.participants.index(participant)])
    n = int(duration_s / HEAD_HOP_S)
    valid = np.ones(n, bool)
    for start in rng.integers(0, n, size=max(1, n // 4500)):  # about one dropout every 6 min
        valid[start:start + int(rng.integers(3, 30))] = False
    table = {"time_s": np.arange(n) * HEAD_HOP_S, "detected": valid, "interpolated": np.zeros(n, bool),
             "valid": valid}
    zeros = np.zeros(n, np.float32)
    return pd.DataFrame({**table, **{c: zeros for c in HEAD_FEATURE_COLUMNS}})


def write_corpus(sessions: list[SyntheticSession], corpus: Path) -> None:
    """The corpus folders: participants.csv, turns.csv and placeholder media of a few bytes."""
    for session in sessions:
        folder = corpus / "sessions" / session.session_id
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["participant_id,video,audio"]
        for pid in session.participants:
            for kind, suffix in (("video", ".mp4"), ("audio", ".wav")):
                (folder / f"{pid}{suffix}").write_text(f"placeholder {kind} {session.session_id} {pid}\n")
            lines.append(f"{pid},{pid}.mp4,{pid}.wav")
        (folder / "participants.csv").write_text("\n".join(lines) + "\n")
        turns = session_turns(session)
        (folder / "turns.csv").write_text("participant_id,start_s,end_s\n"
                                          + "".join(f"{p},{s:.3f},{e:.3f}\n" for p, s, e in turns))


# ---- the stages (each runs in its own process: `--stage NAME --scale S --workdir D`) ---------------------


def build_cfg():
    from pipeline.config import BuildConfig, SessionConfig

    return BuildConfig(session=SessionConfig(train_stride_s=TRAIN_STRIDE_S))


def stage_plan(work: Path, sessions: list[SyntheticSession], clock: Clock) -> dict:
    from pipeline.dataset.plan import plan_build

    with clock:
        plan = plan_build(work / "corpus", work / "out", build_cfg())
    return {"sessions": len(plan.sessions), "rejected": len(plan.rejected)}


def stage_segment(work: Path, sessions: list[SyntheticSession], clock: Clock, timed: bool = True) -> dict:
    """Segment every session (timed), or above `TIMED_SEGMENT_MAX_SCALE` segment the distinct
    conversations once and copy their tables to the sessions repeating them (not timed)."""
    from pipeline.conversation.session import build_session_segments

    cfg, folder, counts = build_cfg(), work / "segments", {"segments": 0, "overlap": 0, "dropped": 0}
    folder.mkdir(exist_ok=True)
    patterns: dict[int, tuple[SyntheticSession, pd.DataFrame, int]] = {}
    for session in sessions:
        if not timed and session.seed in patterns:
            first, table, dropped = patterns[session.seed]
            _copy_segments(table, first, session).to_parquet(folder / f"{session.session_id}.parquet", index=False)
            counts["segments"] += int((~table["overlap_extra"]).sum())
            counts["overlap"] += int(table["overlap_extra"].sum())
            counts["dropped"] += dropped
            continue
        heads = {p: head_table(session, p) for p in session.participants}
        fbanks = {p: len(t) * FBANK_FRAMES_PER_HEAD for p, t in heads.items()}
        turns = work / "corpus" / "sessions" / session.session_id / "turns.csv"
        with clock:
            result = build_session_segments(session.session_id, turns, list(session.participants), heads, fbanks,
                                            cfg.session)
        patterns[session.seed] = session, result.segments, result.stats["n_dropped"]
        result.segments.to_parquet(folder / f"{session.session_id}.parquet", index=False)
        counts["segments"] += result.stats["n_segments"]
        counts["overlap"] += result.stats["n_overlap_extra"]
        counts["dropped"] += result.stats["n_dropped"]
    return {**counts, "timed": timed}


def _copy_segments(table: pd.DataFrame, first: SyntheticSession, session: SyntheticSession) -> pd.DataFrame:
    """The segments of `first` as `session` would have them: same conversation, its ids and people."""
    people = dict(zip(first.participants, session.participants, strict=True))

    def rename(value: str) -> str:
        _, listener, frame = value.split("~")
        return f"{session.session_id}~{people[listener]}~{frame}"

    return table.assign(session_id=session.session_id, listener_id=table["listener_id"].map(people),
                        speaker_id=table["speaker_id"].map(people), segment_id=table["segment_id"].map(rename),
                        stretch_id=table["stretch_id"].map(rename))


def stage_split(work: Path, sessions: list[SyntheticSession], clock: Clock) -> dict:
    from pipeline.dataset.assemble import SessionInputs, _split_segments

    inputs = [SessionInputs(s.session_id, work / "segments" / f"{s.session_id}.parquet", {}, {}) for s in sessions]
    dataset = work / "out" / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "splits_registry.json").unlink(missing_ok=True)
    with clock:
        segments, _ = _split_segments(inputs, dataset, build_cfg(), redraw=False)
    segments.to_parquet(work / "split_segments.parquet", index=False)
    per_split = segments["split"].value_counts()
    return {s: int(per_split.get(s, 0)) for s in ("train", "valid", "test")}


def stage_index(work: Path, sessions: list[SyntheticSession], clock: Clock) -> dict:
    from pipeline.common.fsutil import stable_hash
    from pipeline.dataset.shards import write_shard_set

    cfg = build_cfg()
    segments = pd.read_parquet(work / "split_segments.parquet")
    with clock:  # the core shard-set id as build_dataset draws it, then the shard set with 1 byte per frame
        core_id = stable_hash([cfg.stage_version("dataset"), sorted(f"{s.session_id}.parquet" for s in sessions),
                               segments[["segment_id", "split", "n_frames"]].astype(str).to_numpy().tolist()], 12)
        index = write_shard_set(segments, work / "out" / "dataset" / "shards" / core_id,
                                load_session=lambda sid: None,
                                make_arrays=lambda seg, _: {"frame": np.zeros(int(seg["n_frames"]), np.uint8)},
                                max_bytes=(cfg.dataset.shard_mb << 20) // BYTES_PER_FRAME, spec={"bench": core_id})
    return {"shards": int(index["shard"].nunique()), "rows": len(index)}


def fake_outputs(work: Path) -> dict:
    """Every output a finished build leaves, as files of the right names (the dataset's listed with sizes)."""
    from pipeline.config import save_config
    from pipeline.dataset.plan import WorkLayout, plan_build
    from pipeline.dataset.shards import SHARD_SET_DONE

    cfg, out = build_cfg(), work / "out"
    plan = plan_build(work / "corpus", out, cfg)
    layout = WorkLayout.of(out, cfg)
    for session in plan.sessions:
        layout.session(session).parent.mkdir(parents=True, exist_ok=True)
        layout.session(session).write_text("{}")
    dataset = out / "dataset"
    (dataset / "segments.parquet").write_bytes(b"placeholder")
    files = {"segments.parquet": {"bytes": len(b"placeholder"), "sha256": ""}}
    for done in (dataset / "shards").glob(f"*/{SHARD_SET_DONE}"):
        files.update({f"shards/{done.parent.name}/{n}": e for n, e in json.loads(done.read_text())["files"].items()})
    (dataset / "manifest.json").write_text(json.dumps({"ssl": {}, "files": files}))
    (dataset / f"build-{plan.build_id(cfg, redraw=False, strict=False)}.json").write_text("{}")
    return {"config_id": save_config(out, cfg), "sessions": [list(s.__dict__.values()) for s in plan.sessions]}


def stage_noop(work: Path, sessions: list[SyntheticSession], clock: Clock) -> dict:
    import luigi

    from tasks import BuildSplits, SessionSegments

    faked = json.loads((work / "faked.json").read_text())
    common = {"corpus": str(work / "corpus"), "out": str(work / "out")}
    luigi.configuration.get_config().set("execution_summary", "summary_length", "0")
    results, parts = [], []
    with clock:
        results.append(luigi.build([BuildSplits(**common, train_stride_s=TRAIN_STRIDE_S)], local_scheduler=True,
                                   detailed_summary=True, log_level="WARNING"))
    parts.append(clock.cpu)
    tasks = [SessionSegments(**common, config_id=faked["config_id"], session_id=sid, session_hash=h,
                             head_keys=list(hk), audio_keys=list(ak), turns_key=tk)
             for sid, h, hk, ak, tk, _ in faked["sessions"]]
    with clock:
        results.append(luigi.build(tasks, local_scheduler=True, detailed_summary=True, log_level="WARNING"))
    complete = all(r.scheduling_succeeded and "ran successfully" not in r.summary_text for r in results)
    return {"rerun_cpu_s": round(parts[0], 3), "session_checks_cpu_s": round(clock.cpu - parts[0], 3),
            "all_complete": complete}


LONG_HOURS = (0.5, 2.0, 8.0)


def session_length_growth(hours: tuple[float, ...] = LONG_HOURS) -> list[dict]:
    """Segmenting one session of each length: the per-session cost, which corpus scaling leaves constant."""
    from pipeline.conversation.session import build_session_segments

    rows = []
    with tempfile.TemporaryDirectory(prefix="paper_scale_long_") as tmp:
        for h in hours:
            session, duration = SyntheticSession(f"long{h:g}", ("P000", "P001"), 7), h * 3600
            turns = Path(tmp) / f"turns{h:g}.csv"
            turns.write_text("participant_id,start_s,end_s\n" + "".join(
                f"{p},{s:.3f},{e:.3f}\n" for p, s, e in session_turns(session, duration)))
            heads = {p: head_table(session, p, duration) for p in session.participants}
            clock = Clock()
            with clock:
                result = build_session_segments(session.session_id, turns, list(session.participants), heads,
                                                {p: len(t) * FBANK_FRAMES_PER_HEAD for p, t in heads.items()},
                                                build_cfg().session)
            rows.append({"hours": h, "cpu_s": clock.cpu, "wall_s": clock.wall, "segments": len(result.segments)})
    return rows


def run_stage(stage: str, scale: float, work: Path, full: bool = False) -> dict:
    """Run one stage in this process; return its CPU and wall seconds, the process's peak RSS, what it made."""
    sessions = synth_sessions(scale)
    if stage == "plan" and not (work / "corpus").is_dir():
        write_corpus(sessions, work / "corpus")
    clock = Clock()
    if stage == "segment":
        info = stage_segment(work, sessions, clock, timed=full or scale <= TIMED_SEGMENT_MAX_SCALE)
    else:
        info = globals()[f"stage_{stage}"](work, sessions, clock)
    if stage == "index":  # here, so the no-op run starts in a process with cold caches
        (work / "faked.json").write_text(json.dumps(fake_outputs(work)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": stage, "scale": scale, "cpu_s": clock.cpu, "wall_s": clock.wall, "peak_mb": peak_mb, **info}


# ---- the driver -----------------------------------------------------------------------------------------


def measure_scale(scale: float, work: Path, stages: tuple[str, ...], full: bool) -> list[dict]:
    """Every stage of one scale, each in a fresh interpreter (peak RSS per stage, cold caches like a new run)."""
    rows = []
    for stage in stages:
        cmd = [sys.executable, __file__, "--stage", stage, "--scale", str(scale), "--workdir", str(work)]
        cmd += ["--full"] if full else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{stage} at {scale}x failed:\n{done.stderr[-4000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"  {scale:g}x {stage:8s} cpu {row['cpu_s']:7.2f} s  wall {row['wall_s']:7.2f} s  {row['peak_mb']:6.0f} MB  "
              + json.dumps({k: v for k, v in row.items() if k not in ("stage", "scale", "cpu_s", "wall_s", "peak_mb")}),
              flush=True)
    return rows


def growth_exponent(scales: list[float], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(scale): 1 = linear, 2 = quadratic."""
    if len(scales) < 2:
        return float("nan")
    return float(np.polyfit(np.log(scales), np.log(np.maximum(seconds, 1e-6)), 1)[0])


def report(rows: list[dict], scales: list[float]) -> str:
    """The table: per stage, seconds at each scale, the fitted exponent, the largest peak RSS."""
    head = "| stage | " + " | ".join(f"{s:g}x CPU s" for s in scales) + " | exponent | peak MB |"
    lines = [head, "|" + "---|" * (len(scales) + 3)]
    for stage in STAGES:
        mine = {r["scale"]: r for r in rows if r["stage"] == stage and r.get("timed", True)}
        if not mine:
            continue
        cells = [f"{mine[s]['cpu_s']:.2f}" if s in mine else "not timed" for s in scales]
        fit = sorted(s for s in mine if s >= 0.99 * min(scales[1:] or scales))  # 0.1x is mostly start-up
        exponent = growth_exponent(fit, [mine[s]["cpu_s"] for s in fit])
        peak = max(r["peak_mb"] for r in mine.values())
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {exponent:.2f} | {peak:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=lambda v: [float(x) for x in v.split(",")], default=[0.1, 1, 3, 10])
    parser.add_argument("--quick", action="store_true", help="scales 0.1, 0.3, 1")
    parser.add_argument("--full", action="store_true", help=f"time the segment stage above "
                                                             f"{TIMED_SEGMENT_MAX_SCALE:g}x too (about 5 CPU min at 10x)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--hours", type=lambda v: [float(x) for x in v.split(",")], default=list(LONG_HOURS),
                        help="session lengths (h) of the per-session probe; 0 = skip it")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "long":
        print(json.dumps(session_length_growth(tuple(args.hours))))
        return
    if args.stage:  # one stage in this process
        print(json.dumps(run_stage(args.stage, args.scale, args.workdir, args.full)))
        return
    scales = [0.1, 0.3, 1.0] if args.quick else args.scales
    stages = tuple(args.stages.split(","))
    with tempfile.TemporaryDirectory(prefix="paper_scale_") as tmp:
        root = args.keep or Path(tmp)
        rows = []
        for scale in scales:
            people, n = corpus_shape(scale)
            print(f"{scale:g}x: {people} people, {n} sessions, {n * PAPER['session_s'] / 3600:g} h", flush=True)
            rows += measure_scale(scale, root / f"scale_{scale:g}", stages, args.full)
    print("\n" + report(rows, scales))
    hours = [h for h in ([0.5, 2.0] if args.quick else args.hours) if h > 0]
    if hours:
        print("\n" + long_sessions(hours))


def long_sessions(hours: list[float]) -> str:
    """The per-session probe in its own process, as a table with its growth exponent."""
    cmd = [sys.executable, __file__, "--stage", "long", "--hours", ",".join(map(str, hours))]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    lines = ["| one session of | CPU s | wall s | segments |", "|---|---|---|---|"]
    lines += [f"| {r['hours']:g} h | {r['cpu_s']:.2f} | {r['wall_s']:.2f} | {r['segments']} |" for r in rows]
    exponent = growth_exponent([r["hours"] for r in rows], [r["cpu_s"] for r in rows])
    return "\n".join(lines) + f"\ngrowth exponent in session length: {exponent:.2f}"


if __name__ == "__main__":
    main()
