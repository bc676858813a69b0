"""scripts/gpu-check.sh: its smoke mode end to end on the CPU (so the GPU check cannot rot while
no GPU is lent), and the check's own arithmetic and failure detection."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.checks import agreement, gpucheck, timing
from bench.checks.perf import synthetic_spec
from bench.checks.timing import EpochClock, affordable_epochs, full_table_estimate, steady_epochs
from bench.core import store
from bench.plan.sweep import resolve_run
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_mode_runs_every_step_on_cpu(tmp_path):
    """`OUT=DIR scripts/gpu-check.sh --smoke`: exit 0, every check passes, the summary JSON is
    the last thing printed and is also in OUT with the log and the table's report, and every
    section holds its figures."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"), "MASKBENCH_DATA_WORKERS": "0"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--smoke"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = store.read_json(out / "gpu-check.json")
    printed = proc.stdout[proc.stdout.rindex("\n{\n") + 1:]
    assert json.loads(printed) == json.loads(json.dumps(summary))
    assert summary["passed"] and summary["complete"] and summary["smoke"]
    targets = summary["targets"]  # for one H100/H200: not judged on a CPU
    assert not targets["applies"] and all(t["met"] is None for k, t in targets.items()
                                          if k != "applies")
    assert (out / "gpu-check.log").read_text().count("PASS ") == 7
    assert (out / "table-report.md").read_text().startswith("#")
    c = summary["correctness"]
    assert {"step mae/vit-micro/digits/b4", "step qbheat/cnn-resnet-micro/32px/b4",
            "steps.jsonl mae", "streamed imagefolder"} == set(c)
    assert c["steps.jsonl mae"]["steps"] == 4 and c["streamed imagefolder"]["batches"] == 6
    (perf,) = summary["speed"].values()
    assert [r["method"] for r in perf["rows"]] == ["mae"]
    assert perf["rows"][0]["samples_per_s_data"] > 0 and perf["rows"][0]["fill_share"] > 0
    assert summary["epochs"]["mae"]["epoch_s"] > 0
    (table,) = summary["science"].values()
    assert table["epochs"] == 2 and table["runs"] == 3 and table["trained_runs"] == 1
    assert table["full_table_s"] > table["wall_s"] and not table["failed"]


def test_step_agreement_sees_the_same_batch_weights_and_masks():
    """Compiled (dynamo, eager backend) at float32 against eager float32: bit-identical, so
    both sides compute on the same batch, weights and mask draws; a changed mask shape on a
    later draw is caught as a recompilation."""
    cfg = resolve_run(tiny_config(method="mae", batch_size=2))
    spec = synthetic_spec(16)
    same = agreement.step_agreement(cfg, spec, torch.device("cpu"), backend="eager",
                                   compiled_precision="fp32")
    assert same["pass"] and same["loss_rel"] == 0.0 and same["grad_rel"] == 0.0
    assert len({d["eager"]["loss"] for d in same["draws"]}) == agreement.DRAWS

    from methods.mae.method import MAE

    draw = MAE.choose_visible
    count = []  # calls: each mask draw is made twice, for the eager and the compiled side

    def fewer_each_time(self, batch, grid, generator):
        visible = draw(self, batch, grid, generator)
        count.append(1)
        keep = visible.index.shape[1] - (len(count) - 1) // 2  # each draw: 1 shorter
        return dataclasses.replace(visible, index=visible.index[:, :keep])

    MAE.choose_visible = fewer_each_time
    try:
        changed = agreement.step_agreement(cfg, spec, torch.device("cpu"), backend="eager",
                                          compiled_precision="fp32")
    finally:
        MAE.choose_visible = draw
    assert not changed["pass"] and changed["recompiled"].startswith("draw 2")


def test_epoch_clock_pickles_and_times_each_runs_later_epochs(tmp_path):
    """Stamps of two worker processes (one ran two runs): the steady epochs are the gaps
    between consecutive epochs of one run, never across runs."""
    clock = pickle.loads(pickle.dumps(EpochClock(tmp_path / "stamps")))
    assert clock.on_epoch_end(1, {}) is False and len(list((tmp_path / "stamps").glob("*.jsonl"))) == 1
    (tmp_path / "s").mkdir()
    for pid, stamps in {1: [(1, 10.0), (2, 12.0), (3, 15.0), (1, 30.0), (2, 31.5)],
                        2: [(1, 5.0), (2, 9.0)]}.items():
        for epoch, t in stamps:
            store.append_jsonl(tmp_path / "s" / f"{pid}.jsonl", {"epoch": epoch, "time": t})
    assert sorted(steady_epochs(tmp_path / "s")) == [1.5, 2.0, 3.0, 4.0]


def test_full_table_estimate_and_affordable_epochs_exact():
    # 9 trained runs at 2 of 100 epochs, mean epoch 2.5 s with 3 runs at once: 98 x 9 x 2.5 / 3.
    s, how = full_table_estimate(60.0, 2, [2.0, 3.0], 9, 3, 9.9)
    assert s == pytest.approx(60.0 + 98 * 9 * 2.5 / 3) and "3 runs at once" in how
    s, how = full_table_estimate(60.0, 1, [], 9, 3, 2.0)  # one epoch: no steady epoch measured
    assert s == pytest.approx(60.0 + 99 * 9 * 2.0) and "one after another" in how
    runs = [resolve_run(tiny_config(method=m)) for m in ("mae", "qbheat", "random-init")]
    timed = {"mae": {"epoch_s": 1.0, "overhead_s": 6.0}, "qbheat": {"epoch_s": 2.0, "overhead_s": 3.0}}
    # fixed = 3 runs x 6 s / 2 workers + 20 s reserve = 29 s; 3 s per table epoch
    assert affordable_epochs(29.0 + 3 * 7 + 1, runs, timed, workers=2) == 7
    assert affordable_epochs(10.0, runs, timed, workers=2) == 0
    assert affordable_epochs(1e6, runs, timed, workers=2) == timing.FULL_EPOCHS


def test_targets_are_judged_on_cuda_only():
    speed = {"perf": {"rows": [
        {"encoder": "vit-base", "method": "mae", "compile_mode": "reduce-overhead", "mfu": 0.9},
        {"encoder": "vit-base", "method": "mae", "compile_mode": "default", "mfu": 0.45}]}}
    epochs = {"mae": {"epoch_s": 0.9}, "qbheat": {"epoch_s": 1.2}}
    t = gpucheck.targets(torch.device("cuda"), speed, epochs, {"full_table_s": 800.0})
    assert t["applies"] and t["vit_base_mae_mfu"] == {"value": 0.45, "target": ">= 0.4", "met": True}
    assert t["fmnist_epoch_s"]["met"] is False and t["full_table_s"]["met"] is True
    t = gpucheck.targets(torch.device("cpu"), speed, epochs, {"full_table_s": 800.0})
    assert not t["applies"] and {v["met"] for k, v in t.items() if k != "applies"} == {None}
