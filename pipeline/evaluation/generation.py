"""Generating the evaluation windows with trained checkpoints, and their real-time factors.

Generation streams each window autoregressively after its ground-truth context (batched for
throughput), every checkpoint on the same batches of one read of the windows (`generate_all`). The
real-time factor is measured separately as the paper reports it: batch 1, seconds of compute per
generated second, once for the model alone and once with the speech feature extraction the model
needs for the same audio.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import InputError
from pipeline.dataset.normalization import Normalization
from pipeline.evaluation.config import EvalConfig
from pipeline.evaluation.inputs import InputNeeds, WindowReader, model_view
from pipeline.evaluation.windows import Stretch, Window
from schemas.conventions import HEAD_FPS, HEAD_HOP_SAMPLES, SAMPLE_RATE


def checkpoint_folder(path: str | Path) -> Path:
    """A checkpoint folder (config.json + model.safetensors), or a training run folder (its `best/`)."""
    from pipeline.model.network import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS

    path = Path(path)
    for folder in (path, path / "best"):
        if (folder / CHECKPOINT_CONFIG).is_file() and (folder / CHECKPOINT_WEIGHTS).is_file():
            return folder
    raise InputError(str(path), f"not a checkpoint: expected {CHECKPOINT_CONFIG} and {CHECKPOINT_WEIGHTS} "
                     "here or in best/ (a TrainLHG run folder)")


def _comparable(spec: dict | None) -> dict | None:
    return None if spec is None else {k: v for k, v in spec.items() if k != "chunking_check"}


def matching_ssl_set(dataset_dir: Path, features: dict, where: str) -> str | None:
    """The dataset's SSL feature set equal to the one the checkpoint was trained on (None for FBank)."""
    if features.get("speech", "fbank") == "fbank":
        return None
    from pipeline.dataset.loader import LHGDataset

    wanted = _comparable(features.get("ssl"))
    sets = LHGDataset.available_ssl(dataset_dir)
    for name, spec in sorted(sets.items()):
        if _comparable(spec) == wanted:
            return name
    raise InputError(where, f"trained on SSL features {wanted.get('model') if wanted else '?'} "
                     f"({wanted.get('mode') if wanted else '?'} mode, weights "
                     f"{(wanted or {}).get('weights_sha256', '')[:12]}); the dataset {dataset_dir} has "
                     f"{sorted(sets) or 'none'}: build it with BuildSplits --ssl-models <that checkpoint> "
                     "--ssl-causal <that mode>")


def layer_logit_travel(extra: dict) -> float | None:
    """Upper bound on how far any layer-weight logit can have moved from 0: Adam moves a parameter by at
    most about its learning rate per step, so the bound is the sum of the (cosine-annealed) layer-weight
    learning rate over the steps trained. None when the checkpoint lacks the step count."""
    train, steps = extra.get("train", {}), extra.get("steps_per_epoch")
    if not steps or extra.get("epoch") is None:
        return None
    lr = float(train.get("layer_weight_lr") or train.get("lr", 0.0))
    epochs = int(train.get("epochs", 1))
    factor = sum(0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(int(extra["epoch"]) + 1))
    return lr * steps * factor


def weight_range(bound: float, n_layers: int) -> tuple[float, float]:
    """Softmax weights reachable when every logit stays within [-bound, bound]: (lowest, highest)."""
    lo, hi = math.exp(-bound), math.exp(bound)
    return lo / (lo + (n_layers - 1) * hi), hi / (hi + (n_layers - 1) * lo)


