"""Automatic turns: frame-level (10 ms) talk precision / recall / F1 per participant, and speed.

    .venv/bin/python bench/bench_vad.py                        # generated dialogues (+ shared TTS dialogue if present)
    .venv/bin/python bench/bench_vad.py --silero /tmp/silero   # also Silero VAD (pip install --target DIR silero-vad)

Conditions: each participant's clean track, and the same with the other's voice leaking in at -15,
-20 and -25 dB (delayed 1 ms, low-passed at 3 kHz) plus optional white noise (dBFS), and at -20 dB
delayed 150 / 400 ms (a far-end loudspeaker: network and playback delay). Sets: seeded
dialogues from the sample generator (phrases, pauses, backchannels; truth = its turn annotation)
and, when `../shared/testdata/synth_ja_dialogue` exists, the real TTS dialogue with its true turns.
Methods: `energy` (pipeline.conversation.voice_activity: speech-band level with hysteresis + bleed
suppression), `energy-nosup` (same, no suppression), `silero+dom` (Silero's speech probability > 0.5
per 10 ms frame, the same dominance rule and span smoothing; only with --silero). Generated sets
also report how many true backchannels the floor rules still call backchannels. Speed: seconds per
hour of one track for decoding the file (ffmpeg) and for each method, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal
from scipy.io import wavfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import AutoTurnsConfig  # noqa: E402
from pipeline.conversation.annotations import read_turns  # noqa: E402
from pipeline.conversation.auto_turns import spans_table  # noqa: E402
from pipeline.conversation.floor import classify_bids  # noqa: E402
from pipeline.conversation.voice_activity import (  # noqa: E402
    FRAME_S,
    activity,
    band_levels,
    dominance,
    frame_scores,
    frames_to_spans,
    smooth_levels_db,
    spans_to_frames,
    talk_spans,
)
from pipeline.media.audio import decode_audio  # noqa: E402
from pipeline.sample.dialogue import make_script, talk_intervals  # noqa: E402
from pipeline.sample.speech import make_speech_track  # noqa: E402

SR = 16_000
TTS = REPO.parent / "shared" / "testdata" / "synth_ja_dialogue"


def leak(other: np.ndarray, gain_db: float, delay_s: float = 0.001) -> np.ndarray:
    sos = signal.butter(2, 3000, fs=SR, output="sos")
    return signal.sosfilt(sos, np.roll(other, int(round(delay_s * SR)))) * 10 ** (gain_db / 20)


def generated(seed: int, duration_s: float) -> tuple[dict, pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    script = make_script(["A", "B"], duration_s, rng)
    waves = {"A": make_speech_track(script, "A", SR, 120.0, rng), "B": make_speech_track(script, "B", SR, 200.0, rng)}
    truth = pd.DataFrame(talk_intervals(script, "turn"), columns=["participant_id", "start_s", "end_s", "label"])
    return waves, truth, script


def silero_method(folder: str):
    sys.path.insert(0, folder)
    import torch
    from silero_vad import load_silero_vad

    torch.set_num_threads(1)
    model = load_silero_vad()

    def probs(wave: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(wave, np.float32))
        model.reset_states()
        with torch.no_grad():
            p = [float(model(x[i:i + 512], SR)) for i in range(0, len(x) - 511, 512)]
        per_sample = np.repeat(np.array(p), 512)
        n = len(wave) // 160
        return np.pad(per_sample, (0, max(0, n * 160 - len(per_sample))))[: n * 160].reshape(n, 160).mean(1)

    def run(waves: dict, cfg: AutoTurnsConfig) -> dict:
        levels = {p: smooth_levels_db(band_levels(w), cfg.smooth_s) for p, w in waves.items()}
        speech = {p: activity(levels[p], cfg)[2] for p in levels}
        dom = dominance(levels, speech, cfg)
        return {p: frames_to_spans((probs(w) > 0.5) & dom[p][: len(w) // 160], cfg) for p, w in waves.items()}

    return run


def evaluate(spans: dict, truth: pd.DataFrame, n: int) -> dict:
    out = {}
    for pid in sorted(spans):
        rows = truth[truth["participant_id"] == pid]
        out[pid] = frame_scores(spans_to_frames(spans[pid], n),
                                spans_to_frames(list(zip(rows["start_s"], rows["end_s"], strict=True)), n))
    return out


def backchannels_kept(spans: dict, truth: pd.DataFrame) -> str:
    true_bc = [b for b in classify_bids(truth, ["A", "B"]) if b[3]]
    found = classify_bids(spans_table(spans), ["A", "B"])
    kept = sum(any(f[3] for f in found if f[0] == p and f[1] < e and f[2] > s) for p, s, e, _ in true_bc)
    return f"bc {kept}/{len(true_bc)} ({sum(f[3] for f in found)} found)"


def conditions(clean: dict, noise_db: list[float], rng: np.random.Generator):
    yield "clean", clean
    for gain in (-15.0, -20.0, -25.0):
        for noise in [None, *noise_db]:
            tracks = {"A": clean["A"] + leak(clean["B"], gain), "B": clean["B"] + leak(clean["A"], gain)}
            if noise is not None:
                tracks = {p: w + rng.standard_normal(len(w)) * 10 ** (noise / 20) for p, w in tracks.items()}
            yield f"bleed{gain:+.0f}dB" + (f" noise{noise:+.0f}dBFS" if noise is not None else ""), tracks
    for delay in (0.15, 0.4):  # far-end loudspeaker: network and playback delay
        tracks = {"A": clean["A"] + leak(clean["B"], -20.0, delay), "B": clean["B"] + leak(clean["A"], -20.0, delay)}
        yield f"bleed-20dB delay{delay * 1000:.0f}ms", tracks


def decode_seconds(waves: dict, folder: Path) -> float:
    """Seconds ffmpeg takes to decode these tracks as 16-bit WAV files (what a build reads first)."""
    paths = []
    for pid, w in waves.items():
        path = folder / f"{pid}.wav"
        wavfile.write(path, SR, (np.clip(w, -1, 1) * 32767).astype(np.int16))
        paths.append(path)
    t0 = time.perf_counter()
    for path in paths:
        decode_audio(path)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds per generated dialogue")
    ap.add_argument("--noise", type=float, nargs="*", default=[-50.0, -40.0], help="white noise levels (dBFS)")
    ap.add_argument("--silero", default="", help="folder with the silero_vad package (not a project dependency)")
    args = ap.parse_args()
    cfg = AutoTurnsConfig()
    methods = {"energy": lambda w, c: talk_spans(w, c),
               "energy-nosup": lambda w, c: talk_spans(w, c, suppress_bleed=False)}
    if args.silero:
        methods["silero+dom"] = silero_method(args.silero)
    sets = [(f"gen{s}", *generated(s, args.duration)) for s in range(args.seeds)]
    if TTS.is_dir():
        tts = {p: decode_audio(TTS / f"participant_{p}.wav") for p in ("A", "B")}
        sets.append(("tts", tts, read_turns(TTS / "turns_ground_truth.TextGrid"), None))
    rng = np.random.default_rng(0)
    seconds = {m: 0.0 for m in methods}
    track_s = decode_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, clean, truth, script in sets:
            decode_s += decode_seconds(clean, Path(tmp))
            n = min(len(w) for w in clean.values()) // int(FRAME_S * SR)
            for cond, tracks in conditions(clean, args.noise, rng):
                track_s += sum(len(w) for w in tracks.values()) / SR
                for method, run in methods.items():
                    t0 = time.perf_counter()
                    spans = run(tracks, cfg)
                    seconds[method] += time.perf_counter() - t0
                    res = evaluate(spans, truth, n)
                    line = "  ".join(f"{p} P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f}"
                                     for p, r in res.items())
                    extra = backchannels_kept(spans, truth) if script is not None else ""
                    print(f"{name:5s} {cond:28s} {method:13s} {line}  {extra}", flush=True)
    n_conditions = 1 + 3 * (1 + len(args.noise)) + 2
    decode_per_h = decode_s / (track_s / n_conditions / 3600)
    print(f"\ndecode (ffmpeg, 16-bit WAV): {decode_per_h:.1f} s per track-hour")
    for method, s in seconds.items():
        per_h = s / (track_s / 3600)
        print(f"{method:13s}: {per_h:.1f} s per track-hour ({per_h / decode_per_h:.2f} x decode)")


if __name__ == "__main__":
    main()
