"""Where an SSL checkpoint lives and what identifies its content.

Users name a model by a local directory or a Hugging Face id. Ids resolve through the normal
HF cache with `local_files_only=True`: offline machines use a pre-downloaded copy and nothing is
fetched at build time. Outputs are keyed by the sha256 of the weight files, not the name, so a
re-downloaded or fine-tuned checkpoint under the same name never reuses stale features.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from pipeline.common.fsutil import sha256_file

WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")


class CheckpointError(Exception):  # noqa: N818 - reads better at the call sites
    """An SSL checkpoint cannot be found or is incomplete; the message names the path or id."""


def resolve_checkpoint(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: expected a checkpoint directory (config.json + weights), got a file")
        folder = path.resolve()
    else:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(name_or_path, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - any failure here means "not available offline"
            raise CheckpointError(
                f"{name_or_path}: not a local directory and not in the Hugging Face cache "
                f"({type(exc).__name__}); download it once with `huggingface-cli download {name_or_path}` "
                "or pass a local checkpoint directory") from None
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json; expected a HuBERT / wav2vec 2.0 / WavLM checkpoint")
    if not weight_files(folder):
        raise CheckpointError(f"{folder}: no weight file ({', '.join(WEIGHT_PATTERNS)})")
    return folder


def weight_files(folder: Path) -> list[Path]:
    """The weight files transformers would load: safetensors when present, else the .bin files."""
    for patterns in (WEIGHT_PATTERNS[:2], WEIGHT_PATTERNS[2:]):
        found = sorted({p for pat in patterns for p in folder.glob(pat)})
        if found:
            return found
    return []


def checkpoint_sha256(folder: Path, hasher: Callable[[Path], str] = sha256_file) -> str:
    """Content hash of a checkpoint: its config.json and every weight file (name and sha256)."""
    files = [folder / "config.json", *weight_files(folder)]
    return hashlib.sha256("".join(f"{f.name} {hasher(f)}\n" for f in files).encode()).hexdigest()


def model_tag(name_or_path: str, weights_sha256: str) -> str:
    """File-name-safe, readable and content-specific: `japanese-hubert-base-1a2b3c4d5e`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name_or_path.rstrip("/")).name).strip("-.") or "model"
    return f"{stem[:48]}-{weights_sha256[:10]}"
