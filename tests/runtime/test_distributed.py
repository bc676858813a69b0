"""Data-parallel training: 2 gloo processes (torchrun) follow the loss trajectory of 1 process
with the same global batch, and a 2-task SLURM job resumes a checkpoint under DDP.

Tolerance: per-epoch losses within rtol 1e-4. The only expected difference is the order in
which float32 gradients are summed (two half-batch sums averaged by the all-reduce instead of
one full-batch sum), about 1e-6 relative after a few steps; on this machine they are equal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core import files, store
from bench.core.errors import ConfigError
from bench.data import load_dataset
from bench.data.streaming import pretrain_batches
from bench.launch.jobs import checkpoint_position
from bench.ops.masking import Visible
from bench.plan.sweep import resolve_run
from bench.run.hooks import Hook, StepAt, watching
from bench.run.train import train_run
from bench.runtime import distributed
from tests.helpers import kill_at_step, tiny_config

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-4
# 4 steps of 32 samples per epoch, 2 epochs; kNN only (the probes are not under test here).
TINY = dict(batch_size=32, train_limit=128, eval_train_limit=128, eval_test_limit=32,
            protocols="knn", log_every=2)
CLI = ["--dataset", "digits", "--epochs", "2", "--batch-size", "32", "--train-limit", "128",
       "--eval-train-limit", "128", "--eval-test-limit", "32", "--no-progress", "--device", "cpu",
       "probe_steps=30", "decoder_dim=64", "decoder_depth=1", "decoder_heads=2", "protocols=knn",
       "log_every=2"]


def test_rows_split_the_global_batch_evenly():
    parts = [distributed.Dist(r, 4).rows(64) for r in range(4)]
    assert [(p.start, p.stop) for p in parts] == [(0, 16), (16, 32), (32, 48), (48, 64)]
    with pytest.raises(ConfigError, match="does not split evenly"):
        distributed.Dist(1, 3).rows(64)
    assert distributed.current() == distributed.Dist()  # no process group in this process


def test_take_rows_slices_every_batch_tensor_of_a_visible():
    v = Visible(torch.arange(12).view(6, 2), origin=torch.arange(12).view(6, 2), shape=(1, 2))
    part = distributed.take_rows(v, slice(2, 4))
    assert part.index.tolist() == [[4, 5], [6, 7]] and part.origin.tolist() == [[4, 5], [6, 7]]
    assert part.shape == (1, 2)


def test_ranks_rows_together_are_the_global_batch(digits):
    """Augmentation is drawn for the global batch: two ranks' rows concatenated equal it."""
    batches = torch.arange(128).view(2, 64)

    def epoch(rows: slice) -> list[torch.Tensor]:
        return list(pretrain_batches(digits, batches, torch.Generator().manual_seed(5), True, rows))

    whole = epoch(slice(None))
    halves = [epoch(distributed.Dist(r, 2).rows(64)) for r in range(2)]
    for i in range(2):
        assert torch.equal(torch.cat([halves[0][i], halves[1][i]]), whole[i])


def _losses(run_dir: Path, name: str = files.METRICS) -> list[float]:
    return [r["loss"] for r in store.read_jsonl(run_dir / name)]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process, global batch 32, uninterrupted: the reference run folder."""
    cfg = resolve_run(tiny_config(**TINY))
    run_dir = tmp_path_factory.mktemp("single") / cfg.run_id
    train_run(cfg, run_dir, progress=False, data=load_dataset("digits"))
    return run_dir


def _torchrun(out: Path, spied: Path, *args: str) -> None:
    """`torchrun --standalone --nproc_per_node 2 -m bench run --methods mae --out OUT ARGS`
    (this file's worker, which records each rank's rows); rank 0 alone prints the report."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(spied), "run", "--methods", "mae", "--out", str(out), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("report:") == 1


