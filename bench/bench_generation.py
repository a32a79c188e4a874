"""Generation speed, fairly compared: LSTM-Transformer vs Transformer, the paper's pair and a size-matched pair.

What is timed: one generation call at a context position, batch 1, fp32, FBank input (random tensors
[T, 8, 80]), after a few untimed warm-up calls; the models of a size are built together and their
calls interleaved (A, B, C, A, B, C, ...), so a load that changes on a shared machine hits them alike. The context (10 s, 60 s, 10 min = 125, 750, 7,500 head
frames) is put into the streaming state first without timing it: `--state prefill` (default) runs the
real context through `LHGModel.prefill` (one parallel teacher-forced pass, tested equal to stepping);
`--state synthetic` fills a state of the same shape with random values (the LSTM's (h, c), the
Transformer's KV cache of n frames): a dense step costs the same whatever the values, and this skips
the long prefills on a slow machine. Then:

  1 frame per step:  `LHGModel.step`, one head frame in, 3 predicted frames out (the paper's model
                     predicts 3 frames per inference); generation keeps the first (EvalConfig advance 1).
  3 frames per step: `LHGModel.prefill` on 3 frames: the 3 frames kept from the previous prediction are
                     fed in ONE call (advance 3: 3 frames generated per call, 0.24 s of motion). The
                     repository's `generate(advance=3)` feeds them as 3 `step` calls instead; this row
                     is what a chunked step would cost.

Reported per (arch, size, context, frames per step): p50/p95 latency of one call (ms) and RTF = mean
call time / (frames per call x 0.08 s), i.e. the cost of generating at that position in a stream (a
whole run's RTF averages this over its positions). The LSTM's state has a fixed size, so its cost is
flat; the Transformer attends to every cached frame, so its cost grows with the context: the last
lines say where the two curves cross. Paper (GPU, unspecified): RTF 0.15 (LSTM-Transformer) vs 0.22
(Transformer) for 10 s samples.

    .venv/bin/python bench/bench_generation.py --quick             # tiny size, < 1 min
    nice .venv/bin/python bench/bench_generation.py --sizes paper --state synthetic --calls 20
    python bench/bench_generation.py --device cuda --sizes paper   # a GPU (each call synchronised)
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
CONTEXTS_S = (10, 60, 600)
FRAMES_PER_STEP = (1, 3)


def count_params(arch: str, dims: dict) -> int:
    """Parameters of a model, built on the meta device (no memory, no initialisation time)."""
    with torch.device("meta"):
        return sum(p.numel() for p in LHGModel(ModelConfig(arch=arch, speech="fbank", **dims)).parameters())


def matched_transformer(size: str) -> dict:
    """Transformer dimensions with the parameter count nearest the LSTM-Transformer's of `size`: the
    same width, the number of blocks chosen."""
    base = SIZES[size]
    target = count_params("lstm_transformer", base)
    per_block = count_params("transformer", {**base, "n_blocks": 2}) - count_params("transformer",
                                                                                    {**base, "n_blocks": 1})
    fixed = count_params("transformer", {**base, "n_blocks": 1}) - per_block
    return {**base, "n_blocks": max(1, round((target - fixed) / per_block))}


def models_for(size: str) -> list[tuple[str, str, dict]]:
    """(label, arch, dims): the paper's pair (equal width and depth) and the size-matched Transformer."""
    return [(f"{size}", "lstm_transformer", SIZES[size]), (f"{size}", "transformer", SIZES[size]),
            (f"{size}-matched", "transformer", matched_transformer(size))]


