"""The training data path: worker processes, stored dtypes until the device, layer-sliced SSL reads."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bench.bench_loader import write_synthetic_dataset
from pipeline.dataset.loader import LHGDataset
from pipeline.model.batches import EpochOrder, collate, make_loader, speech_standardizer, to_device
from pipeline.model.train import TrainConfig, open_split, preset, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 segments (float16 FBank and SSL: 5 hidden states x 16 dims), every 4th in the valid split."""
    folder = tmp_path_factory.mktemp("synthetic") / "dataset"
    folder.mkdir()
    name = write_synthetic_dataset(folder, n_segments=24, layers=5, dim=16, fbank_dtype="float16", valid_every=4)
    return folder, name


def _batches(data, workers: int, epochs: int = 2) -> list[dict]:
    order = EpochOrder(len(data), seed=3)
    loader = make_loader(data, batch_size=5, workers=workers, prefetch=2, device=CPU, seed=3, order=order)
    out = []
    for epoch in range(epochs):  # persistent workers serve both epochs
        order.set_epoch(epoch)
        out.extend(loader)
    return out


def test_workers_give_the_same_batches_in_the_same_order(dataset):
    folder, name = dataset
    data = LHGDataset(folder, "train", ssl=name, ssl_layers=[4, 1], normalize_speech=False)
    data[0]  # maps opened in this process must not travel to the workers
    single, multi = _batches(data, 0), _batches(data, 2)
    assert [b["segment_id"] for b in single] == [b["segment_id"] for b in multi]
    assert [b["segment_id"] for b in single[:4]] != [b["segment_id"] for b in single[4:8]]  # epochs differ
    for a, b in zip(single, multi, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
    # the order is the one the per-epoch shuffled DataLoader of earlier versions drew (resumed runs keep it)
    old = torch.utils.data.DataLoader(range(len(data)), batch_size=len(data), shuffle=True,
                                      generator=torch.Generator().manual_seed(3 * 100_003 + 1))
    assert sum((b["segment_id"] for b in single[4:]), []) == [data.segments["segment_id"][i]
                                                              for i in next(iter(old)).tolist()]


def test_training_is_identical_with_and_without_workers(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    write_synthetic_dataset(folder, n_segments=10, layers=2, dim=8, valid_every=4, frames=(16, 25))
    weights = []
    for workers in (0, 2):
        cfg = preset("tiny", epochs=2, batch_size=3, dropout=0.1, loader_workers=workers)
        train(folder, tmp_path / str(workers), cfg, progress=False)
        weights.append(load_file(tmp_path / str(workers) / "last" / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # loader settings change no result, so a run may resume with others
    assert preset("tiny", loader_workers=2, loader_prefetch=4) == preset("tiny")
    assert TrainConfig.from_dict(preset("tiny").to_dict()).loader_workers == -1


@pytest.mark.parametrize("ssl_dtype", ["float16", "bfloat16"])
def test_speech_keeps_its_stored_dtype_until_the_device(tmp_path, ssl_dtype):
    folder = tmp_path / "dataset"
    folder.mkdir()
    name = write_synthetic_dataset(folder, n_segments=6, layers=3, dim=8, fbank_dtype="float16", ssl_dtype=ssl_dtype)
    fbank_cfg = preset("tiny")
    raw = open_split(folder, "train", fbank_cfg)
    items = [raw[i] for i in range(len(raw))]
    assert items[0]["speech"].dtype == torch.float16
    batch = collate(items)
    assert batch["speech"].dtype == torch.float16
    stats = LHGDataset(folder, "train")._norm.speech_fbank
    moved = to_device(batch, CPU, speech_standardizer({"mean": stats.mean, "std": stats.std}, CPU))
    # the model sees exactly what the loader used to give it: float32 standardised in the loader
    before = collate([LHGDataset(folder, "train")[i] for i in range(len(raw))])
    assert moved["speech"].dtype == torch.float32 and torch.equal(moved["speech"], before["speech"])

    ssl_items = [LHGDataset(folder, "train", ssl=name)[i] for i in range(2)]
    stored = torch.bfloat16 if ssl_dtype == "bfloat16" else torch.float16
    assert ssl_items[0]["ssl"].dtype == stored and collate(ssl_items)["ssl"].dtype == stored
    ssl = to_device(collate(ssl_items), CPU)["ssl"]
    numpy_mode = LHGDataset(folder, "train", ssl=name, as_torch=False, normalize=False)[0]["ssl"]
    assert ssl.dtype == torch.float32 and np.array_equal(ssl[0, :len(numpy_mode)].numpy(),
                                                         numpy_mode.astype(np.float32))


def test_collate_pads_with_zeros_and_masks_keeping_dtypes():
    lengths = (3, 5, 1)
    items = [{"segment_id": str(n), "listener_head": torch.full((n, 18), float(n)),
              "speaker_head": torch.ones(n, 18), "listener_valid": torch.ones(n, dtype=torch.bool),
              "ssl": torch.full((n, 4, 2, 3), n, dtype=torch.float16)} for n in lengths]
    batch = collate(items)
    assert batch["segment_id"] == ["3", "5", "1"]
    assert batch["ssl"].dtype == torch.float16 and tuple(batch["ssl"].shape) == (3, 5, 4, 2, 3)
    assert batch["frame_mask"].tolist() == [[i < n for i in range(5)] for n in lengths]
    for i, n in enumerate(lengths):
        assert torch.equal(batch["listener_valid"][i], batch["frame_mask"][i])
        assert bool((batch["ssl"][i, :n] == n).all()) and float(batch["ssl"][i, n:].abs().sum()) == 0.0
        assert bool((batch["listener_head"][i, :n] == n).all()) and float(batch["listener_head"][i, n:].abs().sum()) == 0


def _corrupt_layers(shard_path, keep: list[int]) -> None:
    """NaN into every stored hidden state not in `keep`, in place on disk (safetensors layout: 8-byte
    header length, JSON header, then the tensor bytes at their data offsets)."""
    raw = shard_path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    entry = json.loads(raw[8:8 + header_len])["ssl"]
    begin, end = entry["data_offsets"]
    mapped = np.memmap(shard_path, dtype=np.uint8, mode="r+")
    ssl = mapped[8 + header_len + begin:8 + header_len + end].view(np.float16).reshape(entry["shape"])
    ssl[:, :, [layer for layer in range(ssl.shape[2]) if layer not in keep]] = np.nan
    mapped.flush()


def test_layer_slice_reads_only_those_layers(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    name = write_synthetic_dataset(folder, n_segments=4, layers=13, dim=64)
    full = LHGDataset(folder, "train", ssl=name, speech=False)
    expected = [full[i]["ssl"][:, :, [7, 2]].clone() for i in range(len(full))]
    sliced = LHGDataset(folder, "train", ssl=name, ssl_layers=[7, 2], speech=False)
    assert all(torch.equal(sliced[i]["ssl"], expected[i]) for i in range(len(full)))

    # only the used layers are materialised: the item's peak allocation is far below one all-layer copy
    fresh = LHGDataset(folder, "train", ssl=name, ssl_layers=[7], speech=False)
    fresh[0]  # open the maps outside the measurement
    tracemalloc.start()
    item = fresh[1]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    all_layers = item["ssl"].numel() * 13 * 2  # bytes of the segment's [T, 4, 13, 64] float16 rows
    assert peak < all_layers / 4, (peak, all_layers)

    # the other layers are not read at all: NaN on disk there leaves the used layers' values untouched
    for shard in sorted((folder / "ssl").rglob("*.safetensors")):
        _corrupt_layers(shard, keep=[2, 7])
    damaged = LHGDataset(folder, "train", ssl=name, speech=False)
    assert bool(damaged[0]["ssl"][:, :, 0].isnan().all())  # the damage is real
    again = LHGDataset(folder, "train", ssl=name, ssl_layers=[7, 2], speech=False)
    assert all(torch.equal(again[i]["ssl"], expected[i]) for i in range(len(full)))
    with pytest.raises(ValueError, match=r"ssl_layers \[13\] out of range: SSL set .* stores 13 hidden states"):
        LHGDataset(folder, "train", ssl=name, ssl_layers=[0, 13], speech=False)[0]


def test_open_shard_maps_are_bounded(dataset, monkeypatch):
    """Each map holds a file descriptor; a paper-size SSL set has thousands of shards."""
    import pipeline.dataset.loader as loader

    folder, name = dataset
    expected = [LHGDataset(folder, "train", ssl=name)[i] for i in range(3)]
    monkeypatch.setattr(loader, "MAX_OPEN_SHARDS", 1)
    bounded = LHGDataset(folder, "train", ssl=name)
    for i in range(3):  # head/FBank shard, then the SSL shard, for every item
        item = bounded[i]
        assert len(bounded._handles) == 1
        assert all(torch.equal(item[k], expected[i][k]) for k in item if k != "segment_id")
