"""OUT/<run_id>/lock: at most one live process trains a run. The lock holds JSON {job_id,
host, pid, pid_start, time}, made with O_CREAT|O_EXCL; a lock whose holder is gone (its SLURM
job no longer pending or running; locally, its pid dead on this host) is stale: taken over."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import store
from bench.core.errors import OutputError, SchedulerError
from bench.core.files import LOCK
from bench.launch.slurm import JobInfo, query_jobs

log = logging.getLogger(__name__)

# A lock file still empty or unreadable after this long was left by a crashed creator.
LOCK_WRITE_GRACE_S = 10.0


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