def _sync(device: torch.device) -> None:
    """Kernels are asynchronous on a GPU: a call's latency is only known once it has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_state(model: LHGModel, n: int, room: int) -> dict:
    """A streaming state after `n` frames, same shapes as the real one, random values (timing only)."""
    g = torch.Generator().manual_seed(n)
    p = model.in_proj.weight
    state = model.init_state(1)
    state["t"] = n
    rand = lambda *shape: torch.randn(*shape, generator=g).to(p.device, p.dtype)  # noqa: E731
    for i, blk in enumerate(state["blocks"]):
        if isinstance(blk, tuple):
            state["blocks"][i] = (torch.tanh(rand(*blk[0].shape)), rand(*blk[1].shape))
        elif n:
            heads = model.cfg.n_heads
            shape = (1, heads, max(64, n + room), model.cfg.width // heads)
            state["blocks"][i] = {"k": rand(*shape), "v": rand(*shape), "n": n}
    statics = model.cfg.head_dim // 3
    state["speaker"] = state["listener"] = (rand(1, statics), rand(1, statics))
    return state


def _inputs(model: LHGModel, n: int, seed: int, device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, n, *model.cfg.speech_shape, generator=g).to(device),
            torch.randn(1, n, model.cfg.head_dim, generator=g).to(device),
            torch.randn(1, n, model.cfg.head_dim, generator=g).to(device))


def _state(model: LHGModel, inputs: tuple, context: int, room: int, how: str) -> dict:
    """The streaming state after `context` frames (untimed)."""
    if how == "prefill" and context:
        return model.prefill(*(x[:, :context] for x in inputs), model.init_state(1))[1]
    return synthetic_state(model, context, room)


def _call(model: LHGModel, inputs: tuple, state: dict, t: int, frames: int) -> dict:
    """One generation call feeding `frames` frames from frame t: `step` (1) or a chunk through `prefill`."""
    if frames == 1:
        return model.step(*(x[:, t] for x in inputs), state)[1]
    return model.prefill(*(x[:, t:t + frames] for x in inputs), state)[1]


def measure_point(models: dict[str, LHGModel], context: int, frames: int, calls: int, warmup: int, how: str,
                  device: torch.device) -> dict[str, dict]:
    """Every model at one (context, frames per call): calls interleaved model by model, so a changing
    load on a shared machine hits all of them alike -> {name: timings}."""
    room = (warmup + calls) * frames
    inputs = {name: _inputs(m, context + room, context, device) for name, m in models.items()}
    states, state_s = {}, {}
    for name, m in models.items():
        a = time.perf_counter()
        states[name] = _state(m, inputs[name], context, room, how)
        _sync(device)
        state_s[name] = time.perf_counter() - a
    lat = {name: np.empty(calls) for name in models}
    for i in range(-warmup, calls):
        t = context + (i + warmup) * frames
        for name, m in models.items():
            a = time.perf_counter()
            states[name] = _call(m, inputs[name], states[name], t, frames)
            _sync(device)
            if i >= 0:
                lat[name][i] = time.perf_counter() - a
    return {name: {"context_frames": context, "context_s": context * HEAD_HOP_S, "frames_per_step": frames,
                   "calls": calls, "p50_ms": 1e3 * float(np.percentile(x, 50)),
                   "p95_ms": 1e3 * float(np.percentile(x, 95)), "rtf": float(x.mean()) / (frames * HEAD_HOP_S),
                   "state": how, "state_s": state_s[name]} for name, x in lat.items()}


def run_size(size: str, contexts: list[int], calls: int, warmup: int, how: str, device: torch.device) -> list[dict]:
    """The size's three models, built once, measured at every (context, frames per call)."""
    room = (warmup + calls) * max(FRAMES_PER_STEP)
    models, about = {}, {}
    for label, arch, dims in models_for(size):
        torch.manual_seed(0)
        cfg = ModelConfig(arch=arch, speech="fbank", dropout=0.0, max_len=max(contexts) + room + 1, **dims)
        name = f"{label} {arch}"
        models[name] = LHGModel(cfg).eval().to(device)
        about[name] = {"model": label, "arch": arch, "n_blocks": dims["n_blocks"], "width": dims["width"],
                       "params_M": sum(p.numel() for p in models[name].parameters()) / 1e6}
    rows = []
    with torch.inference_mode():
        for context in contexts:
            for frames in FRAMES_PER_STEP:
                for name, timing in measure_point(models, context, frames, calls, warmup, how, device).items():
                    row = {**about[name], **timing}
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                          flush=True)
                    rows.append(row)
    return sorted(rows, key=lambda r: (r["model"], r["arch"], r["context_frames"], r["frames_per_step"]))


