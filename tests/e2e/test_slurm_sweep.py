"""Sweeps on the real one-node SLURM cluster (scripts/slurm-dev-cluster.sh): one job array per
sweep, resubmission, cancellation, requeue with resume, and the run lock.

Skipped when the cluster is down, failed instead under CI=true (see test_slurm_cluster.py).
Every job imports torch first (seconds on 2 cores), so the runs are as small as they get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import torch

from bench.cli import main
from bench.core import files, store
from bench.core.config import RunConfig
from bench.core.files import ATTEMPTS, JOB
from bench.launch.jobs import RunJob, checkpoint_position
from bench.launch.launchers import SUBMITIT_DIR, SubmititLauncher
from bench.launch.slurm import query_jobs, slurm_settings
from bench.launch.status import run_states
from bench.plan.sweep import resolve_run
from bench.run.hooks import Hook
from bench.run.train import train_run
from tests.helpers import poll

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# The smallest runs that still train, probe and checkpoint.
TINY = dict(dataset="digits", encoder="vit-micro", epochs=2, batch_size=32, train_limit=128,
            eval_train_limit=128, eval_test_limit=64, probe_steps=10, decoder_dim=32,
            decoder_depth=1, decoder_heads=2, device="cpu")
# One CPU per job: two jobs run at once on the 2-CPU node; results depend on the threads.
SLURM = dict(time_min=10, cpus_per_task=1, array_parallelism=2)
WAIT_S = 300  # generous: job start is slow on a loaded 2-core machine


@pytest.fixture
def submitted():
    """Job ids a test submits; whatever is still queued at the end is cancelled."""
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def write_spec(path: Path, grid: dict, seeds: list[int]) -> Path:
    def toml(v):
        return json.dumps(v)  # strings, numbers and lists of them read the same in TOML

    lines = [f"{k} = {toml(v)}" for k, v in TINY.items()]
    lines += [f"seeds = {toml(seeds)}", "", "[grid]"]
    lines += [f"{k} = {toml(v)}" for k, v in grid.items()]
    lines += ["", "[slurm]"] + [f"{k} = {toml(v)}" for k, v in SLURM.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def states(out: Path) -> dict[str, str]:
    return {s.run_id: s.state for s in run_states(out)}


def wait_states(out: Path, want: dict[str, str]) -> dict[str, str]:
    """Poll `bench status`'s view until it matches `want` (sacct lags squeue by seconds)."""
    got = poll(lambda: states(out) == want and want, timeout_s=WAIT_S, interval_s=1.0)
    assert got, f"after {WAIT_S} s: {states(out)}, wanted {want}"
    return states(out)


def job_ids(out: Path) -> dict[str, str]:
    return {f.parent.name: store.read_json(f)["job_id"] for f in sorted(out.glob(f"*/{JOB}"))}


