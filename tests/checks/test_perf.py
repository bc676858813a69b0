"""`bench perf` and the FLOP count every report shows: the count against an analytic one for
a whole (tiny) pretraining step, the CLI on image and text data, the peak table."""

from __future__ import annotations

import json

import pytest
import torch

from bench.checks import perf
from bench.cli import main
from bench.core.config import RunConfig
from bench.core.spec import DataSpec
from bench.models.build import build_model
from bench.run.hooks import watching
from bench.run.step import pretrain_flops_per_sample, use_compile
from tests.helpers import RowsSeen


def _linear(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def _block(tokens: int, dim: int) -> int:
    """One ViT block, forward + backward: its linears (qkv, proj, 2 x MLP at ratio 4) 3x their
    forward (input and weight gradients), attention (QK^T and AV) 3.5x (torch's backward
    formula: five products for the forward's two)."""
    linears = _linear(tokens, dim, 3 * dim) + _linear(tokens, dim, dim) + 2 * _linear(tokens, dim, 4 * dim)
    attention = 2 * (2 * tokens * tokens * dim)
    return 3 * linears + 7 * attention // 2


def test_flop_count_matches_an_analytic_count():
    """MAE on an 8x8 grid of 4-px 1-channel patches, vit-micro (dim 128, depth 4) encoding 16
    visible tokens, a 1-block 64-wide decoder over all 64: the patch embedding (all patches,
    weight gradient only: 2x), 4 encoder blocks on 16 tokens, the projection and the 64-pixel
    head (3x), 1 decoder block on 64 tokens. Attention counted on the CPU too."""
    spec = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
    model = build_model(RunConfig(method="mae", decoder_dim=64, decoder_depth=1,
                                  decoder_heads=2), spec)
    n, k, d_enc, d_dec, pixels = 64, 16, 128, 64, 16
    expected = (2 * _linear(n, pixels, d_enc) + 4 * _block(k, d_enc)
                + 3 * _linear(k, d_enc, d_dec) + _block(n, d_dec) + 3 * _linear(n, d_dec, pixels))
    assert pretrain_flops_per_sample(model, torch.randn(2, 1, 32, 32)) == expected


@pytest.mark.parametrize("dataset,size", [("digits", "32 px"), ("kjv-verses", "8 tokens")])
def test_cli_json_on_cpu_times_the_training_step(capsys, dataset, size):
    """Image and text data, the real data path and synthetic inputs; the timed step is the
    training loop's own TrainStep (warm-up + timed steps, per data source and method)."""
    if dataset == "kjv-verses":
        from tests.helpers import require_bible

        require_bible()
    seen = RowsSeen()
    argv = ["perf", "--methods", "mae,qbheat", "--dataset", dataset, "--batch", "8",
            "--steps", "2", "--warmup", "1", "--device", "cpu", "--json", "--no-progress",
            "vocab_size=300", "block_length=8"] if dataset == "kjv-verses" else [
            "perf", "--methods", "mae,qbheat", "--dataset", dataset, "--batch", "8",
            "--steps", "2", "--warmup", "1", "--device", "cpu", "--json", "--no-progress"]
    with watching(seen):
        assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["mae", "qbheat"]
    assert seen.rows == [8] * (2 * 2 * 3)  # 2 methods x (synthetic + data) x (1 warm-up + 2 timed)
    for r in rows:
        assert r["input"] == size and r["dataset"] == dataset and r["mfu"] is None  # CPU: no peak
        assert r["samples_per_s_data"] > 0 and r["samples_per_s_synthetic"] > 0
        assert r["gflops_per_sample"] > 0 and 0 < r["fill_share"] and r["peak_mem_bytes"] > 0
        assert r["compile"] is False and r["device"].startswith("cpu") and len(r["load_avg"]) == 3
    assert "load average" in perf.format_table(rows) and size in perf.format_table(rows)


def test_synthetic_image_size_has_no_data_path():
    rows = perf.measure(perf.PerfOptions(methods=["interp"], image_size=64, batch=4, steps=1,
                                         warmup=1, device="cpu"))
    (r,) = rows
    assert r["input"] == "64 px" and r["dataset"] is None
    assert r["samples_per_s_data"] is None and r["epoch_s_data"] is None
    assert "n/a" in perf.format_table(rows)


def test_peak_table_and_compile_default(monkeypatch):
    assert perf.peak_tflops(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert perf.peak_tflops(torch.device("cuda")) == 989.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert perf.peak_tflops(torch.device("cuda")) is None
    assert use_compile(None, torch.device("cuda")) and not use_compile(None, torch.device("cpu"))
    assert not use_compile(False, torch.device("cuda")) and use_compile(True, torch.device("cpu"))


def test_compile_mode_and_precision_flags(capsys):
    """`--precision bf16` autocasts the timed steps on the CPU too; `--compile-mode` is recorded
    with the rows of a compiled step only (here none: compilation is off on the CPU)."""
    argv = ["perf", "--methods", "mae", "--dataset", "digits", "--batch", "4", "--steps", "1",
            "--warmup", "0", "--device", "cpu", "--json", "--compile-mode", "reduce-overhead"]
    assert main([*argv, "--precision", "bf16"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["bf16"] is True and row["compile"] is False and row["compile_mode"] is None
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)[0]["bf16"] is False


@pytest.mark.parametrize("size, patch, grid", [(32, 2, "16x16"), (224, 8, "28x28")])
def test_fill_cost_on_bigger_grids(size, patch, grid):
    """propagate's cost per step on the bigger grids: the run field patch_size sets the
    synthetic grid; the row and the table say which grid, the fill's ms and its share."""
    rows = perf.measure(perf.PerfOptions(methods=["qbheat"], image_size=size, batch=2, steps=1,
                                         warmup=0, device="cpu",
                                         settings={"patch_size": patch, "decoder_dim": 32,
                                                   "decoder_heads": 2, "decoder_depth": 1}))
    (r,) = rows
    assert r["grid"] == grid and r["fill_ms"] > 0 and 0 < r["fill_share"] < 1
    table = perf.format_table(rows)
    assert f"{grid} grid" in table and "fill ms" in table
