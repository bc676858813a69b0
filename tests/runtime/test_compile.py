"""torch.compile of the training step on the CPU: inductor (C++ code generation) for every method,
compared with eager float32; the compile mode reaching torch.compile; the inductor cache of a
results folder.

Inductor spends about 4 s of g++ CPU time per kernel here (its header alone), so every compiled
test here and in test_distributed.py (marked `inductor`) uses the same model and per-process
batch (digits 32 px, vit-micro, decoder 64/1/2, 32 samples): the three methods share their
encoder and decoder kernels through inductor's on-disk cache, and the CLI and DDP runs reuse the
mae step's (README, "The GPU check", has the figures).

Tolerance: inductor fuses and reorders float32 arithmetic, so one step's loss and gradient norms
differ from eager ones by rounding only (about 1e-6 relative); 1e-4 leaves a margin.
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.checks import agreement
from bench.core.config import RunConfig
from bench.plan.sweep import resolve_run
from bench.run.step import TrainStep
from bench.run.train import train_run
from bench.runtime import compiling
from tests.helpers import tiny_config

COMPILED = dict(batch_size=32, decoder_dim=64, decoder_depth=1, decoder_heads=2)  # see above
RTOL = 1e-4


@pytest.mark.inductor
@pytest.mark.parametrize("method", ["qbheat", "mae", "interp"])
def test_inductor_step_equals_eager(digits, method):
    """TrainStep(compile=True) with inductor: loss and gradient norms of 3 mask draws equal eager
    float32 within RTOL, with no recompilation and no graph break on new masks."""
    cfg = resolve_run(tiny_config(method=method, **COMPILED))
    result = agreement.step_agreement(cfg, digits.spec, torch.device("cpu"), backend="inductor",
                                     compiled_precision="fp32", loss_rtol=RTOL, grad_rtol=RTOL)
    assert result["recompiled"] is None and result["graph_breaks"] == 0
    assert len(result["draws"]) == agreement.DRAWS
    assert result["loss_rel"] <= RTOL and result["grad_rel"] <= RTOL and result["pass"]
    losses = [d["eager"]["loss"] for d in result["draws"]]
    assert len(set(losses)) == agreement.DRAWS  # new masks each time: the check is not vacuous


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.compile as bench.runtime.compiling calls it, recorded; the module is returned uncompiled."""
    calls = []

    def spy(net, **kwargs):
        calls.append(kwargs)
        return net

    monkeypatch.setattr(compiling.torch, "compile", spy)
    return calls


def test_compile_mode_reaches_torch_compile(tmp_path, digits, compile_calls):
    """`compile_mode` goes from the run's settings through the step to torch.compile; it is a
    speed knob, not part of the run's identity; the default is torch's own default mode."""
    cfg = resolve_run(tiny_config(epochs=1, compile=True, compile_mode="reduce-overhead",
                                  protocols="knn"))
    assert train_run(cfg, tmp_path / "run", progress=False, data=digits)["status"] == "ok"
    assert compile_calls == [{"mode": "reduce-overhead", "backend": "inductor"}]
    assert cfg.run_id == resolve_run(tiny_config(epochs=1, protocols="knn")).run_id
    assert RunConfig().compile_mode == "default"
    model = torch.nn.Linear(2, 2)
    TrainStep(model, torch.optim.SGD(model.parameters()), torch.device("cpu"), compile=True)
    assert compile_calls[-1] == {"mode": "default", "backend": "inductor"}
    TrainStep(model, torch.optim.SGD(model.parameters()), torch.device("cpu"), compile=False)
    assert len(compile_calls) == 2


def test_cuda_graphs_only_in_their_modes_on_cuda():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compiling.uses_cuda_graphs("reduce-overhead", cuda)
    assert compiling.uses_cuda_graphs("max-autotune", cuda)
    assert not compiling.uses_cuda_graphs("default", cuda)
    assert not compiling.uses_cuda_graphs("max-autotune-no-cudagraphs", cuda)
    assert not compiling.uses_cuda_graphs("reduce-overhead", cpu)


def test_sweeps_get_their_inductor_cache_unless_the_user_chose_one(tmp_path, monkeypatch):
    """OUT/.inductor-cache, or $TORCHINDUCTOR_CACHE_DIR as it was when bench was imported
    (importing timm makes torch set its own default, which must not count as a choice)."""
    import bench

    monkeypatch.setattr(bench, "USER_INDUCTOR_CACHE", None)
    assert compiling.sweep_cache(tmp_path / "out") == str(tmp_path / "out" / ".inductor-cache")
    monkeypatch.setattr(bench, "USER_INDUCTOR_CACHE", str(tmp_path / "mine"))
    assert compiling.sweep_cache(tmp_path / "out") == str(tmp_path / "mine")
    monkeypatch.setenv(compiling.CACHE_ENV, "before")
    compiling.use_cache(None)
    assert os.environ[compiling.CACHE_ENV] == "before"
    compiling.use_cache(str(tmp_path / "c"))
    assert os.environ[compiling.CACHE_ENV] == str(tmp_path / "c")
