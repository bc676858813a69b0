"""A run as a job, wherever it executes (this process, a local worker, a SLURM array task):
its lock, its launcher record, the job callable, and its state as `bench status` shows it.

Files in OUT/<run_id>/ besides store.py's:
  lock            who writes the folder now: JSON {job_id, host, pid, pid_start, time}, made
                  with O_CREAT|O_EXCL. A lock whose holder is gone (its SLURM job no longer
                  pending or running; locally, its pid dead on this host) is stale: taken over.
  job.json        the launcher's record: launcher, SLURM job id, log paths, config
  attempts.jsonl  one line per time the run started training (a requeue adds one), with
                  the epoch and step it resumed from
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from bench import compiling, distributed, store
from bench.config import RunConfig
from bench.errors import DiskFullError, OutputError, SchedulerError
from bench.slurm import RUNNING_STATES, JobInfo, query_jobs

log = logging.getLogger(__name__)

LOCK = "lock"
JOB = "job.json"
ATTEMPTS = "attempts.jsonl"

# A lock file still empty or unreadable after this long was left by a crashed creator.
LOCK_WRITE_GRACE_S = 10.0
# Final states that mean the run broke (as opposed to stopped: timeout, preemption).
FAILED_JOB_STATES = frozenset({"FAILED", "OUT_OF_MEMORY", "DEADLINE"})
# What a final SLURM state means for the run, where its log cannot say it better. A node that
# failed under the job (NODE_FAIL, BOOT_FAIL) broke nothing of the run's: it is interrupted, and
# resubmitting resumes it from its last checkpoint.
JOB_STATE_ERRORS = {
    "OUT_OF_MEMORY": "out of memory (raise slurm.mem_gb)",
    "DEADLINE": "the job's deadline passed (sbatch --deadline)",
}


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), so a recycled pid is not mistaken
    for the process that held a lock; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, start: int | None) -> bool:
    """`pid` is a live (non-zombie) process on this host, the same one that started at `start`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] not in ("Z", "X") and (start is None or int(fields[19]) == start)


def slurm_job_id() -> str | None:
    """This process's SLURM job id ("123" or array task "123_4") when submitit runs it there."""
    env = os.environ
    if env.get("SUBMITIT_EXECUTOR") != "slurm" or "SLURM_JOB_ID" not in env:
        return None
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


@dataclass(frozen=True)
class Holder:
    """A process that may write a run folder: a SLURM job (known by its id, which survives a
    requeue) or a plain process (host, pid and its start time)."""

    job_id: str | None
    host: str
    pid: int
    pid_start: int | None
    time: float

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(slurm_job_id(), socket.gethostname(), pid, process_start(pid), time.time())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Holder:
        return cls(d.get("job_id"), d["host"], int(d["pid"]), d.get("pid_start"), float(d["time"]))

    def same_owner(self, other: Holder) -> bool:
        """The same job (a requeued SLURM job comes back as a new process) or process."""
        if self.job_id is not None or other.job_id is not None:
            return self.job_id == other.job_id
        return (self.host, self.pid, self.pid_start) == (other.host, other.pid, other.pid_start)

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}"
        return f"SLURM job {self.job_id} ({where})" if self.job_id else where


JobQuery = Callable[[Sequence[str]], Mapping[str, JobInfo]]


def holder_alive(holder: Holder, query: JobQuery = query_jobs) -> bool:
    """Could `holder` still write? When that cannot be known, assume it could."""
    if holder.job_id is not None:
        try:
            info = query([holder.job_id]).get(holder.job_id)
        except SchedulerError as err:
            log.warning("cannot tell whether %s still runs (%s); treating it as running",
                        holder.describe(), err)
            return True
        return info is not None and info.live  # squeue lists every job it still has
    if holder.host != socket.gethostname():
        return True  # another host's processes cannot be seen from here
    return process_alive(holder.pid, holder.pid_start)


