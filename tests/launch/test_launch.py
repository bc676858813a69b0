"""Launchers without a cluster: the run lock, run states and what gets relaunched, `status`,
the local launcher (in process and with workers), submitit's debug executor, and the sbatch
script of a GPU configuration (golden file)."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.checks.timing import EpochClock
from bench.core import files, store
from bench.core.errors import SchedulerError
from bench.core.files import ATTEMPTS, JOB, LOCK
from bench.data import dataset_key
from bench.launch.jobs import RunJob
from bench.launch.launchers import LocalLauncher, SubmititLauncher, _init_worker, runs_to_do
from bench.launch.lock import LOCK_WRITE_GRACE_S, Holder, RunLock, process_start
from bench.launch.slurm import JobInfo, SlurmSettings, parse_sacct, slurm_settings
from bench.launch.status import JobRecord, format_status, read_record, run_states, write_record
from bench.plan.sweep import resolve_run
from bench.run.hooks import Hook, StepAt, StopAfterEpoch
from bench.runtime import compiling, stopping
from tests.helpers import tiny_config

GOLDEN = Path(__file__).parent / "golden"
HOST = socket.gethostname()


def slurm_holder(job_id: str) -> Holder:
    return Holder(job_id, HOST, 1, None, time.time())


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ the lock


def test_lock_exactly_one_of_many_racers_wins(tmp_path):
    def query(ids):
        return {i: JobInfo("RUNNING") for i in ids}

    results: list = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        lock = RunLock(tmp_path, slurm_holder(f"7_{i}"), query)
        barrier.wait()
        results.append((i, lock.acquire()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, holder in results if holder is None]
    assert len(winners) == 1
    assert {h.job_id for _, h in results if h is not None} == {f"7_{winners[0]}"}
    assert store.read_json(tmp_path / LOCK)["job_id"] == f"7_{winners[0]}"


def test_stale_local_lock_is_taken_over_live_one_is_not(tmp_path):
    me = Holder.me()
    stale = Holder(None, HOST, dead_pid(), None, time.time())
    store.write_json(tmp_path / LOCK, dataclasses.asdict(stale))
    lock = RunLock(tmp_path, me)
    assert lock.acquire() is None and lock.holder() == me
    lock.release()
    assert not (tmp_path / LOCK).exists()

    parent = Holder(None, HOST, os.getppid(), process_start(os.getppid()), time.time())
    store.write_json(tmp_path / LOCK, dataclasses.asdict(parent))
    assert RunLock(tmp_path, me).acquire() == parent  # a live process keeps it
    RunLock(tmp_path, me).release()  # not ours: left alone
    assert RunLock(tmp_path, me).holder() == parent

    # The same pid with another start time is a recycled pid: the holder is gone.
    recycled = dataclasses.replace(parent, pid_start=(parent.pid_start or 0) + 1)
    store.write_json(tmp_path / LOCK, dataclasses.asdict(recycled))
    assert RunLock(tmp_path, me).acquire() is None


@pytest.mark.parametrize(
    "state,taken",
    [("COMPLETED", True), ("CANCELLED", True), ("TIMEOUT", True), (None, True),
     ("PENDING", False), ("RUNNING", False), ("REQUEUED", False)],
)
def test_slurm_lock_is_stale_once_its_job_ended(tmp_path, state, taken):
    store.write_json(tmp_path / LOCK, dataclasses.asdict(slurm_holder("12_3")))

    def query(ids):
        return {} if state is None else {"12_3": JobInfo(state)}  # None: SLURM forgot it

    got = RunLock(tmp_path, slurm_holder("13_0"), query).acquire()
    assert (got is None) == taken


def test_slurm_lock_kept_when_scheduler_cannot_be_asked(tmp_path):
    store.write_json(tmp_path / LOCK, dataclasses.asdict(slurm_holder("12_3")))

    def query(ids):
        raise SchedulerError("sacct: command not found")

    assert RunLock(tmp_path, slurm_holder("13_0"), query).acquire() is not None


def test_requeued_job_takes_its_own_lock_back(tmp_path):
    store.write_json(tmp_path / LOCK, dataclasses.asdict(slurm_holder("12_3")))
    again = Holder("12_3", HOST, 999, None, time.time())  # the same job, a new process
    assert RunLock(tmp_path, again, lambda ids: {"12_3": JobInfo("RUNNING")}).acquire() is None
    assert RunLock(tmp_path, again).holder() == again


def test_half_written_lock_of_a_crashed_creator_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_text("")
    old = time.time() - LOCK_WRITE_GRACE_S - 1
    os.utime(tmp_path / LOCK, (old, old))
    assert RunLock(tmp_path, Holder.me()).acquire() is None


def test_run_job_skips_a_run_another_live_process_holds(tmp_path, digits):
    cfg = resolve_run(tiny_config(method="raw-input"))
    run_dir = tmp_path / cfg.run_id
    run_dir.mkdir()
    parent = Holder(None, HOST, os.getppid(), process_start(os.getppid()), time.time())
    store.write_json(run_dir / LOCK, dataclasses.asdict(parent))
    result = RunJob(cfg, run_dir).run(digits)
    assert result["status"] == "skipped" and result["held_by"]["pid"] == os.getppid()
    assert not (run_dir / files.CONFIG).exists() and not (run_dir / ATTEMPTS).exists()


# ------------------------------------------------------------------ states and relaunching


def test_states_decide_what_is_launched_again(tmp_path):
    cfgs = [resolve_run(tiny_config(seed=i)) for i in range(9)]
    out = tmp_path
    log = tmp_path / "5_6_0_log.err"
    log.write_text("Traceback ...\nModuleNotFoundError: No module named 'bench'\nsrun: error: task 0\n")
    # seed: (sacct state of its job, summary status)
    setup = {0: ("COMPLETED", "ok"), 1: ("PENDING", None), 2: ("RUNNING", None),
             3: ("CANCELLED", None), 4: (None, None), 5: ("COMPLETED", "failed"),
             6: ("FAILED", None), 7: ("TIMEOUT", None)}
    infos = {}
    for seed, (state, summary) in setup.items():
        cfg = cfgs[seed]
        write_record(out / cfg.run_id, JobRecord("slurm", {}, cfg.to_dict(), job_id=f"5_{seed}",
                                                 stderr=str(log)))
        if state is not None:
            infos[f"5_{seed}"] = JobInfo(state, 61.0)
        if summary is not None:
            record = {"run_id": cfg.run_id, "status": summary, "error": "ValueError: boom"}
            store.write_json(out / cfg.run_id / files.SUMMARY, record)
            store.write_json(out / cfg.run_id / files.CONFIG, {**cfg.to_dict(),
                                                               "run_id": cfg.run_id})
    states = {s.run_id: s for s in run_states(out, [c.run_id for c in cfgs],
                                              query=lambda ids: infos)}
    got = [states[c.run_id].state for c in cfgs]
    assert got == ["done", "pending", "running", "cancelled", "cancelled", "failed", "failed",
                   "interrupted", "new"]
    assert states[cfgs[5].run_id].error == "ValueError: boom"  # the summary's error first
    assert states[cfgs[6].run_id].error == "ModuleNotFoundError: No module named 'bench'"
    assert states[cfgs[6].run_id].log == log and states[cfgs[0].run_id].elapsed_s == 61.0

    todo = runs_to_do(cfgs, out, retry_failed=False, states=states)
    assert [c.seed for c in todo] == [7, 8]  # interrupted (resumes) and new
    todo = runs_to_do(cfgs, out, retry_failed=True, states=states)
    assert [c.seed for c in todo] == [3, 4, 5, 6, 7, 8]

    text = format_status([states[c.run_id] for c in cfgs[:8]])
    lines = text.splitlines()
    assert len([x for x in lines if x.split()[0] in {c.run_id for c in cfgs}]) == 8
    assert f"log: {log}" in text and "error: ModuleNotFoundError" in text
    assert "0:01:01" in text and "seed=6" in text
    assert lines[-1] == "8 runs: 2 cancelled, 1 done, 2 failed, 1 interrupted, 1 pending, 1 running"


def test_scheduler_down_leaves_slurm_runs_unknown_and_launchable(tmp_path):
    cfg = resolve_run(tiny_config())
    write_record(tmp_path / cfg.run_id, JobRecord("slurm", {}, cfg.to_dict(), job_id="5_0"))

    def query(ids):
        raise SchedulerError("sacct: command not found")

    (state,) = run_states(tmp_path, [cfg.run_id], query=query)
    assert state.state == "unknown"
    # The lock and the summary check make relaunching safe: the run is never trained twice.
    assert runs_to_do([cfg], tmp_path, False, {cfg.run_id: state}) == [cfg]


def test_parse_sacct_and_squeue_lines():
    text = "41_0|COMPLETED|00:01:02\n41_[2-3%2]|PENDING|00:00:00\n42|CANCELLED by 0|1-02:00:00\n"
    text += "41_1|RUNNING|0:17\n41_0.batch|COMPLETED|00:01:02\n"
    got = parse_sacct(text)
    assert got == {"41_0": JobInfo("COMPLETED", 62.0), "41_2": JobInfo("PENDING", 0.0),
                   "41_3": JobInfo("PENDING", 0.0), "42": JobInfo("CANCELLED", 93600.0),
                   "41_1": JobInfo("RUNNING", 17.0)}
    assert got["41_2"].live and not got["42"].live


# ------------------------------------------------------------------ local and debug launchers


def test_local_failure_is_recorded_with_its_error_and_status(tmp_path, digits, capsys):
    from bench.cli import main

    good = resolve_run(tiny_config(method="raw-input"))
    bad = resolve_run(tiny_config(train_limit=16))  # fewer samples than one batch
    summaries = LocalLauncher(progress=False).launch([good, bad], tmp_path,
                                                     {dataset_key(good): digits})
    assert [s["status"] for s in summaries] == ["ok", "failed"]
    assert read_record(tmp_path / bad.run_id).launcher == "local"
    states = {s.run_id: s for s in run_states(tmp_path)}
    assert states[good.run_id].state == "done" and states[good.run_id].attempts == 1
    assert states[bad.run_id].state == "failed"
    assert states[bad.run_id].log == tmp_path / bad.run_id / files.SUMMARY
    assert "exceeds the 16 pretraining samples" in states[bad.run_id].error
    assert main(["status", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "1 done, 1 failed" in printed and "exceeds the 16 pretraining samples" in printed


class CacheSpyJob(RunJob):
    """A RunJob that notes, in the process that runs it, which inductor cache it was given."""

    def run(self, data=None):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        store.write_json(self.run_dir / "cache.json", {"dir": os.environ.get(compiling.CACHE_ENV)})
        return super().run(data)


def test_workers_run_in_their_own_processes(tmp_path, monkeypatch):
    """Each run in a worker process, pointed at the results folder's inductor cache (so a sweep
    compiles a shape once), with the launcher's after-epoch hook called there."""
    import bench

    monkeypatch.setattr(bench, "USER_INDUCTOR_CACHE", None)  # as if none was chosen
    monkeypatch.setattr("bench.launch.jobs.RunJob", CacheSpyJob)  # the workers unpickle the spy
    cfgs = [resolve_run(tiny_config(method="raw-input")),
            resolve_run(tiny_config(epochs=1, batch_size=32, train_limit=64, protocols="knn"))]
    out = tmp_path / "out"
    summaries = LocalLauncher(progress=False, workers=2,
                              hooks=[EpochClock(tmp_path / "stamps")]).launch(cfgs, out)
    assert [s["status"] for s in summaries] == ["ok", "ok"]
    pids = {store.read_jsonl(out / c.run_id / ATTEMPTS)[0]["pid"] for c in cfgs}
    assert os.getpid() not in pids and all(s.state == "done" for s in run_states(out))
    for c in cfgs:
        assert store.read_json(out / c.run_id / "cache.json") == {"dir": str(out / ".inductor-cache")}
    (stamps,) = (tmp_path / "stamps").glob("*.jsonl")  # the trained run's one epoch
    assert int(stamps.stem) in pids and [r["epoch"] for r in store.read_jsonl(stamps)] == [1]


