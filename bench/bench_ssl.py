"""Speed and memory of SSL feature extraction with a HuBERT-base-sized random-weight model.

Real-time factor (seconds of compute per second of audio) of the plain transformers forward and of each
mode of `pipeline.features.speech_ssl.extract_ssl` on the same audio in the same process, their ratio, peak RSS of each
mode on a long recording (each in a fresh subprocess, read from ru_maxrss), and storage per hour.

    .venv/bin/python bench/bench_ssl.py                     # 30 s RTF + 10 min peak RSS
    .venv/bin/python bench/bench_ssl.py --rss-seconds 120   # shorter memory runs
    .venv/bin/python bench/bench_ssl.py --child strict --seconds 600   # one measurement
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 16_000
MODES = ("none", "attention", "strict")


def speechlike(seconds: float, seed: int = 0, block_s: float = 10.0) -> np.ndarray:
    """Amplitude-modulated harmonic tone plus noise (random weights do not care about real speech).

    Built in 10 s blocks so the generator's float64 temporaries do not dominate the measured peak RSS.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.empty(n, dtype=np.float32)
    phase = 0.0
    for a in range(0, n, int(block_s * SR)):
        t = np.arange(a, min(n, a + int(block_s * SR))) / SR
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
        inst = 2 * np.pi * (120 + 30 * np.sin(2 * np.pi * 0.5 * t)) / SR
        ph = phase + np.cumsum(inst)
        phase = float(ph[-1])
        voiced = sum(np.sin(k * ph) / k for k in range(1, 5))
        out[a : a + len(t)] = 0.1 * env * (voiced + 0.5 * rng.standard_normal(len(t)))
    return out


def random_base_model():
    """HuBERT-base-sized model (HubertConfig() defaults: 12 layers, 768 dims) with random weights."""
    import torch
    import transformers

    from pipeline.features.speech_ssl import LoadedSSL

    torch.manual_seed(0)
    cfg = transformers.HubertConfig()
    model = transformers.HubertModel(cfg).eval().requires_grad_(False)
    return LoadedSSL(
        model=model,
        config=cfg,
        model_id="random-hubert-base",
        kind="hubert",
        weights_sha256="random",
        transformers_version=transformers.__version__,
        num_hidden_states=cfg.num_hidden_layers + 1,
        hidden_size=cfg.hidden_size,
        device="cpu",
    )


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), falling back to ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def child(mode: str, seconds: float, threads: int, keep_output: bool) -> dict:
    """One measurement in this process: time and peak RSS of extracting `seconds` of audio."""
    import torch

    from pipeline.common.runtime import limit_threads
    from pipeline.features.speech_ssl import extract_ssl, iter_ssl

    limit_threads(threads)
    loaded = random_base_model()
    wave = speechlike(seconds)
    base_rss = current_rss_mb()
    reset_peak_rss()  # so the peak below is that of the extraction, not of building the random model
    t0 = time.perf_counter()
    n = 0
    if mode == "plain":
        x = torch.from_numpy(np.concatenate([np.zeros(80, np.float32), wave]))[None]
        with torch.inference_mode():
            n = len(loaded.model(x, output_hidden_states=True).hidden_states[0][0])
    elif keep_output:
        n = extract_ssl(loaded, wave, mode=mode).shape[0]
    else:  # stream blocks out (as a shard writer would): bounded memory for any length
        for block in iter_ssl(loaded, wave, mode=mode):
            n += block.shape[0]
    dt = time.perf_counter() - t0
    return {
        "mode": mode,
        "seconds": seconds,
        "frames": n,
        "wall_s": dt,
        "rtf": dt / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": base_rss,
    }


def run_child(mode: str, seconds: float, threads: int, keep_output: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--seconds", str(seconds), "--threads", str(threads)]
    if keep_output:
        cmd.append("--keep-output")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rtf_same_process(seconds: float, threads: int, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` RTF of the plain forward and each mode, interleaved in one process."""
    import torch

    from pipeline.common.runtime import limit_threads
    from pipeline.features.speech_ssl import StreamingSSL, extract_ssl

    limit_threads(threads)
    loaded = random_base_model()
    wave = speechlike(seconds)
    x = torch.from_numpy(np.concatenate([np.zeros(80, np.float32), wave]))[None]

    def plain():
        with torch.inference_mode():
            loaded.model(x, output_hidden_states=True)

    def online():  # strict mode pushed one head frame (80 ms, 1280 samples) at a time, as live audio
        stream = StreamingSSL(loaded)
        for i in range(0, len(wave), 1280):
            stream.push(wave[i : i + 1280])
        stream.flush()

    jobs = {"plain": plain, **{m: (lambda m=m: extract_ssl(loaded, wave, mode=m)) for m in MODES}}
    jobs["strict-80ms"] = online
    best = {k: float("inf") for k in jobs}
    plain()  # warm-up
    for _ in range(repeats):
        for k, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / seconds)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="audio length for the RTF comparison")
    ap.add_argument(
        "--rss-seconds", type=float, default=600.0, help="audio length for peak-RSS runs (0: skip)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep-output", action="store_true", help="RSS runs hold the whole output (extract_ssl)")
    ap.add_argument("--child", choices=("plain", *MODES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seconds, args.threads, args.keep_output)))
        return

    rtf = rtf_same_process(args.seconds, args.threads, args.repeats)
    print(
        f"HuBERT-base-sized random model, {args.threads} threads, fp32, {args.seconds:g} s audio "
        f"(best of {args.repeats}):"
    )
    print(f"{'run':<12} {'RTF':>7} {'x plain':>8}")
    for k, v in rtf.items():
        print(f"{k:<12} {v:7.3f} {v / rtf['plain']:8.2f}")
    if args.rss_seconds > 0:
        kind = "whole output held (extract_ssl)" if args.keep_output else "blocks streamed out (iter_ssl)"
        print(f"\npeak RSS, {args.rss_seconds:g} s audio, fresh process each, {kind}:")
        print(f"{'mode':<10} {'peak MB':>8} {'RSS before MB':>15} {'RTF':>7}")
        for m in MODES:
            r = run_child(m, args.rss_seconds, args.threads, args.keep_output)
            print(f"{m:<10} {r['peak_rss_mb']:8.0f} {r['rss_before_mb']:15.0f} {r['rtf']:7.3f}")
        r = run_child("plain", args.seconds, args.threads, False)
        print(
            f"{'plain':<10} {r['peak_rss_mb']:8.0f} {r['rss_before_mb']:15.0f} {r['rtf']:7.3f}"
            f"   (plain forward on {args.seconds:g} s only: one pass over long audio does not fit)"
        )
    mb_h = 50 * 3600 * 13 * 768 * 2 / 1e6
    print(
        f"\nstorage: fp16, 13 layers x 768 at 50 fps = {mb_h:,.0f} MB per hour of audio "
        f"({mb_h / 13:,.0f} MB per hour per layer)"
    )


if __name__ == "__main__":
    main()
