"""SLURM through submitit: the settings of a sweep's jobs, the executor that submits them as
one job array, the sbatch script it writes, and job states read back from sacct.

Behaviour of SLURM 22.05 and submitit 1.5.4 this relies on (shared/notes/slurm.md):
- srun no longer inherits --cpus-per-task: the script exports SRUN_CPUS_PER_TASK, else the
  job (and its data loaders) gets one CPU;
- submitit asks for its warning signal `signal_delay_s` before the time limit and treats a
  signal in the first 80 % of the limit as preemption: keep `time_min` >= 5;
- sacct lags squeue by a few seconds, and keeps no record of an array task cancelled while
  still pending inside its array: states come from squeue first, then sacct.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.config import parse_options
from bench.core.errors import SchedulerError

# States in which a job may still run (sacct's words); every other state is final.
LIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
    "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD",
})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})


@dataclass
class SlurmSettings:
    """Resources and policy of a sweep's jobs: the spec's `[slurm]` table, or `slurm.KEY=VALUE`
    words on the command line. One run is one array task: with `nodes` x `tasks_per_node` > 1
    it trains data-parallel, one process per task (give each task its GPU: `gpus_per_task = 1`),
    the run's `batch_size` being the global batch across them (bench.runtime.distributed)."""

    partition: str | None = None
    time_min: int = 60  # time limit of each job; a requeued job gets it again
    nodes: int = 1
    tasks_per_node: int = 1  # DDP processes per node: one per GPU
    cpus_per_task: int = 4  # also the job's torch threads (results depend on the thread count)
    gpus_per_task: int = 0
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64  # array tasks running at once
    max_num_timeout: int = 3  # requeues after hitting the time limit before a run fails
    signal_delay_s: int = 90  # the warning signal comes this long before the time limit
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load ...)
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra #SBATCH lines: {"reservation": "x"}

    def __post_init__(self) -> None:
        if isinstance(self.setup, str):
            self.setup = [self.setup]
        if not isinstance(self.setup, list) or not all(isinstance(s, str) for s in self.setup):
            raise ValueError(f"setup must be a list of shell lines, got {self.setup!r}")
        if not isinstance(self.sbatch, dict):
            raise ValueError(f"sbatch must be a table of sbatch options, got {self.sbatch!r}")
        self.sbatch = {_sbatch_key(k): _sbatch_value(k, v) for k, v in self.sbatch.items()}
        for name in ("time_min", "nodes", "tasks_per_node", "cpus_per_task", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_task", "max_num_timeout", "signal_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _sbatch_key(key: str) -> str:
    name = key.lstrip("-")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"sbatch option {key!r} is not an sbatch long option name")
    return name


def _sbatch_value(key: str, value: Any) -> Any:
    """`true` makes a bare flag (`#SBATCH --exclusive`); other values are written as given."""
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return True
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"sbatch.{key} must be a string, a number or true, got {value!r}")
    return value


def slurm_settings(raw: dict[str, Any]) -> SlurmSettings:
    """Typed settings; unknown keys and bad values raise ConfigError naming the valid ones."""
    return parse_options(SlurmSettings, raw, prefix="slurm")