def test_each_worker_gets_its_own_gpu(monkeypatch):
    import multiprocessing

    slots = multiprocessing.get_context("spawn").SimpleQueue()
    for i in range(3):
        slots.put(i)
    seen = []
    for _ in range(3):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        _init_worker(slots, gpus=2)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["0", "1", "0"]


def test_debug_launcher_runs_in_process_through_submitit(tmp_path):
    cfg = resolve_run(tiny_config(method="raw-input"))
    launcher = SubmititLauncher("debug", SlurmSettings(), "maskbench-debug", progress=False)
    (summary,) = launcher.launch([cfg], tmp_path)
    assert summary["status"] == "ok"
    record = store.read_json(tmp_path / cfg.run_id / JOB)
    assert record["launcher"] == "debug" and record["job_id"].startswith("DEBUG_")
    assert [s.state for s in run_states(tmp_path)] == ["done"]


# ------------------------------------------------------------------ the sbatch script


GPU_SETTINGS = {
    "partition": "gpu", "time_min": 720, "cpus_per_task": 10, "gpus_per_task": 1,
    "mem_gb": 64, "account": "maskbench", "qos": "high", "constraint": "a100",
    "array_parallelism": 16, "max_num_timeout": 5, "setup": ["module load cuda/12.4"],
    "sbatch": {"reservation": "bench", "requeue": True},
}


