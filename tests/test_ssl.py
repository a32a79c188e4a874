"""SSL feature extraction: equality with transformers, the frame rule, exact causality of "strict",
the measured leaks of "attention"/"none", chunking, and loading errors.

Tiny random-weight models are built from configs and saved, then loaded through `load_ssl_model`
(the real loading path). The printed numbers (run with -s) are quoted in the data card.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipeline.features.speech_ssl import (  # noqa: E402
    SSLModelError,
    StreamingSSL,
    bf16_to_float32,
    extract_ssl,
    iter_ssl,
    load_ssl_model,
    ssl_num_frames,
    ssl_spec,
)

SR = 16_000
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
)
# name -> (config class, model class, post-LN base with GroupNorm (False) or pre-LN with LayerNorm conv (True))
VARIANTS = {
    "hubert-base": ("HubertConfig", "HubertModel", False),
    "hubert-preln": ("HubertConfig", "HubertModel", True),
    "wav2vec2-base": ("Wav2Vec2Config", "Wav2Vec2Model", False),
    "wav2vec2-preln": ("Wav2Vec2Config", "Wav2Vec2Model", True),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    dirs = {}
    for i, (name, (cfg_cls, model_cls, stable)) in enumerate(VARIANTS.items()):
        torch.manual_seed(100 + i)
        cfg = getattr(transformers, cfg_cls)(
            **TINY, do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group"
        )
        d = tmp_path_factory.mktemp(name)
        getattr(transformers, model_cls)(cfg).eval().save_pretrained(str(d))
        dirs[name] = str(d)
    return dirs


@pytest.fixture(scope="module")
def models(model_dirs):
    return {name: load_ssl_model(d) for name, d in model_dirs.items()}


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated noise with a few harmonics: enough structure for random-weight models."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)) ** 2
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 5))
    return (0.1 * env * (voiced + 0.5 * rng.standard_normal(n))).astype(np.float32)


def hf_hidden_states(loaded, wave: np.ndarray) -> np.ndarray:
    """transformers' own forward on the 80-sample-left-padded waveform, all hidden states [T, L, D]."""
    x = torch.from_numpy(np.concatenate([np.zeros(80, np.float32), wave]))[None]
    with torch.no_grad():
        hs = loaded.model(x, output_hidden_states=True).hidden_states
    return torch.stack(hs, 2)[0].numpy()


def strict_reference(loaded, wave: np.ndarray, window: int) -> np.ndarray:
    """Independent one-pass strict forward: whole-sequence cumulative GroupNorm, causal positional conv
    (taps 0..64), sliding-window causal additive mask, transformers' own encoder layers."""
    m, cfg = loaded.model, loaded.config
    x = torch.from_numpy(np.concatenate([np.zeros(80, np.float32), wave]))[None, None]
    convs = list(m.feature_extractor.conv_layers)
    with torch.no_grad():
        if cfg.feat_extract_norm == "group":
            y = convs[0].conv(x).double()
            cnt = torch.arange(1, y.shape[-1] + 1, dtype=torch.float64)
            mean = y.cumsum(-1) / cnt
            var = (y * y).cumsum(-1) / cnt - mean * mean
            gn = convs[0].layer_norm
            y = ((y - mean) / torch.sqrt(var.clamp(min=0) + gn.eps)).float()
            h = convs[0].activation(y * gn.weight[None, :, None] + gn.bias[None, :, None])
            convs = convs[1:]
        else:
            h = x
        for c in convs:
            h = c(h)
        f = m.feature_projection(h.transpose(1, 2))
        f = f[0] if isinstance(f, tuple) else f
        pce = m.encoder.pos_conv_embed
        w = pce.conv.weight[:, :, :65]
        pos = torch.nn.functional.conv1d(
            torch.nn.functional.pad(f.transpose(1, 2), (64, 0)), w, pce.conv.bias, groups=pce.conv.groups
        )
        h = f + pce.activation(pos).transpose(1, 2)
        if not cfg.do_stable_layer_norm:
            h = m.encoder.layer_norm(h)
        t = h.shape[1]
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        allowed = (j <= i) & (j > i - window)
        mask = torch.zeros(t, t).masked_fill(~allowed, float("-inf"))[None, None]
        out = [h]
        for layer in m.encoder.layers:
            h = layer(h, attention_mask=mask)
            h = h[0] if isinstance(h, tuple) else h
            out.append(h)
    full = torch.stack(out, 2)[0].numpy()
    return full[: ssl_num_frames(len(wave))]


