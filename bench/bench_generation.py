"""Real-time factor of streaming listener-head generation: LSTM-Transformer vs Transformer baseline.

Batch 1, FBank input (precomputed: random tensors of shape [T, 8, 80]), fp32, autoregressive
(each step feeds the previous step's first predicted frame back as the listener input), warm-up steps
excluded. One head frame = 0.08 s, so RTF = compute time / (steps x 0.08 s).

Reported per (arch, size): RTF over the first 125 steps (10 s) and over 750 steps (60 s), p50/p95
per-step latency over the first 10 s and over the last 10 s of the long run (a flat LSTM latency vs a
growing Transformer latency shows up there), and the LSTM/Transformer RTF ratio per size.
Paper (GPU, unspecified): RTF 0.15 (LSTM-Transformer) vs 0.22 (Transformer), ratio 0.68.

    .venv/bin/python bench/bench_generation.py            # paper size (20 x 1280) + tiny, 10 s and 60 s
    .venv/bin/python bench/bench_generation.py --quick    # 10 s and 20 s runs only
    .venv/bin/python bench/bench_generation.py --sizes tiny --json out.json
    python bench/bench_generation.py --device cuda     # on a GPU (each step synchronised before timing)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline.model.network import LHGModel, ModelConfig  # noqa: E402
from schemas.conventions import HEAD_HOP_S  # noqa: E402

SIZES = {
    "paper": dict(n_blocks=20, width=1280, n_heads=16),
    "tiny": dict(n_blocks=2, width=64, n_heads=4),
}
ARCHS = ("lstm_transformer", "transformer")


def _sync(device: torch.device) -> None:
    """Kernels are asynchronous on a GPU: a step's latency is only known once it has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(arch: str, size: str, steps_short: int, steps_long: int, warmup: int, seed: int = 0,
            device: torch.device | None = None) -> dict:
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, speech="fbank", dropout=0.0, max_len=max(4096, steps_long + 1),
                      **SIZES[size])
    t0 = time.perf_counter()
    model = LHGModel(cfg).eval().to(device)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(seed)
    n = max(steps_short, steps_long)
    speech = torch.randn(1, n, *cfg.speech_shape, generator=g).to(device)
    speaker = torch.randn(1, n, cfg.head_dim, generator=g).to(device)
    listener0 = torch.randn(1, cfg.head_dim, generator=g).to(device)
    with torch.inference_mode():
        state = model.init_state(1)
        lis = listener0
        for t in range(warmup):  # warm-up on its own state, not timed
            pred, state = model.step(speech[:, t], speaker[:, t], lis, state)
            lis = pred[:, 0]
        _sync(device)
        lat = np.empty(n)
        state = model.init_state(1)
        lis = listener0
        for t in range(n):
            a = time.perf_counter()
            pred, state = model.step(speech[:, t], speaker[:, t], lis, state)
            lis = pred[:, 0]
            _sync(device)
            lat[t] = time.perf_counter() - a
    out = {"arch": arch, "size": size, "device": str(device), "params_M": n_params / 1e6, "build_s": build_s,
           "warmup_steps": warmup}
    short = lat[:steps_short]
    out[f"rtf_{steps_short}"] = short.sum() / (steps_short * HEAD_HOP_S)
    out["p50_ms_first10s"] = 1e3 * float(np.percentile(short, 50))
    out["p95_ms_first10s"] = 1e3 * float(np.percentile(short, 95))
    if steps_long > steps_short:
        long = lat[:steps_long]
        last = long[-steps_short:]
        out[f"rtf_{steps_long}"] = long.sum() / (steps_long * HEAD_HOP_S)
        out["p50_ms_all"] = 1e3 * float(np.percentile(long, 50))
        out["p95_ms_all"] = 1e3 * float(np.percentile(long, 95))
        out["p50_ms_last10s"] = 1e3 * float(np.percentile(last, 50))
        out["p95_ms_last10s"] = 1e3 * float(np.percentile(last, 95))
    del model, state
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="long run of 250 steps (20 s) instead of 750 (60 s)")
    ap.add_argument("--sizes", nargs="+", default=["paper", "tiny"], choices=sorted(SIZES))
    ap.add_argument("--steps-short", type=int, default=125)
    ap.add_argument("--steps-long", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = ap.parse_args(argv)
    from pipeline.common.runtime import resolve_device

    device = resolve_device(args.device)
    steps_long = args.steps_long or (250 if args.quick else 750)
    torch.set_num_threads(args.threads)

    rows = []
    for size in args.sizes:
        for arch in ARCHS:
            r = run_one(arch, size, args.steps_short, steps_long, args.warmup, device=device)
            rows.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}),
                  flush=True)

    s, lg = args.steps_short, steps_long
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, threads={torch.get_num_threads()}"
    print(f"\ntorch {torch.__version__}, {where}, batch 1, fp32, FBank input, "
          f"warm-up {args.warmup} steps excluded; short = {s} steps ({s * HEAD_HOP_S:.0f} s), "
          f"long = {lg} steps ({lg * HEAD_HOP_S:.0f} s)\n")
    print(f"| size | arch | params (M) | RTF {s * HEAD_HOP_S:.0f} s | RTF {lg * HEAD_HOP_S:.0f} s | "
          f"p50/p95 ms first 10 s | p50/p95 ms all {lg * HEAD_HOP_S:.0f} s | p50/p95 ms last 10 s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['arch']} | {r['params_M']:.1f} | {r[f'rtf_{s}']:.3f} | "
              f"{r.get(f'rtf_{lg}', float('nan')):.3f} | "
              f"{r['p50_ms_first10s']:.2f}/{r['p95_ms_first10s']:.2f} | "
              f"{r.get('p50_ms_all', float('nan')):.2f}/{r.get('p95_ms_all', float('nan')):.2f} | "
              f"{r.get('p50_ms_last10s', float('nan')):.2f}/{r.get('p95_ms_last10s', float('nan')):.2f} |")
    ratios = {}
    for size in args.sizes:
        by = {r["arch"]: r for r in rows if r["size"] == size}
        if len(by) == 2:
            ratios[size] = {k: by["lstm_transformer"][k] / by["transformer"][k]
                            for k in (f"rtf_{s}", f"rtf_{lg}") if k in by["transformer"]}
    print("\nLSTM/Transformer RTF ratio (paper 0.15/0.22 = 0.68; goal <= 0.5 at 10 s):")
    for size, rr in ratios.items():
        print(f"  {size}: " + ", ".join(f"{k} {v:.2f}" for k, v in rr.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratios": ratios, "threads": args.threads, "device": str(device),
                                         "torch": torch.__version__}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