@pytest.mark.slow
def test_torchrun_two_processes_follow_one(tmp_path, single):
    """`torchrun --nproc_per_node 2 -m bench run ...` as the README shows, with gloo on CPU:
    the per-epoch and per-2-step losses are the single process's; rank 0 alone writes. The
    ranks also agree on a mid-epoch checkpoint every 2 steps (polled every 2 steps here)."""
    out, spied = tmp_path / "ddp", tmp_path / "rows"
    _torchrun(out, spied, *CLI, "checkpoint_every_min=1e-9", "checkpoint_poll_steps=2")
    run = out / single.name
    assert store.read_json(run / files.SUMMARY)["status"] == "ok"
    assert _losses(run) == pytest.approx(_losses(single), rel=RTOL)
    assert _losses(run, files.STEPS) == pytest.approx(_losses(single, files.STEPS), rel=RTOL)
    assert len(store.read_jsonl(run / "attempts.jsonl")) == 1
    # Each rank trained on its 16 rows of every 32-sample step, 4 steps x 2 epochs, and both
    # checkpointed after step 2 of each epoch (not after step 4: the epoch's own checkpoint).
    for rank in (0, 1):
        assert json.loads(Path(f"{spied}{rank}.json").read_text()) == [[16] * 8, [2, 6]]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["qbheat", "mae"])
def test_torchrun_two_processes_follow_one_with_batch_norm(tmp_path, method):
    """A CNN encoder (BatchNorm) under DDP: statistics over the global batch, so 2 processes
    follow the single process's losses as the ViT does (each rank normalising its own 16 rows
    would not), and its running statistics match (the encoder's probes see them). mae: a
    random subset by masked convolution, statistics over the visible positions of every rank."""
    settings = dict(TINY, method=method, encoder="cnn-resnet-micro", protocols="knn")
    cfg = resolve_run(tiny_config(**settings))
    single = tmp_path / "single" / cfg.run_id
    train_run(cfg, single, progress=False, data=load_dataset("digits"))
    out = tmp_path / "ddp"
    cli = [a for a in CLI if a not in ("protocols=knn",)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path / "rows"), "run", "--methods", method, "--encoder",
           "cnn-resnet-micro", "--out", str(out), *cli, "protocols=knn"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = out / cfg.run_id
    assert _losses(run) == pytest.approx(_losses(single), rel=RTOL)
    assert _losses(run, files.STEPS) == pytest.approx(_losses(single, files.STEPS), rel=RTOL)
    ddp, one = (store.load_torch(d / files.CHECKPOINT)["model"] for d in (run, single))
    stats = [k for k in one if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.allclose(ddp[k], one[k], rtol=1e-4, atol=1e-6) for k in stats)


def test_batch_norm_becomes_global_in_place():
    """The switch keeps the very parameters and buffers (the optimizer and checkpoints see no
    change) and the class's own forward outside the data-parallel step."""
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    params = [id(p) for p in bn.parameters()]
    keys = list(bn.state_dict())
    x = torch.randn(3, 1, 6, 6)
    before = bn(x)
    distributed.global_batch_norm(bn)
    assert type(bn[1]).__name__ == "GlobalBatchNorm2d" and isinstance(bn[1], torch.nn.BatchNorm2d)
    assert [id(p) for p in bn.parameters()] == params and list(bn.state_dict()) == keys
    assert torch.allclose(bn(x), before)  # not under synced_batch_stats: the plain layer


# Compiled against eager: inductor rounds float32 differently (about 1e-6 relative per step);
# 8 AdamW steps and, under DDP, the all-reduce's order compound it, well inside 1e-3.
COMPILED_RTOL = 1e-3


@pytest.mark.slow
@pytest.mark.inductor
def test_cli_compile_follows_eager(tmp_path, single):
    """`bench run --compile` on the CPU (inductor): the same run id, and the per-epoch and
    per-2-step losses of the eager run within COMPILED_RTOL (its step graph is the one
    test_compile.py compiles for mae: inductor's cache serves its kernels)."""
    from torch._dynamo.utils import counters

    out = tmp_path / "compiled"
    counters.clear()
    assert main(["run", "--methods", "mae", "--out", str(out), "--compile", *CLI]) == 0
    # Compiled code did run: dynamo captured the step (inductor may match eager bit for bit).
    assert counters["stats"]["unique_graphs"] >= 1
    run = out / single.name
    assert store.read_json(run / files.SUMMARY)["status"] == "ok"
    assert _losses(run) == pytest.approx(_losses(single), rel=COMPILED_RTOL)
    assert _losses(run, files.STEPS) == pytest.approx(_losses(single, files.STEPS), rel=COMPILED_RTOL)