# ---------------------------------------------------------------------------------- 1. equality with HF


@pytest.mark.parametrize("name", list(VARIANTS))
def test_none_mode_equals_transformers_forward(models, name):
    loaded = models[name]
    wave = speechlike(3.3, seed=1)
    ref = hf_hidden_states(loaded, wave)
    out = extract_ssl(loaded, wave, mode="none", dtype="float32")
    assert out.shape == (ssl_num_frames(len(wave)), 3, 32)
    diff = np.abs(out - ref[: len(out)]).max()
    print(f"[{name}] none vs transformers hidden_states: max abs diff {diff:.2e}")
    assert diff < 1e-5


def test_attention_mode_equals_transformers_is_causal_for_wav2vec2(models):
    """Wav2Vec2Model honours is_causal=True: an independent check of our causal single window."""
    loaded = models["wav2vec2-base"]
    wave = speechlike(2.5, seed=2)
    x = torch.from_numpy(np.concatenate([np.zeros(80, np.float32), wave]))[None]
    with torch.no_grad():
        ref = torch.stack(loaded.model(x, output_hidden_states=True, is_causal=True).hidden_states, 2)[0]
    out = extract_ssl(loaded, wave, mode="attention", dtype="float32")
    assert np.abs(out - ref.numpy()[: len(out)]).max() < 1e-5


def test_wavlm_none_mode_and_causal_refusal(tmp_path):
    torch.manual_seed(7)
    cfg = transformers.WavLMConfig(**TINY, num_buckets=32, max_bucket_distance=100)
    transformers.WavLMModel(cfg).save_pretrained(str(tmp_path))
    loaded = load_ssl_model(str(tmp_path))
    assert loaded.kind == "wavlm"
    wave = speechlike(2.0, seed=3)
    out = extract_ssl(loaded, wave, mode="none", dtype="float32")
    assert np.abs(out - hf_hidden_states(loaded, wave)[: len(out)]).max() < 1e-5
    for mode in ("attention", "strict"):
        with pytest.raises(NotImplementedError, match="WavLM"):
            extract_ssl(loaded, wave, mode=mode)


# ------------------------------------------------------------------------------------ 2. shapes/dtypes


def test_shapes_dtypes_and_layer_subset(models):
    loaded = models["hubert-base"]
    wave = speechlike(3 * 1280 / SR + 1000 / SR, seed=4)  # 3 whole head frames + 1000 samples
    assert ssl_num_frames(len(wave)) == 12
    for mode in ("none", "attention", "strict"):
        out = extract_ssl(loaded, wave, mode=mode)
        assert out.shape == (12, 3, 32) and out.dtype == np.float16
        full = extract_ssl(loaded, wave, mode=mode, dtype="float32")
        sub = extract_ssl(loaded, wave, mode=mode, dtype="float32", layers=[2, 0])
        assert sub.shape == (12, 2, 32)
        np.testing.assert_allclose(sub, full[:, [2, 0]], atol=1e-6)
        last = extract_ssl(loaded, wave, mode=mode, dtype="float32", layers=[-1])
        np.testing.assert_allclose(last[:, 0], full[:, 2], atol=1e-6)
        bf = extract_ssl(loaded, wave, mode=mode, dtype="bfloat16")
        assert bf.dtype == np.uint16
        np.testing.assert_allclose(bf16_to_float32(bf), full, atol=2e-2 * np.abs(full).max())
        blocks = list(iter_ssl(loaded, wave, mode=mode, dtype="float32"))
        np.testing.assert_array_equal(np.concatenate(blocks), full)
    assert extract_ssl(loaded, wave[:1279], mode="none").shape == (0, 3, 32)
    assert extract_ssl(loaded, wave[:1280], mode="strict").shape == (4, 3, 32)
    with pytest.raises(ValueError):
        extract_ssl(loaded, wave, mode="causal")
    with pytest.raises(ValueError):
        extract_ssl(loaded, wave, mode="none", layers=[3])
    with pytest.raises(ValueError):
        extract_ssl(loaded, np.stack([wave, wave]), mode="none")


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).mean() / np.abs(ref).mean())


