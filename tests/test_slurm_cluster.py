"""The one-node SLURM test cluster (scripts/slurm-dev-cluster.sh) runs submitit jobs.

Needs the cluster up (`scripts/slurm-dev-cluster.sh start`, as root). Without it these
tests skip, except in CI (CI=true), where a missing cluster is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-dev-cluster.sh"

pytestmark = pytest.mark.slurm


def _poll(fn, timeout_s: float, interval_s: float = 0.25):
    """Call fn until it returns something truthy or timeout_s passes; return the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """The cluster answers `status`; otherwise skip (fail in CI)."""
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), "status"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        ok, output = proc.returncode == 0, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        ok, output = False, f"status timed out: {exc}"
    if not ok:
        msg = (
            "SLURM test cluster not usable; start it with "
            f"`sudo {SCRIPT.relative_to(ROOT)} start`.\n{output}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def test_status_reports_usable(slurm_cluster: None) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=30
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
    done = _poll(lambda: job.done(force_check=True), timeout_s=30)
    if not done:
        job.cancel(check=False)
        pytest.fail(f"job {job.job_id} not done after 30 s: {job.get_info(mode='force')}")
    assert job.result() == job.job_id

    # Accounting lags squeue by a few seconds: poll sacct and submitit's view of it.
    assert _poll(lambda: _sacct_state(job.job_id) == "COMPLETED", timeout_s=15), (
        f"sacct says {_sacct_state(job.job_id)!r} for job {job.job_id}"
    )
    assert _poll(lambda: job.get_info(mode="force").get("State") == "COMPLETED", timeout_s=10), (
        job.get_info(mode="force")
    )
    assert job.state == "COMPLETED"