def _fbank_seconds(n_frames: int, repeats: int) -> float:
    """Seconds to compute FBank for `n_frames` head frames of audio, in process (the median of
    `repeats` runs on a fixed noise waveform: the cost does not depend on the content)."""
    from pipeline.features.fbank import compute_fbank

    wave = np.random.default_rng(0).standard_normal(n_frames * HEAD_HOP_SAMPLES).astype(np.float32) * 0.1
    times = []
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        compute_fbank(wave)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def measure_rtf(model, inputs: tuple, cfg: EvalConfig, device, speech_kind: str) -> dict:
    """Batch-1 RTF (paper: seconds of compute per generated second) over the first windows."""
    import torch

    from pipeline.model.network import generate

    n = min(cfg.rtf_samples, inputs[0].shape[0])
    if n == 0:
        return {}
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)  # noqa: E731
    times = []
    for i in range(n):
        speech, speaker, listener = (as_t(a[i:i + 1]) for a in inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        generate(model, speech, speaker, listener, context_frames=cfg.context_frames, advance=cfg.advance)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    generated_s = cfg.eval_frames / HEAD_FPS
    model_s = float(np.median(times))
    out = {"rtf_batch1": model_s / generated_s, "rtf_samples": n, "rtf_device": str(device),
           "rtf_includes": "the context steps included, median over samples"}
    if speech_kind == "fbank":
        fb = _fbank_seconds(cfg.window_frames, n)
        out["rtf_batch1_with_features"] = (model_s + fb) / generated_s
        out["rtf_features"] = (f"FBank of the window's {cfg.window_frames / HEAD_FPS:.2f} s of "
                               f"{SAMPLE_RATE // 1000} kHz audio, computed in process (audio decoding excluded)")
    else:
        out["rtf_batch1_with_features"] = None
        out["rtf_features"] = "SSL extraction not measured here (the SSL model is not loaded by evaluation)"
    return out


@dataclass
class Generator:
    """A loaded checkpoint, what it reads of a window, and its outputs and timings during the pass."""

    folder: Path
    model: Any
    extra: dict
    norm: Normalization
    needs: InputNeeds
    outputs: list = field(default_factory=list)
    seconds: float = 0.0
    rtf: dict = field(default_factory=dict)


def load_generator(folder: Path, dataset_dir: Path, head_columns: list[str], map_location: str) -> Generator:
    """Load a checkpoint for evaluation (raises NonFiniteWeightsError for NaN/inf weights)."""
    from pipeline.model.network import load_checkpoint

    model, extra = load_checkpoint(folder, map_location=map_location)
    model.eval()
    features = extra.get("features", {})
    trained_cols = features.get("head_columns", head_columns)
    if list(trained_cols) != list(head_columns):
        raise InputError(str(folder), f"trained on head columns {trained_cols}, the dataset has {head_columns}")
    ssl_set = matching_ssl_set(dataset_dir, features, str(folder))
    layers = tuple(features["ssl_layers"]) if ssl_set is not None and features.get("ssl_layers") else None
    return Generator(folder, model, extra, Normalization.from_dict(extra["normalization"]),
                     InputNeeds(fbank=ssl_set is None, ssl_set=ssl_set, ssl_layers=layers))


def _run_batch(gen: Generator, batch: dict, reader: WindowReader, cfg: EvalConfig, device) -> None:
    """Generate one batch of windows with one model (on the device); the first batch also gives its RTF."""
    import torch

    from pipeline.model.network import generate

    read = reader.layers.get(gen.needs.ssl_set) if gen.needs.ssl_set else None
    speech, speaker, listener = model_view(batch, gen.needs, read, gen.norm, cfg.context_frames)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)  # noqa: E731
    started = time.perf_counter()
    out = generate(gen.model, as_t(speech), as_t(speaker), as_t(listener), context_frames=cfg.context_frames,
                   advance=cfg.advance)
    gen.outputs.append(gen.norm.head.undo(out.float().cpu().numpy()))
    if len(gen.outputs) == 1:
        gen.rtf = measure_rtf(gen.model, (speech, speaker, listener), cfg, device, gen.model.cfg.speech)
    gen.seconds += time.perf_counter() - started


def generate_all(generators: dict[str, Generator], dataset_dir: Path, cfg: EvalConfig, stretches: list[Stretch],
                 windows: list[Window], device) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One pass over the windows: each batch is read once (the union of every model's inputs), then every
    model generates it -> (listener [N, C+E, D], speaker [N, C+E, D], {name: generated listener [N, C+E, D]}),
    raw units. With `cfg.device_models` below the number of models they wait in host memory and visit
    the device that many at a time for each batch (README "Evaluation": memory)."""
    from pipeline.common.logs import progress

    reader = WindowReader(dataset_dir, cfg.split, [g.needs for g in generators.values()])
    per_visit = cfg.device_models or len(generators) or 1
    staged = per_visit < len(generators)
    for gen in () if staged else generators.values():
        gen.model.to(device)  # all resident (a no-op when loaded there)
    names = list(generators)
    heads: dict[str, list] = {"listener_head": [], "speaker_head": []}
    bar = progress(total=len(windows), desc=f"generating ({len(generators)} models)", unit="sample")
    for batch in reader.batches(stretches, windows, cfg.batch_size):
        for key, parts in heads.items():
            parts.append(batch[key])
        for g in range(0, len(names), per_visit):
            group = [generators[name] for name in names[g:g + per_visit]]
            for gen in group if staged else ():
                gen.model.to(device)
            for gen in group:
                _run_batch(gen, batch, reader, cfg, device)
            for gen in group if staged else ():
                gen.model.to("cpu")
        bar.update(len(batch["speaker_head"]))
    bar.close()
    outputs = {name: np.concatenate(gen.outputs).astype(np.float64) for name, gen in generators.items()}
    return np.concatenate(heads["listener_head"]), np.concatenate(heads["speaker_head"]), outputs


def generator_info(gen: Generator, n_windows: int, cfg: EvalConfig) -> dict:
    """The checkpoint's entry of results.json: what it is, its timings and (SSL w/WA) its layer weights."""
    model, extra = gen.model, gen.extra
    ssl = extra.get("features", {}).get("ssl") or {}
    info = {"checkpoint": str(gen.folder.absolute()), "arch": model.cfg.arch, "speech": model.cfg.speech,
            "ssl_set": gen.needs.ssl_set, "ssl_mode": ssl.get("mode"), "ssl_model": ssl.get("model_id") or ssl.get("model"),
            "epoch": extra.get("epoch"),
            "valid_loss": extra.get("valid_loss"), "generation_s": round(gen.seconds, 3),
            "throughput_rtf": gen.seconds / (n_windows * cfg.eval_frames / HEAD_FPS), **gen.rtf}
    if model.cfg.speech == "ssl_wa":
        weights = [float(w) for w in model.layer_weights().detach().cpu()]
        bound = layer_logit_travel(extra)
        info["layer_weights"] = weights
        info["layer_weight_lr"] = float(extra.get("train", {}).get("layer_weight_lr")
                                        or extra.get("train", {}).get("lr", 0.0))
        info["layer_logit_travel_bound"] = bound
        info["layer_weight_reachable"] = None if bound is None else list(weight_range(bound, len(weights)))
    return info
