"""pipeline.runtime: the allocator setting applies on glibc and leaves results unchanged."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pipeline import neurons
from pipeline.spec import NeuronParams

SCRIPT = """
import sys, torch
from pipeline.models import build_model
from pipeline.spec import MODEL_PRESETS, ModelSpec
if sys.argv[1] == "tuned":
    from pipeline.runtime import keep_freed_memory
    assert keep_freed_memory()
torch.manual_seed(0)
m = build_model(ModelSpec(time_steps=16, arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6,
                          **MODEL_PRESETS["dsqn"])).eval()
for layer in m.layers:  # scale the weights up so every layer spikes
    layer[-1].weight.data *= 8
x = torch.rand(2, 4, 84, 84, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    q, spikes, _ = m.run(x)
assert all(float(s.mean()) > 0 for s in spikes), [float(s.mean()) for s in spikes]
sys.stdout.write(q.numpy().tobytes().hex())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_keep_freed_memory_same_q_bits() -> None:
    out = {mode: subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                                check=True, timeout=120).stdout for mode in ("default", "tuned")}
    assert out["default"] and out["default"] == out["tuned"]


@pytest.mark.parametrize("model, reset, v_reset", [("lif", "hard", 0.0), ("lif", "hard", -0.5),
                                                   ("lif", "soft", 0.0), ("if", "soft", 0.0),
                                                   ("if", "hard", 0.25)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_inference_loop_equals_autograd_path(model: str, reset: str, v_reset: float,
                                                   dtype: torch.dtype) -> None:
    """The numpy inference loop and the autograd (training) loop give the same spikes and V."""
    p = NeuronParams(model, 2.0 if model == "lif" else 1.0, 1.0, v_reset, reset)
    g = torch.Generator().manual_seed(3)
    current = (torch.randn(24, 3, 50, generator=g) * 1.5 + 0.5).to(dtype)
    fast_s, fast_v = neurons.spiking_layer(current, p)
    slow_s, slow_v = neurons.spiking_layer(current.clone().requires_grad_(True), p)
    assert fast_s.dtype == dtype and 0 < float(fast_s.mean()) < 1
    assert torch.equal(fast_s, slow_s.detach()) and torch.equal(fast_v, slow_v.detach())
    torch_s, torch_v = neurons._spiking_layer_inference_torch(current, p)
    assert torch.equal(fast_s, torch_s) and torch.equal(fast_v, torch_v)
    expanded = current[:1].expand(24, 3, 50)  # stride-0 constant input, as the first layer sees
    a, va = neurons.spiking_layer(expanded, p)
    b, vb = neurons.spiking_layer(expanded.contiguous().requires_grad_(True), p)
    assert torch.equal(a, b.detach()) and torch.equal(va, vb.detach())