def _create_exclusive(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return True


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _parse_holder(text: str) -> Holder | None:
    try:
        return Holder.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None


class RunLock:
    """OUT/<run_id>/lock: at most one live process trains a run."""

    def __init__(self, run_dir: Path, me: Holder, query: JobQuery = query_jobs):
        self.path = run_dir / LOCK
        self.me = me
        self.query = query

    def holder(self) -> Holder | None:
        text = _read_text(self.path)
        return None if text is None else _parse_holder(text)

    def acquire(self) -> Holder | None:
        """Take the lock and return None, or return the live holder that has it."""
        mine = json.dumps(dataclasses.asdict(self.me), sort_keys=True)
        for _ in range(200):
            if _create_exclusive(self.path, mine):
                return None
            text = _read_text(self.path)
            if text is None:
                continue  # released just now
            holder = _parse_holder(text)
            if holder is None:  # being written right now, or left half-written by a crash
                if _age_s(self.path) > LOCK_WRITE_GRACE_S:
                    self._remove_stale(text)
                time.sleep(0.05)
                continue
            if holder.same_owner(self.me):
                store.write_json(self.path, dataclasses.asdict(self.me))
                return None
            if holder_alive(holder, self.query):
                return holder
            log.warning("%s: taking over a stale lock of %s", self.path, holder.describe())
            self._remove_stale(text)
        raise OutputError(f"could not take the lock {self.path}; remove it if no job uses it")

    def _remove_stale(self, stale_text: str) -> None:
        """Delete the lock if it still says `stale_text`. A guard file makes the check and the
        delete one step: two processes taking over the same stale lock never delete the new
        lock of the one that got there first."""
        guard = self.path.with_name(LOCK + ".takeover")
        if not _create_exclusive(guard, str(os.getpid())):
            if _age_s(guard) > LOCK_WRITE_GRACE_S:  # its maker died in those few lines
                guard.unlink(missing_ok=True)
            time.sleep(0.05)
            return
        try:
            if _read_text(self.path) == stale_text:
                self.path.unlink()
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        holder = self.holder()
        if holder is not None and holder.same_owner(self.me):
            self.path.unlink(missing_ok=True)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return store.read_json(run_dir / store.SUMMARY)
    except (OSError, ValueError):
        return None


def checkpoint_position(run_dir: Path) -> tuple[int, int]:
    """(epochs finished, steps of the next epoch finished) in the run's newest readable
    checkpoint, (0, 0) without one: where training resumes."""
    from bench import checkpoint

    found = checkpoint.peek(run_dir)
    if found is None:
        return 0, 0
    return int(found["state"]["epoch"]), int(found["state"].get("step", 0))


class RunJob(Checkpointable):
    """Train one run unless it is done or another live job holds its lock.

    A submitit Checkpointable: on SLURM's timeout or preemption signal submitit calls
    `checkpoint` and requeues the job (all its tasks). The run's state is already on disk
    (checkpoint.pt after every epoch and every `checkpoint_every_min` minutes), so the requeued
    job is this same object and resumes from the last checkpoint.
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        progress: bool = False,
        threads: int | None = None,
        interrupt: Callable[[int], bool] | None = None,
        raise_errors: bool = False,
        compile_cache: str | None = None,
    ):
        self.cfg = cfg
        self.run_dir = run_dir
        self.progress = progress
        self.threads = threads  # torch threads: results depend on them, so they are fixed
        self.interrupt = interrupt  # after each epoch's checkpoint (tests, schedulers)
        self.raise_errors = raise_errors  # debug launcher: let pdb see the error
        self.compile_cache = compile_cache  # inductor's cache folder in the job's process

    def __call__(self) -> dict[str, Any]:
        """The job's entry point (SLURM task, worker process): its log says what it did.

        Every task of a multi-task SLURM job calls it: the tasks join one process group
        (bench.distributed) and train the run together; a single task stays alone. It compiles
        into `compile_cache` (bench.compiling.sweep_cache), which the launcher chose.
        """
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        compiling.use_cache(self.compile_cache)
        distributed.init_from_env()
        try:
            return self.run()
        finally:
            distributed.shutdown()

    def run(self, data: Any = None) -> dict[str, Any]:
        """The run's summary; `{"status": "skipped", ...}` when another live job has it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.run_dir, Holder.me())
        main = distributed.current().is_main
        # Data-parallel ranks (bench.distributed): rank 0 holds the lock for all; all follow it.
        holder = distributed.from_main(lock.acquire() if main else None)
        if holder is not None:
            log.warning("run %s is being trained by %s; not training it here",
                        self.cfg.run_id, holder.describe())
            return {"run_id": self.cfg.run_id, "status": "skipped",
                    "held_by": dataclasses.asdict(holder)}
        keep = False
        try:
            return self._run_locked(lock.me, data)
        except BaseException as err:
            # SystemExit from submitit's requeue: the same job id comes back and takes the
            # lock again; until then nobody else may start the run.
            keep = lock.me.job_id is not None and not isinstance(err, Exception)
            raise
        finally:
            if not keep and main:
                lock.release()

    def _run_locked(self, me: Holder, data: Any) -> dict[str, Any]:
        from bench.train import RunInterrupted, summary_record, train_run, write_failure

        summary = read_summary(self.run_dir)
        if summary is not None and summary.get("status") == "ok":
            return summary  # finished meanwhile by another submission
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        try:
            epoch, step = checkpoint_position(self.run_dir)
            if distributed.current().is_main:
                store.append_jsonl(self.run_dir / ATTEMPTS, {
                    **dataclasses.asdict(me), "start_epoch": epoch, "start_step": step})
            log.info("run %s (%s seed %d) from epoch %d step %d -> %s", self.cfg.run_id,
                     self.cfg.method, self.cfg.seed, epoch, step, self.run_dir)
            return train_run(self.cfg, self.run_dir, self.progress, self.interrupt, data)
        except (RunInterrupted, DiskFullError) as err:  # no summary: `interrupted`, resumable
            log.warning("run %s %s", self.cfg.run_id, err)
            return summary_record(self.cfg, "interrupted", error=str(err))
        except Exception as err:  # recorded in summary.json: reports list it, the sweep goes on
            log.error("run %s failed: %s", self.cfg.run_id, err)
            summary = write_failure(self.cfg, self.run_dir, err)
            if self.raise_errors:
                raise
            return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        # Runs inside submitit's signal handler: nothing here may fail or take long.
        log.warning("run %s preempted or out of time: requeued, it resumes from its last "
                    "checkpoint", self.cfg.run_id)
        return super().checkpoint(*args, **kwargs)


@dataclass
class JobRecord:
    """job.json: how a run was launched, written by the launching process."""

    launcher: str  # local | slurm | debug
    submitter: dict[str, Any]  # Holder of the launching process
    config: dict[str, Any]
    job_id: str | None = None  # SLURM array task ("123_4") or submitit's debug id
    stdout: str | None = None
    stderr: str | None = None
    submitted: float = dataclasses.field(default_factory=time.time)


def write_record(run_dir: Path, record: JobRecord) -> None:
    store.write_json(run_dir / JOB, dataclasses.asdict(record))


def read_record(run_dir: Path) -> JobRecord | None:
    try:
        return JobRecord(**store.read_json(run_dir / JOB))
    except (OSError, ValueError, TypeError):
        return None


# ------------------------------------------------------------------ state (bench status)

# pending / running / done / failed / cancelled; interrupted: stopped without a record (a
# killed process, a job past its time limit): resubmitting resumes it from its checkpoint.
# new: nothing on disk yet. unknown: its SLURM job could not be asked about.
RETRY_STATES = frozenset({"failed", "cancelled"})
TODO_STATES = frozenset({"new", "interrupted", "unknown"})


@dataclass
class RunState:
    run_id: str
    state: str
    job_id: str | None = None
    elapsed_s: float | None = None
    attempts: int = 0
    log: Path | None = None
    error: str | None = None
    config: dict[str, Any] | None = None


def run_dirs(out: Path) -> list[Path]:
    """Run folders under `out` (anything a launcher or a run wrote), sorted."""
    if not out.is_dir():
        return []
    names = (JOB, store.CONFIG, store.SUMMARY)
    return sorted(d for d in out.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and any((d / n).exists() for n in names))


def run_states(
    out: Path, run_ids: Sequence[str] | None = None, query: JobQuery = query_jobs
) -> list[RunState]:
    """The state of each run (default: every run folder in `out`), one sacct call for all."""
    dirs = [out / r for r in run_ids] if run_ids is not None else run_dirs(out)
    me = Holder.me()
    records = {d: read_record(d) for d in dirs}
    holders = {d: RunLock(d, me).holder() for d in dirs}
    ids = {r.job_id for r in records.values() if r and r.launcher == "slurm" and r.job_id}
    ids |= {h.job_id for h in holders.values() if h and h.job_id}
    try:
        infos: Mapping[str, JobInfo] | None = query(sorted(ids)) if ids else {}
    except SchedulerError as err:
        log.warning("%s; SLURM runs without a summary show as unknown", err)
        infos = None
    return [_state(d, records[d], holders[d], infos) for d in dirs]


def _state(run_dir: Path, record: JobRecord | None, holder: Holder | None,
           infos: Mapping[str, JobInfo] | None) -> RunState:
    summary = read_summary(run_dir)
    config = record.config if record else _read_config(run_dir)
    st = RunState(run_dir.name, "new", config=config, attempts=len(store.read_jsonl(run_dir / ATTEMPTS)))
    slurm = record is not None and record.launcher == "slurm"
    info = infos.get(record.job_id) if slurm and infos is not None else None
    st.job_id = record.job_id if record else None
    st.elapsed_s = info.elapsed_s if info else None
    if summary is not None and summary.get("status") == "ok":
        st.state = "done"
        st.elapsed_s = st.elapsed_s or summary.get("compute", {}).get("wall_s")
        return st
    if holder is not None and holder_alive(holder, _answered(infos)):
        st.state, st.job_id = "running", holder.job_id or st.job_id
        st.elapsed_s = st.elapsed_s or time.time() - holder.time
        return st
    if slurm:
        st.log = Path(record.stderr) if record.stderr else None
        if infos is None:
            st.state = "failed" if summary else "unknown"
        elif info is None:  # SLURM forgot it: an array task cancelled before it started
            st.state = "cancelled"
        elif info.live:
            st.state = "running" if info.state in RUNNING_STATES else "pending"
        elif info.state == "CANCELLED":
            st.state = "cancelled"
        elif summary is not None or info.state in FAILED_JOB_STATES:
            st.state = "failed"
        else:  # TIMEOUT, PREEMPTED, or COMPLETED without a summary
            st.state = "interrupted"
    elif summary is not None:
        st.state, st.log = "failed", run_dir / store.SUMMARY
    elif record is not None and _launcher_waits(record):
        st.state = "pending"
    elif record is not None or (run_dir / store.CONFIG).exists():
        st.state = "interrupted"
    if st.state == "failed" and info is not None and info.state in JOB_STATE_ERRORS:
        st.error = JOB_STATE_ERRORS[info.state]
    elif st.state in ("failed", "cancelled"):
        st.error = (summary or {}).get("error") or _last_error_line(st.log)
    return st


def _answered(infos: Mapping[str, JobInfo] | None) -> JobQuery:
    """A query that returns what sacct said once (or fails again if it did not answer)."""

    def query(ids: Sequence[str]) -> Mapping[str, JobInfo]:
        if infos is None:
            raise SchedulerError("sacct did not answer")
        return infos

    return query


def _launcher_waits(record: JobRecord) -> bool:
    """A local launch whose (other, live) process will still start this run."""
    submitter = Holder.from_dict(record.submitter)
    return not submitter.same_owner(Holder.me()) and holder_alive(submitter)


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        return store.read_json(run_dir / store.CONFIG)
    except (OSError, ValueError):
        return None


PYTHON_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def _last_error_line(path: Path | None) -> str | None:
    """The last Python exception line of a log (srun's own error lines come after it), else
    its last line that mentions an error, else its last line."""
    if path is None or not path.exists():
        return None
    lines = [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
    python = [x for x in lines if PYTHON_ERROR.match(x)]
    errors = [x for x in lines if "error" in x.lower()]
    return (python or errors or lines or [None])[-1]


def format_status(states: Sequence[RunState]) -> str:
    """One line per run (state, job id, elapsed, attempts, what differs), then the log path
    and last error line of every failed or cancelled run, then the counts."""
    from bench.sweep import differing_keys

    configs = [RunConfig.from_dict(s.config) if s.config else None for s in states]
    keys = differing_keys([c for c in configs if c is not None])
    lines = [f"{'run':<12}  {'state':<11}  {'job':<12}  {'elapsed':>8}  {'tries':>5}  what"]
    for s, cfg in zip(states, configs):
        what = describe_run(cfg, keys) if cfg else "?"
        lines.append(f"{s.run_id:<12}  {s.state:<11}  {s.job_id or '-':<12}  "
                     f"{_hms(s.elapsed_s):>8}  {s.attempts:>5}  {what}")
        if s.state in RETRY_STATES:
            lines.append(f"{'':<14}log: {s.log or '-'}")
            lines.append(f"{'':<14}error: {s.error or '-'}")
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(f"{len(states)} runs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return "\n".join(lines)


def describe_run(cfg: RunConfig, keys: Sequence[str]) -> str:
    """`method=mae seed=1 mae.mask_ratio=0.6`: the run's values of the keys that differ."""
    flat = {k: v for k, v in cfg.identity().items() if k != "options"}
    flat.update({f"{cfg.method}.{k}": v for k, v in cfg.options.items()})
    shown = keys or ["method", "seed"]
    return " ".join(f"{k}={flat[k]}" for k in shown if k in flat)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