@contextlib.contextmanager
def _bf16_rounding_model(model):
    """Emulate a correct bf16 kernel on every nn.Linear of the transformer layers in float32: weights,
    bias, input and output rounded to bfloat16, products accumulated in float32."""
    def to_bf16(t):
        return t.to(torch.bfloat16).float()

    linears = [m for m in model.encoder.layers.modules() if isinstance(m, torch.nn.Linear)]
    saved = [(m.weight.data.clone(), None if m.bias is None else m.bias.data.clone()) for m in linears]
    hooks = []
    for m in linears:
        m.weight.data = to_bf16(m.weight.data)
        if m.bias is not None:
            m.bias.data = to_bf16(m.bias.data)
        hooks.append(m.register_forward_pre_hook(lambda _m, args: (to_bf16(args[0]),)))
        hooks.append(m.register_forward_hook(lambda _m, _args, out: to_bf16(out)))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for m, (w, b) in zip(linears, saved, strict=True):
            m.weight.data = w
            if b is not None:
                m.bias.data = b


@pytest.mark.parametrize("name", ["hubert-base", "wav2vec2-preln"])
def test_autocast_lowers_only_linear_layers(models, name, monkeypatch):
    """Convs on the waveform, norms, the positional conv and the attention softmax see float32 under
    CPU bf16 autocast (which ops autocast lowers differs by CPU); the transformer's linear layers run in bf16."""
    loaded = models[name]
    seen: dict[str, set] = {}

    def record(kind):
        return lambda _m, args: seen.setdefault(kind, set()).add(args[0].dtype)

    kinds = {torch.nn.Conv1d: "conv", torch.nn.GroupNorm: "norm", torch.nn.LayerNorm: "norm"}
    hooks = [m.register_forward_pre_hook(record(kinds[type(m)]))
             for m in loaded.model.modules() if type(m) in kinds]
    hooks += [m.register_forward_hook(lambda _m, _a, out: seen.setdefault("linear out", set()).add(out.dtype))
              for m in loaded.model.encoder.layers.modules() if isinstance(m, torch.nn.Linear)]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.setdefault("attention", set()).update({q.dtype, k.dtype, v.dtype})
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    try:
        for mode in ("none", "attention", "strict"):
            extract_ssl(loaded, speechlike(1.0, seed=3), mode=mode, dtype="float32", autocast="bfloat16")
    finally:
        for h in hooks:
            h.remove()
    assert seen["conv"] == seen["norm"] == seen["attention"] == {torch.float32}, seen
    assert seen["linear out"] == {torch.bfloat16}, seen


@pytest.mark.parametrize("name", ["hubert-base", "wav2vec2-preln"])
def test_cpu_bf16_autocast_error_is_rounding_error(models, name):
    """Autocast differs from float32 by no more than bf16 rounding of the linear layers explains.

    The emulation rounds exactly what a correct bf16 kernel rounds (operands and result, float32
    accumulation), so the two differ from float32 by errors of the same size; a kernel that
    accumulated in bf16, or an error-amplifying op left in bf16, exceeds the factor 2 by far.
    The emulated error itself depends on how random weights amplify perturbations, hence no fixed bound.
    """
    loaded = models[name]
    wave = speechlike(2.0, seed=11)
    for mode in ("none", "attention", "strict"):
        ref = extract_ssl(loaded, wave, mode=mode, dtype="float32")
        bf = extract_ssl(loaded, wave, mode=mode, dtype="float32", autocast="bfloat16")
        with _bf16_rounding_model(loaded.model):
            emulated = extract_ssl(loaded, wave, mode=mode, dtype="float32")
        rel, rel_emulated = _rel(bf, ref), _rel(emulated, ref)
        print(f"[{name}] {mode}: bf16 autocast vs fp32 mean relative diff {rel:.2e} "
              f"(bf16 rounding model: {rel_emulated:.2e})")
        assert rel_emulated > 0 and rel <= 2 * rel_emulated


# ------------------------------------------------------------------------- 3. strict: streaming exactness


