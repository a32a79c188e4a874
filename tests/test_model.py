"""LHG model: streaming == full forward, generation, SSL layer weights, overfitting, loss, checkpoints."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pipeline.model.checkpoints import verify_checkpoint  # noqa: E402
from pipeline.model.network import (  # noqa: E402
    CONTEXT_FRAMES,
    LHGModel,
    ModelConfig,
    generate,
    load_checkpoint,
    masked_huber_loss,
    save_checkpoint,
    target_frames,
)

L_SSL, D_SSL = 3, 8


def tiny_cfg(arch: str, speech: str = "fbank", **kw) -> ModelConfig:
    base = dict(arch=arch, n_blocks=2, width=32, n_heads=4, max_len=128, speech=speech)
    if speech != "fbank":
        base.update(ssl_layers=L_SSL, ssl_dim=D_SSL)
    base.update(kw)
    return ModelConfig(**base)


def random_inputs(cfg: ModelConfig, b: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    speech = torch.randn(b, t, *cfg.speech_shape, generator=g)
    speaker = torch.randn(b, t, cfg.head_dim, generator=g)
    listener = torch.randn(b, t, cfg.head_dim, generator=g)
    return speech, speaker, listener


ALL = [(a, s) for a in ("lstm_transformer", "transformer") for s in ("fbank", "ssl_concat", "ssl_wa")]


@pytest.mark.parametrize(("arch", "speech"), ALL)
def test_streaming_equals_forward(arch, speech):
    torch.manual_seed(0)
    cfg = tiny_cfg(arch, speech)
    model = LHGModel(cfg).eval()
    sp, spk, lis = random_inputs(cfg, 2, 40)
    with torch.no_grad():
        full = model(sp, spk, lis)
        assert full.shape == (2, 40, 3, 18)
        state = model.init_state(2)
        for t in range(40):
            pred, state = model.step(sp[:, t], spk[:, t], lis[:, t], state)
            torch.testing.assert_close(pred, full[:, t], atol=1e-5, rtol=0)


def test_forward_is_causal():
    torch.manual_seed(0)
    for arch in ("lstm_transformer", "transformer"):
        model = LHGModel(tiny_cfg(arch)).eval()
        sp, spk, lis = random_inputs(model.cfg, 1, 20)
        with torch.no_grad():
            a = model(sp, spk, lis)
            lis2 = lis.clone()
            lis2[:, 10:] += 1.0
            b = model(sp, spk, lis2)
        torch.testing.assert_close(a[:, :10], b[:, :10])
        assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_head_view_is_causal_differences_and_ignores_stored_derivatives():
    gains = [2.0] * 6 + [0.5] * 6
    model = LHGModel(tiny_cfg("lstm_transformer", delta_gains=gains)).eval()
    s = torch.tensor([0.0, 1.0, 3.0, 6.0]).view(1, 4, 1).repeat(1, 1, 6)
    head = torch.cat([s, torch.randn(1, 4, 12)], dim=-1)  # stored derivative channels: anything
    view = model.head_view(head)
    torch.testing.assert_close(view[0, :, 0], s[0, :, 0])
    torch.testing.assert_close(view[0, :, 6], torch.tensor([0.0, 2.0, 4.0, 6.0]))  # 2 x backward difference
    torch.testing.assert_close(view[0, :, 12], torch.tensor([0.0, 1.0, 1.0, 1.0]))  # 0.5 x difference of d
    # the model never sees the stored (centred, look-ahead) derivatives, in forward or in step
    sp, spk, lis = random_inputs(model.cfg, 1, 12)
    lis2, spk2 = lis.clone(), spk.clone()
    lis2[..., 6:] += 5.0
    spk2[..., 6:] -= 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(sp, spk, lis), model(sp, spk2, lis2))
    with pytest.raises(ValueError, match="delta_gains needs 12"):
        tiny_cfg("lstm_transformer", delta_gains=[1.0])


@pytest.mark.parametrize("arch", ["lstm_transformer", "transformer"])
def test_generate_matches_manual_loop(arch):
    torch.manual_seed(1)
    model = LHGModel(tiny_cfg(arch)).eval()
    b, t_total, c = 2, 30, 12
    sp, spk, lis = random_inputs(model.cfg, b, t_total, seed=3)
    out = generate(model, sp, spk, lis[:, :c], context_frames=c)
    assert out.shape == (b, t_total, 18)
    torch.testing.assert_close(out[:, :c], lis[:, :c], atol=0, rtol=0)

    with torch.no_grad():  # manual loop: feed context, then own predictions
        state = model.init_state(b)
        frames = [lis[:, i] for i in range(c)]
        for i in range(c):
            pred, state = model.step(sp[:, i], spk[:, i], frames[i], state)
        for i in range(c, t_total):
            frames.append(pred[:, 0])
            pred, state = model.step(sp[:, i], spk[:, i], frames[i], state)
    manual = torch.stack(frames, 1)
    torch.testing.assert_close(out, manual, atol=1e-6, rtol=0)

    out3 = generate(model, sp, spk, lis[:, :c], context_frames=c, advance=3)
    assert out3.shape == (b, t_total, 18)
    torch.testing.assert_close(out3[:, :c], lis[:, :c], atol=0, rtol=0)
    # first 3 generated frames come from the last context step in both modes
    with torch.no_grad():
        state = model.init_state(b)
        for i in range(c):
            pred, state = model.step(sp[:, i], spk[:, i], lis[:, i], state)
    torch.testing.assert_close(out3[:, c:c + 3], pred, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, c], pred[:, 0], atol=1e-6, rtol=0)
    assert torch.isfinite(out3).all()
    # generate restores training mode
    model.train()
    generate(model, sp, spk, lis[:, :c])
    assert model.training


def test_layer_weights_sum_to_one_and_learn():
    torch.manual_seed(0)
    model = LHGModel(tiny_cfg("lstm_transformer", "ssl_wa", dropout=0.0))
    w0 = model.layer_weights().detach().clone()
    assert w0.shape == (L_SSL,)
    torch.testing.assert_close(w0.sum(), torch.tensor(1.0))
    torch.testing.assert_close(w0, torch.full((L_SSL,), 1.0 / L_SSL))
    assert "speech_encoder.layer_logits" in model.state_dict()
    sp, spk, lis = random_inputs(model.cfg, 2, 16)
    sp[:, :, :, 0] *= 5.0  # make layers differ
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tgt, mask = target_frames(lis, None)
    loss = masked_huber_loss(model(sp, spk, lis), tgt, mask, context_frames=2)
    loss.backward()
    opt.step()
    w1 = model.layer_weights().detach()
    torch.testing.assert_close(w1.sum(), torch.tensor(1.0))
    assert not torch.allclose(w0, w1)
    with pytest.raises(AttributeError):
        LHGModel(tiny_cfg("lstm_transformer", "fbank")).layer_weights()


@pytest.mark.parametrize("arch", ["lstm_transformer", "transformer"])
def test_tiny_model_overfits(arch):
    torch.manual_seed(0)
    cfg = tiny_cfg(arch, width=64, dropout=0.0)
    model = LHGModel(cfg)
    g = torch.Generator().manual_seed(5)
    b, t = 4, 40
    speech = torch.randn(b, t, *cfg.speech_shape, generator=g) * 0.1
    # smooth speaker motion; listener = speaker delayed by 3 frames -> targets t+1..t+3 are known at t
    speaker = torch.cumsum(torch.randn(b, t + 3, 18, generator=g) * 0.3, dim=1)
    speaker = speaker - speaker.mean(1, keepdim=True)
    listener = speaker[:, :t]
    speaker = speaker[:, 3:]
    targets, mask = target_frames(listener, None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(200):
        loss = masked_huber_loss(model(speech, speaker, listener), targets, mask, context_frames=3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] * 10 <= losses[0], (losses[0], losses[-1])


def test_target_frames_and_masked_loss_hand_computed():
    # B=1, T=5, D=1 (values = frame index); frame 3 invalid
    lis = torch.arange(5.0).view(1, 5, 1)
    valid = torch.tensor([[True, True, True, False, True]])
    tgt, mask = target_frames(lis, valid, out_frames=3)
    assert tgt.shape == (1, 5, 3, 1) and mask.shape == (1, 5, 3)
    exp_mask = torch.tensor([[[1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]]], dtype=torch.bool)
    assert torch.equal(mask, exp_mask)
    exp_tgt = torch.tensor([[[1, 2, 0], [2, 0, 4], [0, 4, 0], [4, 0, 0], [0, 0, 0]]], dtype=torch.float32)
    torch.testing.assert_close(tgt[..., 0], exp_tgt)

    # prediction 0 everywhere: Huber(delta=1) of error e is 0.5 e^2 (|e|<=1) else |e| - 0.5
    pred = torch.zeros_like(tgt)
    huber = {1.0: 0.5, 2.0: 1.5, 4.0: 3.5}
    # context_frames=0: valid targets (t,k): (0,0)=1,(0,1)=2,(1,0)=2,(1,2)=4,(2,1)=4,(3,0)=4
    loss0 = masked_huber_loss(pred, tgt, mask, context_frames=0)
    exp0 = (huber[1] + huber[2] + huber[2] + huber[4] + huber[4] + huber[4]) / 6
    torch.testing.assert_close(loss0, torch.tensor(exp0))
    # context_frames=2: target frames 0,1 excluded -> (0,1)=2, (1,0)=2, (1,2)=4, (2,1)=4, (3,0)=4;
    # step 1 (the last context step) still predicts frame 2, the first generated frame
    loss2 = masked_huber_loss(pred, tgt, mask, context_frames=2)
    exp2 = (huber[2] + huber[2] + huber[4] + huber[4] + huber[4]) / 5
    torch.testing.assert_close(loss2, torch.tensor(exp2))
    # padding, masked-out targets and context targets (step 0 -> frame 1) must not matter
    pred_bad = pred.clone()
    pred_bad[~mask] = 1e6
    pred_bad[0, 0, 0] = -1e6
    torch.testing.assert_close(masked_huber_loss(pred_bad, tgt, mask, context_frames=2), torch.tensor(exp2))
    # nothing valid -> 0, not NaN
    assert masked_huber_loss(pred, tgt, mask, context_frames=5).item() == 0.0
    assert CONTEXT_FRAMES == 12


def test_channel_weights_give_a_weighted_mean():
    pred = torch.zeros(1, 3, 1, 2)
    tgt = torch.tensor([[[[0.5, 2.0]], [[0.5, 2.0]], [[0.5, 2.0]]]])  # Huber: 0.125 and 1.5
    mask = torch.ones(1, 3, 1, dtype=torch.bool)
    plain = masked_huber_loss(pred, tgt, mask, context_frames=0)
    torch.testing.assert_close(plain, torch.tensor((0.125 + 1.5) / 2))
    only_first = masked_huber_loss(pred, tgt, mask, context_frames=0, channel_weights=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(only_first, torch.tensor(0.125))
    tenth = masked_huber_loss(pred, tgt, mask, context_frames=0, channel_weights=torch.tensor([1.0, 0.1]))
    torch.testing.assert_close(tenth, torch.tensor((0.125 + 0.15) / 1.1))


@pytest.mark.parametrize(("arch", "speech"), [("lstm_transformer", "ssl_wa"), ("transformer", "fbank")])
def test_checkpoint_round_trip(tmp_path, arch, speech):
    torch.manual_seed(0)
    model = LHGModel(tiny_cfg(arch, speech)).eval()
    extra = {"normalization": {"head": {"mean": [0.0] * 18, "std": [1.0] * 18}}, "feature": speech}
    save_checkpoint(model, tmp_path / "ckpt", extra)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["checksums.json", "config.json", "model.safetensors"]
    for p in (tmp_path / "ckpt").iterdir():  # no pickle anywhere
        assert not p.read_bytes().startswith(b"\x80"), p
    assert verify_checkpoint(tmp_path / "ckpt") == []
    loaded, extra2 = load_checkpoint(tmp_path / "ckpt")
    loaded.eval()
    assert extra2 == extra
    assert loaded.cfg == model.cfg
    sp, spk, lis = random_inputs(model.cfg, 2, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sp, spk, lis), model(sp, spk, lis), atol=0, rtol=0)


def test_config_round_trip_and_validation():
    cfg = ModelConfig()
    assert (cfg.n_blocks, cfg.width, cfg.speech_frames, cfg.speech_in_dim) == (20, 1280, 8, 640)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    ssl = ModelConfig(speech="ssl_concat", ssl_layers=13, ssl_dim=768)
    assert ssl.speech_frames == 4 and ssl.speech_in_dim == 4 * 13 * 768
    assert ModelConfig(speech="ssl_wa", ssl_layers=13, ssl_dim=768).speech_in_dim == 4 * 768
    with pytest.raises(ValueError):
        ModelConfig(speech="ssl_wa")
    with pytest.raises(ValueError):
        ModelConfig(arch="rnn")
