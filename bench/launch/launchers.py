"""Launchers: where runs execute.

- `local`: in this process, one run after another, or `workers` processes (each pinned to
  one GPU through CUDA_VISIBLE_DEVICES when there are GPUs);
- `slurm`: one submitit job array per sweep;
- `debug`: submitit's DebugExecutor, the same jobs in this process (for pdb).

Every launcher runs the same job (bench.launch.jobs.RunJob: lock, resume, failure record) and writes
each run's job.json first, so `bench status` and resubmission see what was launched. Worker
processes and SLURM tasks compile into the results folder's inductor cache
(bench.runtime.compiling.sweep_cache), so the runs of a sweep compile each shape once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core import store
from bench.core.config import RunConfig
from bench.core.errors import BenchError, ConfigError, OutputError, SchedulerError
from bench.core.runfolder import check_config
from bench.data import dataset_key
from bench.launch.lock import Holder
from bench.launch.slurm import (
    SlurmSettings,
    check_partition_fits,
    make_executor,
    sbatch_script,
    slurm_settings,
)
from bench.launch.status import (
    RETRY_STATES,
    TODO_STATES,
    JobRecord,
    RunState,
    run_states,
    write_record,
)
from bench.runtime import progress, stopping

if TYPE_CHECKING:
    from bench.launch.jobs import RunJob
    from bench.run.hooks import Hook

# torch (bench.runtime.compiling, distributed, jobs, validate) loads only once runs are launched:
# a dry run plans from names and files alone.

log = logging.getLogger(__name__)

SUBMITIT_DIR = ".submitit"  # OUT/.submitit: submitit's pickles, sbatch scripts and job logs


def runs_to_do(
    runs: Sequence[RunConfig],
    out: Path,
    retry_failed: bool,
    states: dict[str, RunState] | None = None,
) -> list[RunConfig]:
    """New and interrupted runs (these resume from their checkpoint); failed and cancelled
    ones only with `retry_failed`. Done, pending and running runs are never launched again."""
    if states is None:
        states = {s.run_id: s for s in run_states(out, [r.run_id for r in runs])}
    wanted = TODO_STATES | (RETRY_STATES if retry_failed else frozenset())
    return [cfg for cfg in runs if states[cfg.run_id].state in wanted]


def check_run_folders(runs: Sequence[RunConfig], out: Path) -> None:
    """Refuse, before anything is written (and in a dry run), what would stop a launch half
    way or resume the wrong run: a results folder that cannot be made, a file where a run's
    folder goes, a run folder whose config.json does not hash to its run id (edited by hand:
    resuming would go on training under settings it does not state)."""
    store.check_can_create(out)
    for cfg in runs:
        path = out / cfg.run_id
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} is a file where the folder of run {cfg.run_id} "
                              f"({cfg.method} seed {cfg.seed}) goes; move it aside")
        check = check_config(path)
        if check.state == "mismatched":
            raise OutputError(f"run folder {path} ({cfg.method} seed {cfg.seed}): "
                              f"{check.reason}; restore its config.json or move the folder "
                              "aside (nothing was resumed)")


def _record(launcher: str, cfg: RunConfig, out: Path, **fields: Any) -> None:
    write_record(out / cfg.run_id, JobRecord(
        launcher, dataclasses.asdict(Holder.me()), cfg.to_dict(), **fields
    ))


class LocalLauncher:
    """Runs finish before `launch` returns. A failing run is recorded as failed; the rest go on."""

    name = "local"
    waits = True

    def __init__(self, progress: bool = True, workers: int = 1,
                 hooks: Sequence[Hook] = ()):
        self.progress = progress
        self.workers = workers
        self.hooks = tuple(hooks)  # every run's training-loop hooks (RunJob); picklable

    def preflight(self) -> None:
        """Nothing to ask of this machine beyond the validation pass."""

    def launch(self, runs: Sequence[RunConfig], out: Path, datasets: dict | None = None) -> list[dict]:
        from bench.launch.jobs import RunJob
        from bench.launch.preflight import validate

        for cfg in runs:
            _record(self.name, cfg, out)
        if self.workers > 1:
            return self._launch_workers(runs, out)
        datasets = datasets if datasets is not None else validate(runs, out)
        summaries = []
        for i, cfg in enumerate(runs, 1):
            if stopping.requested():  # a signal stopped the previous run: start no other
                break
            with progress.shown(self.progress):
                progress.note(f"run {i} of {len(runs)}: {cfg.run_id} ({cfg.method} seed "
                              f"{cfg.seed})")
            job = RunJob(cfg, out / cfg.run_id, self.progress, hooks=self.hooks)
            summaries.append(job.run(datasets[dataset_key(cfg)]))
            if summaries[-1]["status"] == "interrupted":  # a signal or a full disk: stop here
                break
        return summaries

    def _launch_workers(self, runs: Sequence[RunConfig], out: Path) -> list[dict]:
        import torch

        from bench.launch.jobs import RunJob
        from bench.runtime import compiling

        gpus = torch.cuda.device_count()
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        ctx = multiprocessing.get_context("spawn")  # fresh processes: CUDA set up per worker
        slots = ctx.SimpleQueue()
        for slot in range(self.workers):
            slots.put(slot)
        cache = compiling.sweep_cache(out)
        jobs = [RunJob(cfg, out / cfg.run_id, threads=threads, hooks=self.hooks,
                       compile_cache=cache) for cfg in runs]
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(slots, gpus)) as pool:
            futures = [pool.submit(job) for job in jobs]
            with progress.shown(self.progress):
                done = progress.bar(total=len(futures), desc="runs", unit="run")
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, timeout=0.5)
                    done.update(len(finished))
                    if stopping.requested() and pending:
                        _stop_workers(futures)
                done.close()
        return [f.result() for f in futures if not f.cancelled()]


def _stop_workers(futures: list) -> None:
    """Pass a stop request on: runs not started are cancelled, and each worker process is
    asked (SIGTERM) to checkpoint its run and stop."""
    for f in futures:
        f.cancel()
    for child in multiprocessing.active_children():
        if child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)


def _init_worker(slots, gpus: int) -> None:
    """Give each worker process its own GPU (round-robin when there are more workers); a
    signal asks it to checkpoint its run and stop, as in the main process."""
    stopping.install()
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)


class SubmititLauncher:
    """`slurm`: one job array per launch, returning once it is submitted. `debug`: submitit's
    DebugExecutor runs the same jobs here, errors stopping in pdb."""

    def __init__(self, cluster: str, settings: SlurmSettings, job_name: str, progress: bool = True):
        self.name = cluster
        self.waits = cluster == "debug"
        self.settings = settings
        self.job_name = job_name
        self.progress = progress
        self.jobs: list[Any] = []  # submitit Jobs of the last launch

    def executor(self, out: Path):
        return make_executor(out / SUBMITIT_DIR, self.settings, self.job_name, self.name)

    def preflight(self) -> None:
        """Refuse what SLURM would refuse, with the key to change, before anything is written."""
        if self.name == "slurm":
            check_partition_fits(self.settings)

    def script(self, out: Path, n_runs: int) -> str:
        """The sbatch script a launch of `n_runs` runs would submit."""
        return sbatch_script(self.executor(out), n_runs)

    def launch(self, runs: Sequence[RunConfig], out: Path, datasets: dict | None = None) -> list[dict]:
        from bench.launch.jobs import RunJob
        from bench.runtime import compiling

        debug = self.name == "debug"
        threads = None if debug else self.settings.cpus_per_task
        cache = None if debug else compiling.sweep_cache(out)
        return self.submit([
            RunJob(cfg, out / cfg.run_id, progress=debug and self.progress, threads=threads,
                   raise_errors=debug, compile_cache=cache)
            for cfg in runs
        ], out)

    def submit(self, jobs: Sequence[RunJob], out: Path) -> list[dict]:
        """Submit jobs as one array and record each in its run's job.json; `debug` then runs
        them and returns their summaries."""
        from submitit.core.utils import FailedJobError

        if not jobs:
            return []
        executor = self.executor(out)
        try:  # submitit also prints sbatch's complaint: it goes into our one-line error
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                self.jobs = [executor.submit(job) for job in jobs]
        except FailedJobError as err:  # sbatch's own message, e.g. an unknown partition
            lines = str(err).strip().splitlines() or ["(no message)"]
            raise SchedulerError(f"sbatch refused the jobs: {lines[-1]}") from None
        for run_job, job in zip(jobs, self.jobs):
            _record(self.name, run_job.cfg, out, job_id=job.job_id, stdout=str(job.paths.stdout),
                    stderr=str(job.paths.stderr))
        if self.waits:
            return [job.result() for job in self.jobs]
        log.info("submitted %d runs as SLURM job %s", len(jobs), self.jobs[0].job_id.split("_")[0])
        return []


def make_launcher(
    name: str,
    progress: bool = True,
    workers: int = 1,
    slurm: SlurmSettings | None = None,
    job_name: str = "maskbench",
) -> LocalLauncher | SubmititLauncher:
    if name == "local":
        return LocalLauncher(progress, workers)
    return SubmititLauncher(name, slurm or SlurmSettings(), job_name, progress)


@dataclass
class LaunchOptions:
    """How runs execute: the CLI's launcher flags, the API's keywords."""

    launcher: str = "local"  # local | slurm | debug
    workers: int = 1  # local: runs at once, in that many processes
    retry_failed: bool = False  # also relaunch failed and cancelled runs
    dry_run: bool = False  # plan only
    progress: bool = True
    slurm: dict[str, Any] = field(default_factory=dict)  # the [slurm] table (bench.launch.slurm)
    job_name: str = "maskbench"
    report: bool = True  # write OUT/report when the launcher waited for the runs
    baseline: str | None = None  # the report's (None: mae where it has runs)
    option_defaults: dict[str, dict[str, Any]] | None = None  # by method: the report names
    # the options that are not at these


@dataclass
class Launch:
    """What a launch found and did."""

    out: Path
    runs: list[RunConfig]
    states: dict[str, RunState]  # of every run, before launching
    todo: list[RunConfig]  # the runs launched (or, for a dry run, that would be)
    summaries: list[dict] = field(default_factory=list)  # of those that ran here
    script: str | None = None  # slurm dry run: the sbatch script
    job_id: str | None = None  # slurm: the array's job id
    report: Path | None = None
    stopped: str | None = None  # the signal that stopped the launch (bench.runtime.stopping)
    reports: bool = True  # this process speaks for the launch (rank 0 under torchrun)

    @property
    def failed(self) -> list[dict]:
        return [s for s in self.summaries if s.get("status") == "failed"]

    @property
    def interrupted(self) -> list[dict]:
        """Runs stopped with a checkpoint (a signal, a full disk): rerunning resumes them."""
        return [s for s in self.summaries if s.get("status") == "interrupted"]


def launch_runs(runs: Sequence[RunConfig], out: Path, options: LaunchOptions,
                show_plan: Callable[[Launch], None] | None = None) -> Launch:
    """Plan, validate and launch the new and interrupted runs (and with `retry_failed` the
    failed and cancelled ones); `bench run`, `bench sweep` and the API all end here.

    `show_plan` sees the plan before anything is checked or written. Every check (bench.launch.preflight)
    runs before the results folder is created. A SIGINT or SIGTERM during a waiting launch
    checkpoints the running run and starts no other (`stopped` names the signal).
    """
    launcher = make_launcher(options.launcher, options.progress, options.workers,
                             slurm_settings(options.slurm), options.job_name)
    if options.baseline is not None and options.baseline not in {r.method for r in runs}:
        raise ConfigError(f"baseline {options.baseline!r} is not among the runs' methods: "
                          f"{', '.join(sorted({r.method for r in runs}))}")
    check_run_folders(runs, out)
    states = {s.run_id: s for s in run_states(out, [r.run_id for r in runs])}
    todo = runs_to_do(runs, out, options.retry_failed, states)
    if options.dry_run:  # no process group to join: planning reads names and files alone
        result = Launch(out, list(runs), states, todo,
                        reports=os.environ.get("RANK", "0") == "0")
        if show_plan is not None and result.reports:
            show_plan(result)
        if options.launcher == "slurm" and todo:
            result.script = launcher.script(out, len(todo))
        return result
    from bench.launch.preflight import validate
    from bench.runtime import distributed

    dist = distributed.init_from_env()  # under torchrun: one process per device, together (DDP)
    if dist.world > 1 and (options.launcher != "local" or options.workers > 1):
        raise BenchError("under torchrun every process trains each run together: use the local "
                         "launcher with one worker")
    todo = distributed.from_main(todo)  # rank 0's reading of the folder, on every rank
    result = Launch(out, list(runs), states, todo, reports=dist.is_main)
    if show_plan is not None and dist.is_main:
        show_plan(result)
    if todo:
        launcher.preflight()
    datasets = validate(todo, out)
    out = store.ensure_writable(out)
    signals = stopping.handle_signals() if _main_thread() else contextlib.nullcontext()
    with signals:
        result.summaries = launcher.launch(todo, out, datasets)
        result.stopped = stopping.requested()
    if not dist.is_main:
        return result
    if launcher.waits and options.report and result.stopped is None and not result.interrupted:
        from bench.report.build import write_report

        result.report = write_report([out], out / "report", baseline=options.baseline,
                                     option_defaults=options.option_defaults)
    elif not launcher.waits and todo:
        result.job_id = launcher.jobs[0].job_id.split("_")[0]
    return result


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