@pytest.mark.slow
def test_sweep_array_report_resubmit_cancel_retry(tmp_path, capsys, submitted):
    spec = write_spec(tmp_path / "tiny.toml", {"method": ["mae", "random-init"]}, [0, 1])
    out = tmp_path / "out"
    sweep = ["sweep", str(spec), "--launcher", "slurm", "--out", str(out), "--no-progress"]

    assert main(sweep) == 0
    printed = capsys.readouterr().out
    assert "4 runs (0 already done, 4 to run)" in printed and "runs differ in:" in printed
    ids = job_ids(out)
    submitted.extend(ids.values())
    array = {j.split("_")[0] for j in ids.values()}
    assert len(ids) == 4 and len(array) == 1, ids  # one job array for the sweep
    assert sorted(j.split("_")[1] for j in ids.values()) == ["0", "1", "2", "3"]
    # What was submitted is what `--dry-run` prints (and what the golden file pins down).
    (array_id,) = array
    launcher = SubmititLauncher("slurm", slurm_settings(SLURM), "maskbench-tiny")
    assert (out / SUBMITIT_DIR / f"{array_id}_submission.sh").read_text() == launcher.script(out, 4)

    # Cancel the last task while it waits for a CPU (two run at a time).
    victim = next(r for r, j in ids.items() if j == f"{array_id}_3")
    subprocess.run(["scancel", ids[victim]], check=True, timeout=30)
    others = {r: "done" for r in ids if r != victim}
    wait_states(out, {**others, victim: "cancelled"})

    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    (line,) = [x for x in status.splitlines() if x.startswith(victim)]
    assert "cancelled" in line and ids[victim] in line
    assert f"log: {out / SUBMITIT_DIR}" in status and "3 done" in status and "1 cancelled" in status

    # Resubmitting submits nothing: done runs are skipped, cancelled ones need --retry-failed.
    assert main(sweep) == 0
    printed = capsys.readouterr().out
    assert "3 already done, 1 cancelled, 0 to run" in printed and "submitted" not in printed
    assert job_ids(out) == ids

    # --retry-failed reruns the cancelled run only.
    assert main([*sweep, "--retry-failed"]) == 0
    assert "1 to run" in capsys.readouterr().out
    new_ids = job_ids(out)
    submitted.append(new_ids[victim])
    assert new_ids[victim] != ids[victim]
    assert {r: j for r, j in new_ids.items() if r != victim} == {r: ids[r] for r in others}
    wait_states(out, {r: "done" for r in ids})

    assert main(["report", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "| mae |" in report and "| random-init |" in report and report.count("(n=2)") >= 2


class HoldAttempts(Hook):
    """Runs inside the job: attempt k (SLURM_RESTART_COUNT) waits after epoch k+1 for the test
    to stop it, so it is surely mid-run; the third attempt runs through."""

    def on_epoch_end(self, epoch: int, record: dict) -> bool:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if restarts < 2 and epoch == restarts + 1:
            time.sleep(WAIT_S)
        return False


@pytest.mark.slow
def test_requeued_job_resumes_to_same_metrics(tmp_path, digits, submitted):
    """`scontrol requeue` (the job is killed and restarted) and then SLURM's warning signal
    before a time limit (submitit checkpoints and requeues) each interrupt the run mid-way;
    every attempt resumes from the last epoch and the result equals an uninterrupted run."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels by value
    cfg = resolve_run(RunConfig(**{**TINY, "method": "mae", "epochs": 3}))
    out = tmp_path / "out"
    run_dir = out / cfg.run_id
    launcher = SubmititLauncher("slurm", slurm_settings(SLURM), "maskbench-requeue")
    launcher.submit([RunJob(cfg, run_dir, threads=1, hooks=[HoldAttempts()])], out)
    job = launcher.jobs[0].job_id
    submitted.append(job)

    def at_epoch(n: int) -> bool:
        lines = store.read_jsonl(run_dir / ATTEMPTS)
        return len(lines) == n and checkpoint_position(run_dir) == (n, 0)

    assert poll(lambda: at_epoch(1), timeout_s=WAIT_S, interval_s=0.5), "attempt 1 stalled"
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    assert poll(lambda: at_epoch(2), timeout_s=WAIT_S, interval_s=0.5), "attempt 2 stalled"
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    wait_states(out, {cfg.run_id: "done"})

    attempts = store.read_jsonl(run_dir / ATTEMPTS)
    assert [a["start_epoch"] for a in attempts] == [0, 1, 2]
    assert {a["job_id"] for a in attempts} == {job}
    assert "requeued" in Path(store.read_json(run_dir / JOB)["stderr"]).read_text()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job
    try:
        full = train_run(cfg, tmp_path / "full", progress=False, data=digits)
    finally:
        torch.set_num_threads(threads)
    assert store.read_json(run_dir / files.SUMMARY)["metrics"] == full["metrics"]
    assert (run_dir / files.METRICS).read_text() == (tmp_path / "full" / files.METRICS).read_text()


def test_two_submissions_of_one_run_train_once(tmp_path, submitted):
    cfg = resolve_run(RunConfig(**{**TINY, "method": "mae"}))
    out = tmp_path / "out"
    jobs = []
    for _ in range(2):  # two submitters that both found the run not started
        launcher = SubmititLauncher("slurm", slurm_settings(SLURM), "maskbench-twice")
        launcher.launch([cfg], out)
        jobs += launcher.jobs
    submitted.extend(j.job_id for j in jobs)

    def finished() -> bool:
        infos = query_jobs([j.job_id for j in jobs])
        return all(j.job_id in infos and not infos[j.job_id].live for j in jobs)

    assert poll(finished, timeout_s=WAIT_S, interval_s=1.0), query_jobs([j.job_id for j in jobs])
    results = [j.result() for j in jobs]
    run_dir = out / cfg.run_id
    assert len(store.read_jsonl(run_dir / ATTEMPTS)) == 1  # exactly one of them trained
    assert [r["epoch"] for r in store.read_jsonl(run_dir / files.METRICS)] == [1, 2]
    assert sorted(r["status"] for r in results) in (["ok", "skipped"], ["ok", "ok"])
    assert not (run_dir / "lock").exists()


def test_sbatch_refusal_is_one_line_and_records_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path / "tiny.toml", {"method": ["random-init"]}, [0])
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--launcher", "slurm", "--out", str(out),
                 "slurm.partition=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sbatch refused the jobs:") and "Invalid partition" in err
    assert len(err.splitlines()) == 1 and not list(out.glob(f"*/{JOB}"))


def test_asking_more_cpus_than_the_partition_has_names_the_key(tmp_path, capsys):
    """The test node has 2 CPUs: 4 per task is refused before sbatch, naming the key and the
    limit; nothing is submitted or written."""
    out = tmp_path / "out"
    code = main(["run", "--methods", "mae", "--dataset", "digits", "--out", str(out),
                 "--launcher", "slurm", "slurm.partition=debug", "slurm.cpus_per_task=4",
                 "epochs=1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "slurm.cpus_per_task=4" in err and "partition debug's nodes have 2" in err
    assert not out.exists()