# A data-parallel sweep: every run one job of 2 nodes x 4 tasks, one GPU per task.
DDP_SETTINGS = {"partition": "gpu", "time_min": 720, "nodes": 2, "tasks_per_node": 4,
                "cpus_per_task": 8, "gpus_per_task": 1, "mem_gb": 256}


@pytest.mark.parametrize("name,settings,runs", [("sbatch_gpu", GPU_SETTINGS, 24),
                                                ("sbatch_ddp", DDP_SETTINGS, 3)])
def test_sbatch_script_matches_golden(tmp_path, monkeypatch, name, settings, runs):
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # no srun needed
    launcher = SubmititLauncher("slurm", slurm_settings(settings), "maskbench-fmnist")
    script = launcher.script(tmp_path / "out", runs)
    script = script.replace(str(tmp_path / "out"), "OUT").replace(sys.executable, "PYTHON")
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("MASKBENCH_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(script)
    assert script == golden.read_text()


def test_sinfo_partition_and_default():
    from bench.launch.slurm import parse_sinfo

    text = "debug*|2\ngpu|64+\nbig|x\n"
    assert parse_sinfo(text, None) == ("debug", 2) and parse_sinfo(text, "gpu") == ("gpu", 64)
    assert parse_sinfo(text, "nope") is None and parse_sinfo(text, "big") is None


def test_an_interrupted_run_stays_resumable(tmp_path, digits):
    """A run stopped by its scheduler (RunInterrupted after a checkpoint) writes no summary:
    `bench status` shows it interrupted, it is relaunched without --retry-failed, and it then
    resumes to the numbers of an uninterrupted run."""
    cfg = resolve_run(tiny_config(epochs=2, protocols="knn"))
    run_dir = tmp_path / cfg.run_id
    result = RunJob(cfg, run_dir, hooks=[StopAfterEpoch(1)]).run(digits)
    assert result["status"] == "interrupted" and "after epoch 1" in result["error"]
    assert not (run_dir / files.SUMMARY).exists() and not (run_dir / LOCK).exists()
    (state,) = run_states(tmp_path, [cfg.run_id])
    assert state.state == "interrupted"
    assert runs_to_do([cfg], tmp_path, retry_failed=False) == [cfg]
    resumed = RunJob(cfg, run_dir).run(digits)
    full = RunJob(cfg, tmp_path / "full").run(digits)
    assert resumed["status"] == "ok" and resumed["metrics"] == full["metrics"]
    assert [s.state for s in run_states(tmp_path, [cfg.run_id])] == ["done"]


class DiesAfterAStopSignal(Hook):
    """At step 3: a SIGTERM arrives and the next batch finds its DataLoader worker dead (what
    a signal to the whole process group did before workers ignored it)."""

    def on_step_start(self, at: StepAt) -> None:
        if at.step == 3:
            stopping.request("SIGTERM")
            raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Terminated.")


def test_an_error_after_a_stop_signal_is_an_interruption(tmp_path, digits):
    """However a termination signal arrives, the run is interrupted (resumable, relaunched
    without --retry-failed), never recorded as failed."""
    cfg = resolve_run(tiny_config(epochs=2, protocols="knn"))
    run_dir = tmp_path / cfg.run_id
    try:
        result = RunJob(cfg, run_dir, hooks=[DiesAfterAStopSignal()]).run(digits)
    finally:
        stopping.clear()
    assert result["status"] == "interrupted" and result["error"] == "stopped by SIGTERM"
    assert not (run_dir / files.SUMMARY).exists()
    assert [s.state for s in run_states(tmp_path, [cfg.run_id])] == ["interrupted"]
    assert runs_to_do([cfg], tmp_path, retry_failed=False) == [cfg]


def test_summary_records_processes_and_device_type_and_resume_checks_it(tmp_path, digits, capsys):
    """Both change numbers without changing the run id: recorded; a checkpoint written on
    another device type is a one-line refusal before anything runs."""
    from bench.cli import main

    cfg = resolve_run(tiny_config(epochs=1, protocols="knn"))
    summary = RunJob(cfg, tmp_path / cfg.run_id).run(digits)
    assert summary["compute"]["processes"] == 1 and summary["compute"]["device_type"] == "cpu"
    other = resolve_run(tiny_config(epochs=2, protocols="knn"))
    RunJob(other, tmp_path / other.run_id, hooks=[StopAfterEpoch(1)]).run(digits)
    checkpoint = tmp_path / other.run_id / files.CHECKPOINT
    state = store.load_torch(checkpoint)
    store.save_torch(checkpoint, {**state, "device_type": "cuda"})
    before = checkpoint.read_bytes()
    args = ["run", "--methods", "mae", "--dataset", "digits", "--epochs", "2", "--batch-size",
            "64", "--train-limit", "256", "--eval-train-limit", "512", "--eval-test-limit", "128",
            "--out", str(tmp_path), "--no-progress", "probe_steps=30", "decoder_dim=64",
            "decoder_depth=1", "decoder_heads=2", "device=cpu", "protocols=knn"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "written on cuda and this run is on cpu" in err and len(err.splitlines()) == 1
    assert checkpoint.read_bytes() == before  # nothing lost


def test_out_of_memory_says_what_to_raise_and_a_failed_node_resumes(tmp_path):
    """sacct's OUT_OF_MEMORY: failed, with the key to raise (the job's log only says 'Killed');
    NODE_FAIL: nothing of the run broke, so it is interrupted and relaunched without
    --retry-failed (it resumes from its checkpoint)."""
    oom, node = (resolve_run(tiny_config(seed=s)) for s in (0, 1))
    log = tmp_path / "log.err"
    log.write_text("slurmstepd: error: Detected 1 oom_kill event\nKilled\n")
    for cfg, job in ((oom, "9_0"), (node, "9_1")):
        write_record(tmp_path / cfg.run_id, JobRecord("slurm", {}, cfg.to_dict(), job_id=job,
                                                      stderr=str(log)))
    infos = {"9_0": JobInfo("OUT_OF_MEMORY", 5.0), "9_1": JobInfo("NODE_FAIL", 5.0)}
    states = {s.run_id: s for s in run_states(tmp_path, query=lambda ids: infos)}
    assert states[oom.run_id].state == "failed"
    assert states[oom.run_id].error == "out of memory (raise slurm.mem_gb)"
    assert states[node.run_id].state == "interrupted"
    assert runs_to_do([oom, node], tmp_path, retry_failed=False, states=states) == [node]
    assert "out of memory (raise slurm.mem_gb)" in format_status(list(states.values()))