def crossings(rows: list[dict]) -> list[str]:
    """Where the Transformer's RTF (linear in the context: attention over every cached frame) meets the
    LSTM-Transformer's (flat), per pair and frames per step."""
    lines = []
    for lstm_label in sorted({r["model"] for r in rows if r["arch"] == "lstm_transformer"}):
        for tf_label in sorted({r["model"] for r in rows if r["arch"] == "transformer"
                                and r["model"].split("-")[0] == lstm_label}):
            for frames in FRAMES_PER_STEP:
                lstm = [r for r in rows if r["model"] == lstm_label and r["arch"] == "lstm_transformer"
                        and r["frames_per_step"] == frames]
                tf = [r for r in rows if r["model"] == tf_label and r["arch"] == "transformer"
                      and r["frames_per_step"] == frames]
                if lstm and len(tf) >= 2:
                    lines.append(f"  LSTM-Transformer ({lstm_label}) vs Transformer ({tf_label}), {frames} frame(s) "
                                 f"per step: {_crossing(lstm, tf)}")
    return lines


def _crossing(lstm: list[dict], tf: list[dict]) -> str:
    flat = float(np.mean([r["rtf"] for r in lstm]))
    x = np.array([r["context_s"] for r in tf])
    y = np.array([r["rtf"] for r in tf])
    slope, intercept = np.polyfit(x, y, 1)
    at_context = {r["context_frames"]: r["rtf"] for r in lstm}
    faster = ["LSTM" if r["rtf"] > at_context.get(r["context_frames"], flat) else "Transformer" for r in tf]
    seen = ", ".join(f"{r['context_s']:.0f} s: {f} faster" for r, f in zip(tf, faster, strict=True))
    fit = f"linear fit: Transformer RTF {intercept:.3f} + {slope * 60:.4f}/min of context, LSTM flat {flat:.3f}"
    if slope <= 0:
        return f"{seen}; {fit}: the Transformer's RTF does not grow here, no crossing"
    at = (flat - intercept) / slope
    if at <= 0:
        return f"{seen}; {fit}: the Transformer line is above the LSTM's at every context, no crossing"
    where = "within" if x.min() <= at <= x.max() else "outside"
    return f"{seen}; {fit}: cross at ~{_duration(at)} of context ({where} the measured range)"


def print_table(rows: list[dict], device: torch.device, how: str, warmup: int) -> None:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, threads={torch.get_num_threads()}"
    print(f"\ntorch {torch.__version__}, {where}, batch 1, fp32, FBank input, state {how}, "
          f"{warmup} warm-up calls excluded\n")
    print("| model | arch | blocks x width | params (M) | context | frames/step | p50 ms | p95 ms | RTF |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['arch']} | {r['n_blocks']} x {r['width']} | {r['params_M']:.1f} | "
              f"{_duration(r['context_s'])} | {r['frames_per_step']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
              f"{r['rtf']:.3f} |")
    print("\nWhere the curves cross (RTF against context):")
    print("\n".join(crossings(rows)) or "  (needs an LSTM-Transformer and a Transformer at >= 2 contexts)")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny size only, 10 calls per point (< 1 min on an idle machine)")
    ap.add_argument("--sizes", nargs="+", default=["paper", "tiny"], choices=sorted(SIZES))
    ap.add_argument("--contexts", type=float, nargs="+", default=list(CONTEXTS_S), help="seconds of context")
    ap.add_argument("--calls", type=int, default=50, help="timed calls per point")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--state", choices=("prefill", "synthetic"), default="prefill")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = ap.parse_args(argv)
    from pipeline.common.runtime import resolve_device

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    sizes, calls = (["tiny"], 10) if args.quick else (args.sizes, args.calls)
    contexts = [int(round(s / HEAD_HOP_S)) for s in args.contexts]
    for size in sizes:
        counts = {f"{label} {arch}": count_params(arch, dims) for label, arch, dims in models_for(size)}
        print(f"{size}: parameters " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.items()), flush=True)
    rows = [row for size in sizes for row in run_size(size, contexts, calls, args.warmup, args.state, device)]
    print_table(rows, device, args.state, args.warmup)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "threads": args.threads, "device": str(device),
                                         "torch": torch.__version__, "state": args.state}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