@pytest.mark.slow
@pytest.mark.inductor
def test_torchrun_compiled_follows_one_eager(tmp_path):
    """DDP with torch.compile: 2 gloo processes with `--compile`, global batch 64 (32 rows per
    rank: the shapes of the mae step test_compile.py compiles, so most kernels come from the
    cache), follow one eager process with batch 64 within COMPILED_RTOL."""
    cfg = resolve_run(tiny_config(**{**TINY, "batch_size": 64}))
    eager = tmp_path / "eager" / cfg.run_id
    train_run(cfg, eager, progress=False, data=load_dataset("digits"))
    out, spied = tmp_path / "ddp", tmp_path / "rows"
    args = [*CLI, "--compile"]
    args[args.index("--batch-size") + 1] = "64"
    _torchrun(out, spied, *args)
    run = out / cfg.run_id
    assert store.read_json(run / files.SUMMARY)["compute"]["processes"] == 2
    assert _losses(run) == pytest.approx(_losses(eager), rel=COMPILED_RTOL)
    assert _losses(run, files.STEPS) == pytest.approx(_losses(eager, files.STEPS), rel=COMPILED_RTOL)
    for rank in (0, 1):
        assert json.loads(Path(f"{spied}{rank}.json").read_text())[0] == [32] * 4


def _slurm_usable() -> None:
    """Skip (fail under CI=true) unless the SLURM test cluster answers."""
    script = ROOT / "scripts" / "slurm-dev-cluster.sh"
    try:
        proc = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True,
                              timeout=30)
        ok, output = proc.returncode == 0, proc.stdout + proc.stderr
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, output = False, str(err)
    if not ok:
        msg = f"SLURM test cluster not usable (start it: sudo {script} start)\n{output}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.mark.slurm
def test_two_task_slurm_job_resumes_under_ddp(tmp_path, single):
    """`bench run --launcher slurm slurm.tasks_per_node=2`: the array task is a 2-task job whose
    tasks train the run together under DDP (gloo), resuming the mid-epoch checkpoint of a killed
    single process; the result follows the single process's trajectory."""
    _slurm_usable()
    from bench.launch.status import run_states

    cfg = resolve_run(tiny_config(**TINY))
    out = tmp_path / "out"
    kill_at_step(6, lambda: train_run(dataclasses.replace(cfg, checkpoint_every_min=1e-9),
                                      out / cfg.run_id, progress=False, data=load_dataset("digits")))
    assert checkpoint_position(out / cfg.run_id) == (1, 2)  # inside epoch 2 of 2
    code = main(["run", "--methods", "mae", "--out", str(out), *CLI, "--launcher", "slurm",
                 "slurm.partition=debug", "slurm.time_min=5", "slurm.cpus_per_task=1",
                 "slurm.tasks_per_node=2"])
    assert code == 0
    run_dir = out / cfg.run_id
    job_id = store.read_json(run_dir / "job.json")["job_id"]
    deadline = time.monotonic() + 300
    while (state := run_states(out, [cfg.run_id])[0].state) not in ("done", "failed", "cancelled"):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
            pytest.fail(f"job {job_id} not done after 300 s (state {state})")
        time.sleep(1)
    summary = store.read_json(run_dir / files.SUMMARY)
    assert state == "done", summary.get("error")
    assert summary["compute"]["processes"] == 2
    attempts = store.read_jsonl(run_dir / "attempts.jsonl")
    assert [(r["start_epoch"], r["start_step"]) for r in attempts] == [(1, 2)]
    assert _losses(run_dir) == pytest.approx(_losses(single), rel=RTOL)
    assert _losses(run_dir, files.STEPS) == pytest.approx(_losses(single, files.STEPS), rel=RTOL)


class RankSteps(Hook):
    """Rows of every step this rank trains, and the steps at which it took part in a
    mid-epoch checkpoint."""

    def __init__(self):
        self.seen: list[int] = []
        self.saved: list[int] = []

    def on_step_end(self, at: StepAt, loss) -> None:
        self.seen.append(at.rows)

    def on_checkpoint(self, state: dict) -> None:
        if state["step"]:  # mid-epoch
            self.saved.append(len(self.seen))


if __name__ == "__main__":  # a torchrun worker of test_torchrun_two_processes_follow_one
    steps = RankSteps()
    with watching(steps):
        code = main(sys.argv[2:])
    Path(f"{sys.argv[1]}{os.environ['RANK']}.json").write_text(json.dumps([steps.seen,
                                                                          steps.saved]))
    distributed.shutdown()
    sys.exit(code)
