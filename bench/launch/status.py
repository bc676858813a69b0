"""Where each run stands, as `bench status` shows it and as relaunching decides: its launcher
record (job.json), its lock, its summary, and SLURM's word on its job. Imports no torch.

Files in OUT/<run_id>/ (bench.core.files): job.json, the launcher's record (launcher, SLURM job
id, log paths, config); attempts.jsonl, one line per time the run started training (a requeue
adds one), with the epoch and step it resumed from.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import files, store
from bench.core.config import RunConfig, differing_keys
from bench.core.errors import SchedulerError
from bench.core.files import ATTEMPTS, JOB
from bench.core.runfolder import check_config
from bench.launch.lock import Holder, JobQuery, RunLock, holder_alive
from bench.launch.slurm import RUNNING_STATES, JobInfo, query_jobs

log = logging.getLogger(__name__)

# Final states that mean the run broke (as opposed to stopped: timeout, preemption).
FAILED_JOB_STATES = frozenset({"FAILED", "OUT_OF_MEMORY", "DEADLINE"})
# What a final SLURM state means for the run, where its log cannot say it better. A node that
# failed under the job (NODE_FAIL, BOOT_FAIL) broke nothing of the run's: it is interrupted, and
# resubmitting resumes it from its last checkpoint.
JOB_STATE_ERRORS = {
    "OUT_OF_MEMORY": "out of memory (raise slurm.mem_gb)",
    "DEADLINE": "the job's deadline passed (sbatch --deadline)",
}


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return store.read_json(run_dir / files.SUMMARY)
    except (OSError, ValueError):
        return None


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
# new: nothing on disk yet. unknown: its SLURM job could not be asked about. broken: finished,
# but its config.json is unreadable or gone: resubmitting rewrites it. mismatched: its
# config.json does not hash to its run id (bench.core.runfolder): never resumed, never pooled.
RETRY_STATES = frozenset({"failed", "cancelled"})
TODO_STATES = frozenset({"new", "interrupted", "unknown", "broken"})
CONFIG_STATES = frozenset({"broken", "mismatched"})


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
    names = (JOB, files.CONFIG, files.SUMMARY)
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
    check = check_config(run_dir)
    if check.state == "mismatched":
        st.state, st.error = "mismatched", check.reason
        return st
    if summary is not None and summary.get("status") == "ok":
        st.state = "done" if check.state == "ok" else "broken"
        st.elapsed_s = st.elapsed_s or summary.get("compute", {}).get("wall_s")
        if check.state != "ok":
            st.error = f"{check.reason}; rerun the command that made it to rewrite it"
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
        st.state, st.log = "failed", run_dir / files.SUMMARY
    elif record is not None and _launcher_waits(record):
        st.state = "pending"
    elif record is not None or (run_dir / files.CONFIG).exists():
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
        return store.read_json(run_dir / files.CONFIG)
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


def format_status(states: Sequence[RunState],
                  option_defaults: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """One line per run (state, job id, elapsed, attempts, what differs and the options not
    at `option_defaults`), then the log path and last error line of every failed or cancelled
    run, then the counts."""
    configs = [RunConfig.from_dict(s.config) if s.config else None for s in states]
    keys = differing_keys([c for c in configs if c is not None])
    lines = [f"{'run':<12}  {'state':<11}  {'job':<12}  {'elapsed':>8}  {'tries':>5}  what"]
    for s, cfg in zip(states, configs):
        what = describe_run(cfg, keys, option_defaults) if cfg else "?"
        lines.append(f"{s.run_id:<12}  {s.state:<11}  {s.job_id or '-':<12}  "
                     f"{_hms(s.elapsed_s):>8}  {s.attempts:>5}  {what}")
        if s.state in RETRY_STATES:
            lines.append(f"{'':<14}log: {s.log or '-'}")
        if s.state in RETRY_STATES | CONFIG_STATES:
            lines.append(f"{'':<14}error: {s.error or '-'}")
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(f"{len(states)} runs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return "\n".join(lines)


def describe_run(cfg: RunConfig, keys: Sequence[str],
                 option_defaults: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """`method=mae seed=1 mae.mask_ratio=0.6`: the run's values of the keys that differ, then
    its options that are not at their defaults (`option_defaults`: by method), so every run
    says how it was run, even where all runs of its method agree."""
    flat = {k: v for k, v in cfg.identity().items() if k != "options"}
    flat.update({f"{cfg.method}.{k}": v for k, v in cfg.options.items()})
    shown = list(keys or ["method", "seed"])
    defaults = (option_defaults or {}).get(cfg.method, {})
    shown += [f"{cfg.method}.{k}" for k, v in cfg.options.items()
              if k in defaults and defaults[k] != v and f"{cfg.method}.{k}" not in shown]
    return " ".join(f"{k}={flat[k]}" for k in shown if k in flat)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
