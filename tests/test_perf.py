"""`bench perf` on CPU: every figure present and consistent, the training step itself timed."""

from __future__ import annotations

import json

import pytest
import torch

from bench import perf
from bench.cli import main
from bench.train import use_compile


def test_cli_json_on_cpu(capsys):
    """Two methods, real data path and synthetic data: figures are positive and agree."""
    argv = ["perf", "--methods", "mae,qbheat", "--dataset", "digits", "--batch", "16",
            "--steps", "1", "--warmup", "1", "--device", "cpu", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["mae", "qbheat"]
    for r in rows:
        assert r["samples_per_s_data"] > 0 and r["samples_per_s_synthetic"] > 0
        assert r["epoch_s_data"] == pytest.approx(1437 / r["samples_per_s_data"])
        assert r["gflops_per_sample"] > 0.01 and r["mfu"] is None  # no peak known for a CPU
        assert r["achieved_tflops"] == pytest.approx(
            r["gflops_per_sample"] * r["samples_per_s_synthetic"] / 1e3
        )
        assert 0 < r["fill_share"] and r["peak_mem_bytes"] > 0 and len(r["load_avg"]) == 3
        assert r["compile"] is False and r["device"].startswith("cpu")
    table = perf.format_table(rows)
    assert table.splitlines()[1].startswith("mae") and "compile off" in table
    assert "load average" in table


def test_synthetic_image_size_has_no_data_path():
    rows = perf.measure(perf.PerfOptions(methods=["interp"], image_size=64, batch=4, steps=1,
                                         warmup=1, device="cpu"))
    (r,) = rows
    assert r["image_size"] == 64 and r["dataset"] is None
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
