"""bf16 autocast on the CPU: the run's `precision` reaches the training step of every method and
every evaluation protocol, and bf16 results stay close to float32 ones.

Tolerance: bf16 keeps 8 mantissa bits (0.4 % relative rounding per value); a loss or a pooled
feature averages many such values, so 5 % relative is a wide margin on these tiny models.
"""

from __future__ import annotations

import pytest
import torch

from bench.core.errors import ConfigError
from bench.core.spec import DataSpec
from bench.eval.pretext import masked_token_metrics
from bench.eval.probes import extract_features
from bench.models.pretrainer import MaskedPretrainer
from bench.models.vit import TransformerEncoder
from bench.plan.sweep import resolve_run
from bench.run.step import TrainStep
from bench.run.train import train_run
from bench.runtime import precision
from tests.helpers import CASES, ENCODER_D, SPECS, D, inputs, make, tiny_config

RTOL = 0.05
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_bf16_on_cuda_only_and_the_innermost_choice_wins():
    assert not precision.uses_bf16(CPU) and precision.uses_bf16(CUDA)
    with precision.chosen("bf16"):
        assert precision.uses_bf16(CPU) and precision.uses_bf16(CUDA)
        with precision.chosen("fp32"):
            assert not precision.uses_bf16(CPU) and not precision.uses_bf16(CUDA)
        with precision.autocast(CPU):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with precision.autocast(CPU):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ConfigError, match="precision='fp16': must be one of auto, bf16, fp32"):
        with precision.chosen("fp16"):
            pass


@pytest.mark.parametrize("name,modality,options", CASES)
def test_train_step_under_bf16_on_cpu(name, modality, options):
    """Every method's step under `precision=bf16` on the CPU: the decoder computes in bf16, and
    the loss is the float32 step's within RTOL (same weights, batch and masks)."""
    spec = SPECS[modality]
    torch.manual_seed(0)
    model = MaskedPretrainer(spec, TransformerEncoder(spec, ENCODER_D, 1, 2),
                             make(name, modality, options), D, 1, 2)
    x = inputs(modality, batch=4)
    seen = []
    model.decoder.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    losses = {}
    for p in ("fp32", "bf16"):
        step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), CPU, compile=False)
        with precision.chosen(p):
            losses[p] = step(x, torch.Generator().manual_seed(0)).item()
    assert seen == [torch.float32, torch.bfloat16]
    assert losses["bf16"] != losses["fp32"]  # bf16 did round
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=RTOL)


def test_every_protocol_runs_under_the_runs_precision(tmp_path, digits, monkeypatch):
    """A run with `precision=bf16` on the CPU autocasts in every protocol's forward passes
    (features for linear and kNN, tran1, fine-tuning, reconstruction) and in pretraining; the
    default run on the CPU in none. Metrics stay valid accuracies."""
    calls = []
    real = precision.autocast

    def spy(device):
        import inspect

        calls.append((inspect.stack()[1].function, precision.uses_bf16(device)))
        return real(device)

    monkeypatch.setattr(precision, "autocast", spy)  # every site calls precision.autocast
    summaries = {}
    for p in ("bf16", "auto"):
        calls.clear()
        cfg = resolve_run(tiny_config(epochs=1, precision=p, protocols="linear,knn,tran1,finetune",
                                      train_limit=64, tran1_epochs=1, finetune_epochs=1,
                                      tran1_min_steps=0, finetune_min_steps=0,
                                      probe_steps=5, eval_train_limit=64, eval_test_limit=32))
        summaries[p] = train_run(cfg, tmp_path / p, progress=False, data=digits)
        sites = {}
        for site, bf16 in calls:
            sites.setdefault(site, set()).add(bf16)
        assert {"__call__", "extract_features", "train_classifier", "_test_correct",
                "heldout_outputs"} <= set(sites)  # heldout_outputs: every held-out metric
        assert all(flags == {p == "bf16"} for flags in sites.values()), sites
    for s in summaries.values():
        assert s["status"] == "ok"
        for key in ("linear_top1", "knn_top1", "tran1_top1", "finetune_top1"):
            assert 0.0 <= s["metrics"][key] <= 1.0
    assert summaries["bf16"]["metrics"]["recon_loss"] == pytest.approx(
        summaries["auto"]["metrics"]["recon_loss"], rel=RTOL)


def test_bf16_features_and_masked_tokens_stay_close_to_float32(digits):
    """Frozen features (the linear and kNN probes' input) and the text masked-token metrics
    under bf16 on the CPU are the float32 ones within RTOL."""
    spec = DataSpec("text", (32,), vocab_size=50)
    torch.manual_seed(0)
    text = MaskedPretrainer(spec, TransformerEncoder(spec, ENCODER_D, 1, 2), make("mae", "text", {}),
                            D, 1, 2)
    blocks = inputs("text", batch=8)
    torch.manual_seed(0)
    image_encoder = TransformerEncoder(digits.spec, 32, 1, 2)
    split = digits.eval_split("test", 64)
    out = {}
    for p in ("fp32", "bf16"):
        with precision.chosen(p):
            out[p] = (
                extract_features(image_encoder, digits, split, 32, CPU, "f"),
                masked_token_metrics(text, blocks, 4, CPU, seed=0),
            )
    (f32, m32), (f16, m16) = out["fp32"], out["bf16"]
    assert f16.dtype == torch.float32 and not torch.equal(f16, f32)
    assert (f16 - f32).norm() <= RTOL * f32.norm()
    assert m16["recon_loss"] == pytest.approx(m32["recon_loss"], rel=RTOL)