def make_executor(folder: Path, settings: SlurmSettings, name: str, cluster: str = "slurm"):
    """A submitit AutoExecutor for `cluster` ("slurm", or "debug": in this process)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(
            folder=folder, cluster=cluster, slurm_max_num_timeout=settings.max_num_timeout
        )
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise SchedulerError(f"SLURM is not available here ({err})") from None
    executor.update_parameters(  # None values are left unset
        name=name,
        timeout_min=settings.time_min,
        nodes=settings.nodes,
        tasks_per_node=settings.tasks_per_node,
        cpus_per_task=settings.cpus_per_task,
        mem_gb=settings.mem_gb,
        slurm_partition=settings.partition,
        slurm_gpus_per_task=settings.gpus_per_task or None,
        slurm_account=settings.account,
        slurm_qos=settings.qos,
        slurm_constraint=settings.constraint,
        slurm_array_parallelism=settings.array_parallelism,
        slurm_signal_delay_s=settings.signal_delay_s,
        slurm_setup=[f"export SRUN_CPUS_PER_TASK={settings.cpus_per_task}", *settings.setup],
        slurm_additional_parameters=dict(settings.sbatch) or None,
    )
    return executor


def sbatch_script(executor, n_tasks: int) -> str:
    """The sbatch file `executor` submits for `n_tasks` runs (an array when n_tasks > 1),
    built the way submitit builds it, without submitting anything."""
    from submitit.slurm.slurm import _make_sbatch_string

    inner = executor._executor
    return _make_sbatch_string(
        command=inner._submitit_command_str,
        folder=inner.folder,
        map_count=n_tasks if n_tasks > 1 else None,
        **inner.parameters,
    )


def parse_sinfo(text: str, partition: str | None) -> tuple[str, int] | None:
    """(partition, CPUs of its largest node) from `sinfo -h -o %P|%c` lines ("debug*|2": the
    star marks the default partition, "8+" nodes of 8 CPUs or more); `partition` None: the
    default one. None when the partition is not listed."""
    for line in text.splitlines():
        name, _, cpus = line.strip().partition("|")
        is_default = name.endswith("*")
        name = name.rstrip("*")
        if (name == partition or (partition is None and is_default)) and cpus.rstrip("+").isdigit():
            return name, int(cpus.rstrip("+"))
    return None


def check_partition_fits(settings: SlurmSettings) -> None:
    """Refuse, naming the key to change, a job asking more CPUs per node than the partition's
    nodes have (sbatch's own refusal names neither). Silent when sinfo cannot answer."""
    try:
        text = _run(["sinfo", "-h", "-o", "%P|%c"])
    except SchedulerError:
        return
    found = parse_sinfo(text, settings.partition)
    if found is None:
        return
    name, cpus = found
    asked = settings.cpus_per_task * settings.tasks_per_node
    if asked > cpus:
        raise SchedulerError(
            f"slurm.cpus_per_task={settings.cpus_per_task} x slurm.tasks_per_node="
            f"{settings.tasks_per_node} asks {asked} CPUs per node, and partition {name}'s "
            f"nodes have {cpus}: lower slurm.cpus_per_task (at most {cpus // settings.tasks_per_node})")


@dataclass(frozen=True)
class JobInfo:
    """What sacct says about one job (or array task)."""

    state: str  # first word of sacct's State: PENDING, RUNNING, COMPLETED, CANCELLED ...
    elapsed_s: float | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def query_jobs(job_ids: Iterable[str]) -> dict[str, JobInfo]:
    """SLURM's view of `job_ids` ("123" or array tasks "123_4"): squeue for current and
    recently ended jobs (sacct lags it by seconds), sacct for older ones. A job neither
    lists is absent: SLURM 22.05 keeps no record at all of an array task cancelled while it
    was still pending inside its array."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    ids = ",".join(arrays)
    sacct = _run(["sacct", "-X", "--parsable2", "--noheader", "-o", "JobID,State,Elapsed",
                  "-j", ids])
    squeue = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%M", "-j", ids],
                  none_known="Invalid job id specified")
    return {**parse_sacct(sacct), **parse_sacct(squeue)}


def _run(cmd: list[str], none_known: str | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SchedulerError(f"cannot ask SLURM for job states: {err}") from None
    if proc.returncode != 0:
        if none_known is not None and none_known in proc.stderr:
            return ""  # squeue: none of these jobs is in the queue any more
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise SchedulerError(f"{cmd[0]} failed: {lines[-1]}")
    return proc.stdout


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """`JobID|State|Elapsed` lines (sacct's or squeue's) -> {job id: JobInfo}; pending array
    ranges are expanded."""
    from submitit.slurm.slurm import read_job_id

    out: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0] or "." in parts[0]:
            continue
        state = (parts[1].split() or ["UNKNOWN"])[0]
        info = JobInfo(state, parse_elapsed(parts[2]))
        for main, *index in read_job_id(parts[0]):
            if len(index) == 2:
                for i in range(int(index[0]), int(index[1]) + 1):
                    out[f"{main}_{i}"] = info
            else:
                out["_".join([main, *index])] = info
    return out


def parse_elapsed(text: str) -> float | None:
    """sacct's `[D-]HH:MM:SS` (or `MM:SS`) -> seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
