"""`LHGModel.prefill` advances a streaming state by many frames in one parallel call: the same predictions
and the same state as stepping frame by frame (the generation benchmark measures a step at a long
context from it, and three frames per call with it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pipeline.model.network import LHGModel, ModelConfig  # noqa: E402

# float64: the parallel and the sequential paths only differ in the order of float additions, which
# moves results by a few ulps per operation (~1e-16 relative), far below this bound
TOL = 1e-9


def _model(arch: str) -> LHGModel:
    torch.manual_seed(0)
    gains = [0.7 + 0.1 * i for i in range(12)]
    cfg = ModelConfig(arch=arch, n_blocks=2, width=32, n_heads=4, dropout=0.0, max_len=256, delta_gains=gains)
    return LHGModel(cfg).double().eval()


def _inputs(model: LHGModel, frames: int):
    g = torch.Generator().manual_seed(1)
    speech = torch.randn(2, frames, *model.cfg.speech_shape, generator=g, dtype=torch.float64)
    speaker = torch.randn(2, frames, 18, generator=g, dtype=torch.float64)
    listener = torch.randn(2, frames, 18, generator=g, dtype=torch.float64)
    return speech, speaker, listener


def _steps(model, inputs, state, a: int, b: int):
    preds = []
    for t in range(a, b):
        pred, state = model.step(*(x[:, t] for x in inputs), state)
        preds.append(pred)
    return torch.stack(preds, dim=1), state


@pytest.mark.parametrize("arch", ["lstm_transformer", "transformer"])
def test_prefill_then_step_equals_stepping_from_zero(arch):
    model = _model(arch)
    inputs = _inputs(model, 100)
    with torch.no_grad():
        stepped, _ = _steps(model, inputs, model.init_state(2), 0, 100)
        # a long context in chunks (one crossing the KV cache's first capacity of 64), then streaming
        pre, state = model.prefill(*(x[:, :70] for x in inputs), model.init_state(2), chunk=30)
        after, _ = _steps(model, inputs, state, 70, 100)
        assert state["t"] == 70
        assert torch.allclose(pre, stepped[:, :70], rtol=0, atol=TOL)
        assert torch.allclose(after, stepped[:, 70:], rtol=0, atol=TOL)
        # three frames per call from the middle of a stream, as a generation step consuming 3 frames
        _, state = _steps(model, inputs, model.init_state(2), 0, 10)
        three = []
        for a in range(10, 100, 3):
            pred, state = model.prefill(*(x[:, a:a + 3] for x in inputs), state)
            three.append(pred)
        assert torch.allclose(torch.cat(three, dim=1), stepped[:, 10:], rtol=0, atol=TOL)


def test_prefill_refuses_frames_past_the_positional_table():
    model = _model("transformer")
    inputs = _inputs(model, 257)
    with torch.no_grad(), pytest.raises(ValueError, match="exceeds max_len=256"):
        model.prefill(*inputs, model.init_state(2))