@pytest.mark.parametrize("name", ["hubert-base", "wav2vec2-preln"])
def test_strict_streaming_any_push_sizes(models, name):
    loaded = models[name]
    wave = speechlike(3.0, seed=5)
    window_s = 0.5  # 25 frames: the caches wrap many times within 3 s
    ref = extract_ssl(loaded, wave, mode="strict", window_s=window_s, chunk_s=1.0, dtype="float32")
    assert ref.shape == (148, 3, 32)  # 48000 samples = 37.5 head frames -> 37 whole ones

    def stream(sizes, **kw):
        s = StreamingSSL(loaded, window_s=window_s, dtype="float32", **kw)
        parts, i = [], 0
        for k in sizes:
            parts.append(s.push(wave[i : i + k]))
            assert parts[-1].shape[0] % 4 == 0
            i += k
            if i >= len(wave):
                break
        parts.append(s.flush())
        return np.concatenate(parts)

    rng = np.random.default_rng(0)
    cases = {
        "1280": stream([1280] * 1000),
        "random": stream(rng.integers(1, 7000, size=10_000).tolist()),
        "whole": stream([len(wave)]),
        "whole, small blocks": stream([len(wave)], max_block_frames=12, cnn_block_frames=5, query_block=7),
    }
    short = wave[:6000]  # 1-sample pushes on a short input (4 head frames)
    s = StreamingSSL(loaded, window_s=window_s, dtype="float32")
    one = np.concatenate([s.push(short[i : i + 1]) for i in range(len(short))] + [s.flush()])
    assert one.shape == (16, 3, 32)
    cases["1 sample"] = one
    for label, out in cases.items():
        diff = np.abs(out - ref[: len(out)]).max()
        print(f"[{name}] strict stream push={label}: max abs diff vs extract_ssl {diff:.1e}")
        assert diff < 1e-5, label


@pytest.mark.parametrize("name", ["hubert-base", "wav2vec2-base", "hubert-preln"])
def test_strict_equals_one_pass_reference(models, name):
    loaded = models[name]
    wave = speechlike(4.0, seed=6)
    for window_s, chunk_s in ((15.0, 1.0), (0.6, 1.3)):  # shorter and longer than the window
        out = extract_ssl(loaded, wave, mode="strict", window_s=window_s, chunk_s=chunk_s, dtype="float32")
        ref = strict_reference(loaded, wave, int(round(window_s * 50)))
        diff = np.abs(out - ref).max()
        print(f"[{name}] strict chunked (window {window_s}s, chunk {chunk_s}s) vs one pass: {diff:.1e}")
        assert diff < 1e-5


# ---------------------------------------------------------------------------------- 4. perturbations


def _perturbed(seconds=4.0, s=2 * SR + 517):
    wave = speechlike(seconds, seed=8)
    other = wave.copy()
    other[s:] = speechlike(seconds, seed=9)[s:]
    return wave, other, s


def _frame_diffs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(axis=(1, 2))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_strict_is_exactly_causal(models, name):
    loaded = models[name]
    wave, other, s = _perturbed()
    j0 = s // 320  # first frame whose window [320j-80, 320j+320) contains sample s
    assert 320 * j0 + 320 > s >= 320 * (j0 - 1) + 320
    a = extract_ssl(loaded, wave, mode="strict", chunk_s=1.1, dtype="float32")
    b = extract_ssl(loaded, other, mode="strict", chunk_s=1.1, dtype="float32")
    d = _frame_diffs(a, b)
    print(
        f"[{name}] strict, change at sample {s}: max diff frames <{j0}: {d[:j0].max():.1e}, frame {j0}: {d[j0]:.2e}"
    )
    assert d[:j0].max() < 1e-5
    assert d[j0] > 1e-3


@pytest.mark.parametrize("name", ["hubert-base", "hubert-preln"])
def test_attention_mode_leak_is_measured(models, name):
    loaded = models[name]
    wave, other, s = _perturbed()
    j0 = s // 320
    a = extract_ssl(loaded, wave, mode="attention", dtype="float32")
    b = extract_ssl(loaded, other, mode="attention", dtype="float32")
    d = _frame_diffs(a, b)
    changed = np.flatnonzero(d[:j0] > 1e-5)
    scale = np.abs(a).max(axis=(1, 2))
    rel = d[:j0] / scale[:j0]
    print(
        f"[{name}] attention, change at frame {j0}: {len(changed)} earlier frames change "
        f"(earliest {j0 - changed.min() if len(changed) else 0} frames before); "
        f"relative change: median {np.median(rel):.2e}, within 63 frames max {rel[j0 - 63 :].max():.2e}, "
        f"beyond 63 frames max {rel[: j0 - 63].max():.2e}"
    )
    if loaded.config.feat_extract_norm == "group":  # GroupNorm over the whole recording: every frame
        assert len(changed) == j0
    else:  # LayerNorm conv encoder: exactly the positional convolution's 63-frame look-ahead
        np.testing.assert_array_equal(changed, np.arange(j0 - 63, j0))


