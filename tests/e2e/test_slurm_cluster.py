"""The one-node SLURM test cluster (scripts/slurm-dev-cluster.sh) runs submitit jobs.

Needs the cluster up (`scripts/slurm-dev-cluster.sh start`, as root). Without it these
tests skip, except in CI (CI=true), where a missing cluster is a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import SLURM_SCRIPT, poll

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slurm


def test_status_reports_usable(slurm_cluster: None) -> None:
    proc = subprocess.run(
        ["bash", str(SLURM_SCRIPT), "status"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usable: yes" in proc.stdout
    assert "debug" in proc.stdout  # sinfo lists the partition


def _sacct_state(job_id: str) -> str:
    proc = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""


def test_submitit_job_completes(slurm_cluster: None, tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(
        slurm_partition="debug",
        timeout_min=5,  # submitit's warning signal comes 90 s early: keep limits >= 5 min
        cpus_per_task=1,
        name="maskbench-slurm-test",
    )
    # A stdlib function pickles by reference and imports anywhere; its result proves the
    # job ran inside SLURM.
    job = executor.submit(os.getenv, "SLURM_JOB_ID")

    # job.result() has no timeout: wait for the result file first, bounded.
    done = poll(lambda: job.done(force_check=True), timeout_s=30)
    if not done:
        job.cancel(check=False)
        pytest.fail(f"job {job.job_id} not done after 30 s: {job.get_info(mode='force')}")
    assert job.result() == job.job_id

    # Accounting lags squeue by a few seconds: poll sacct and submitit's view of it.
    assert poll(lambda: _sacct_state(job.job_id) == "COMPLETED", timeout_s=15), (
        f"sacct says {_sacct_state(job.job_id)!r} for job {job.job_id}"
    )
    assert poll(lambda: job.get_info(mode="force").get("State") == "COMPLETED", timeout_s=10), (
        job.get_info(mode="force")
    )
    assert job.state == "COMPLETED"
