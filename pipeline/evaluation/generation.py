"""Generating the evaluation windows with a trained checkpoint, and its real-time factor.

Generation streams each window autoregressively after its ground-truth context (batched for
throughput). The real-time factor is measured separately as the paper reports it: batch 1,
seconds of compute per generated second, once for the model alone and once with the speech
feature extraction the model needs for the same audio.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError
from pipeline.dataset.normalization import Normalization
from pipeline.evaluation.config import EvalConfig
from pipeline.evaluation.windows import Stretch, Window, read_windows
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


class WindowInputs:
    """Normalised model inputs of evaluation windows: speech (FBank or SSL), speaker and listener heads."""

    def __init__(self, dataset_dir: Path, cfg: EvalConfig, features: dict, folder: Path, norm: Normalization):
        from pipeline.dataset.loader import LHGDataset

        self.ssl_set = matching_ssl_set(dataset_dir, features, str(folder))
        self.data = LHGDataset(dataset_dir, cfg.split, normalize=False, as_torch=False, ssl=self.ssl_set,
                               speech=self.ssl_set is None)
        if features.get("ssl_layers"):
            self.data.ssl_layers = features["ssl_layers"]
        self.cfg, self.norm = cfg, norm

    def batch(self, stretches: list[Stretch], windows: list[Window]) -> tuple[np.ndarray, ...]:
        keys = ("listener_head", "speaker_head", "speech" if self.ssl_set is None else "ssl")
        arrays = read_windows(self.data, stretches, windows, keys)
        speech = arrays[keys[2]]
        if self.ssl_set is None:
            speech = self.norm.speech_fbank.apply(speech)
        return (speech, self.norm.head.apply(arrays["speaker_head"]),
                self.norm.head.apply(arrays["listener_head"][:, :self.cfg.context_frames]))


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


def generate_for_checkpoint(folder: Path, dataset_dir: Path, cfg: EvalConfig, stretches: list[Stretch],
                            windows: list[Window], head_columns: list[str]) -> tuple[np.ndarray, dict]:
    """Streaming generation for every window -> (listener [N, C+E, D] raw units, checkpoint info)."""
    import torch

    from pipeline.common.logs import progress
    from pipeline.common.runtime import resolve_device
    from pipeline.model.network import generate, load_checkpoint

    device = resolve_device(cfg.device)
    model, extra = load_checkpoint(folder, map_location=str(device))
    features = extra.get("features", {})
    trained_cols = features.get("head_columns", head_columns)
    if list(trained_cols) != list(head_columns):
        raise InputError(str(folder), f"trained on head columns {trained_cols}, the dataset has {head_columns}")
    norm = Normalization.from_dict(extra["normalization"])
    source = WindowInputs(dataset_dir, cfg, features, folder, norm)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)  # noqa: E731
    outputs, rtf = [], {}
    started = time.perf_counter()
    bar = progress(total=len(windows), desc=f"generating ({folder.name})", unit="sample")
    for b in range(0, len(windows), cfg.batch_size):
        speech, speaker, listener = source.batch(stretches, windows[b:b + cfg.batch_size])
        out = generate(model, as_t(speech), as_t(speaker), as_t(listener), context_frames=cfg.context_frames,
                       advance=cfg.advance)
        outputs.append(norm.head.undo(out.float().cpu().numpy()))
        if b == 0:
            rtf = measure_rtf(model, (speech, speaker, listener), cfg, device, model.cfg.speech)
        bar.update(len(speaker))
    bar.close()
    seconds = time.perf_counter() - started
    ssl = features.get("ssl") or {}
    info = {"checkpoint": str(folder.absolute()), "arch": model.cfg.arch, "speech": model.cfg.speech,
            "ssl_set": source.ssl_set, "ssl_mode": ssl.get("mode"), "ssl_model": ssl.get("model_id") or ssl.get("model"),
            "epoch": extra.get("epoch"),
            "valid_loss": extra.get("valid_loss"), "generation_s": round(seconds, 3),
            "throughput_rtf": seconds / (len(windows) * cfg.eval_frames / HEAD_FPS), **rtf}
    if model.cfg.speech == "ssl_wa":
        weights = [float(w) for w in model.layer_weights().detach().cpu()]
        bound = layer_logit_travel(extra)
        info["layer_weights"] = weights
        info["layer_weight_lr"] = float(extra.get("train", {}).get("layer_weight_lr")
                                        or extra.get("train", {}).get("lr", 0.0))
        info["layer_logit_travel_bound"] = bound
        info["layer_weight_reachable"] = None if bound is None else list(weight_range(bound, len(weights)))
    return np.concatenate(outputs).astype(np.float64), info