def test_none_mode_leak_is_measured(models):
    loaded = models["hubert-preln"]  # no GroupNorm: the leak is the attention's alone
    wave, other, s = _perturbed()
    j0 = s // 320
    a = extract_ssl(loaded, wave, mode="none", dtype="float32")
    b = extract_ssl(loaded, other, mode="none", dtype="float32")
    d = _frame_diffs(a, b)
    changed = int((d[:j0] > 1e-5).sum())
    print(f"[hubert-preln] none, change at frame {j0}: {changed} of {j0} earlier frames change")
    assert changed == j0


# ------------------------------------------------------------------------------------- 5. chunking


@pytest.mark.parametrize("name", ["hubert-base", "wav2vec2-preln"])
def test_chunked_vs_one_pass(models, name):
    loaded = models[name]
    wave = speechlike(6.0, seed=10)
    for mode in ("none", "attention", "strict"):
        one = extract_ssl(loaded, wave, mode=mode, chunk_s=60.0, dtype="float32")
        small = extract_ssl(loaded, wave, mode=mode, chunk_s=2.0, context_s=1.0, dtype="float32")
        full_ctx = extract_ssl(loaded, wave, mode=mode, chunk_s=2.0, context_s=6.0, dtype="float32")
        scale = float(one.std())
        d_small = float(np.abs(small - one).max())
        d_mean = float(np.abs(small - one).mean())
        d_full = float(np.abs(full_ctx - one).max())
        print(
            f"[{name}] {mode}: chunk 2 s/context 1 s vs one pass: max {d_small:.2e} mean {d_mean:.2e} "
            f"(feature std {scale:.2f}, max/std {d_small / scale:.3f}); context 6 s: max {d_full:.1e}"
        )
        assert d_full < 1e-5  # enough context to cover the whole input: identical definition
        if mode == "strict":
            assert d_small < 1e-5  # chunk size never changes strict features
        else:
            assert d_small > 1e-5  # finite context really is a different (documented) computation
            assert d_mean < 0.25 * scale


# ----------------------------------------------------------------------------------------- 6. loading


def test_load_metadata_and_spec(models, model_dirs):
    loaded = models["hubert-base"]
    assert loaded.kind == "hubert" and models["wav2vec2-base"].kind == "wav2vec2"
    assert loaded.num_hidden_states == 3 and loaded.hidden_size == 32 and loaded.device == "cpu"
    assert loaded.model_id == model_dirs["hubert-base"]
    assert loaded.transformers_version == transformers.__version__
    folder = Path(model_dirs["hubert-base"])
    lines = "".join(f"{name} {hashlib.sha256((folder / name).read_bytes()).hexdigest()}\n"
                    for name in ("config.json", "model.safetensors"))  # config and weights, by content
    assert loaded.weights_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert not loaded.model.training
    s1 = ssl_spec(loaded, "strict")
    assert s1["weights_sha256"] == loaded.weights_sha256 and s1["window_frames"] == 750
    assert ssl_spec(loaded, "strict", chunk_s=5) == s1  # push size does not change strict outputs
    assert ssl_spec(loaded, "strict", window_s=10) != s1
    assert ssl_spec(loaded, "none") != ssl_spec(loaded, "attention")
    assert ssl_spec(loaded, "none", layers=[0]) != ssl_spec(loaded, "none")
    assert ssl_spec(loaded, "none", dtype="float32") != ssl_spec(loaded, "none")


def test_load_errors_name_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "does-not-exist"
    with pytest.raises(SSLModelError, match="does-not-exist") as e:
        load_ssl_model(str(missing))
    assert "config.json" in str(e.value)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    transformers.HubertConfig(**TINY).save_pretrained(str(empty))
    with pytest.raises(SSLModelError, match="no-weights.*weight"):
        load_ssl_model(str(empty))
    with pytest.raises(SSLModelError, match="nobody/no-such-model"):
        load_ssl_model("nobody/no-such-model")
