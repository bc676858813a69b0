"""A run as a job, wherever it executes (this process, a local worker, a SLURM array task):
it takes the run's lock (bench.launch.lock), records each start (attempts.jsonl), trains, and leaves
a failure record or, when stopped, a resumable run (bench.launch.status tells which).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from submitit.helpers import Checkpointable, DelayedSubmission

from bench.core import store
from bench.core.config import RunConfig
from bench.core.errors import DiskFullError
from bench.core.files import ATTEMPTS
from bench.core.runfolder import check_config
from bench.launch.lock import Holder, RunLock
from bench.launch.status import read_summary
from bench.runtime import compiling, distributed, stopping

if TYPE_CHECKING:
    from bench.run.hooks import Hook

log = logging.getLogger(__name__)


def checkpoint_position(run_dir: Path) -> tuple[int, int]:
    """(epochs finished, steps of the next epoch finished) in the run's newest readable
    checkpoint, (0, 0) without one: where training resumes."""
    from bench.run import checkpoint

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
        hooks: Sequence[Hook] = (),
        raise_errors: bool = False,
        compile_cache: str | None = None,
    ):
        self.cfg = cfg
        self.run_dir = run_dir
        self.progress = progress
        self.threads = threads  # torch threads: results depend on them, so they are fixed
        self.hooks = tuple(hooks)  # watch the training loop (bench.run.hooks): picklable
        self.raise_errors = raise_errors  # debug launcher: let pdb see the error
        self.compile_cache = compile_cache  # inductor's cache folder in the job's process

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A job pickled before training-loop hooks existed (a SLURM job in flight across an
        upgrade) had an after-epoch `interrupt` callable: it becomes a hook."""
        if "interrupt" in state:
            from bench.run.hooks import AfterEpoch

            interrupt = state.pop("interrupt")
            state["hooks"] = () if interrupt is None else (AfterEpoch(interrupt),)
        self.__dict__.update(state)

    def __call__(self) -> dict[str, Any]:
        """The job's entry point (SLURM task, worker process): its log says what it did.

        Every task of a multi-task SLURM job calls it: the tasks join one process group
        (bench.runtime.distributed) and train the run together; a single task stays alone. It compiles
        into `compile_cache` (bench.runtime.compiling.sweep_cache), which the launcher chose.
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
        # Data-parallel ranks (bench.runtime.distributed): rank 0 holds the lock for all; all follow it.
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
        from bench.run.loop import RunInterrupted
        from bench.run.records import summary_record, write_failure
        from bench.run.train import train_run

        summary = read_summary(self.run_dir)
        if summary is not None and summary.get("status") == "ok":
            if check_config(self.run_dir).state in ("broken", "missing"):
                self._repair_config(data)
            return summary  # finished (meanwhile by another submission, or config repaired)
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
            return train_run(self.cfg, self.run_dir, self.progress, self.hooks, data)
        except (RunInterrupted, DiskFullError) as err:  # no summary: `interrupted`, resumable
            log.warning("run %s %s", self.cfg.run_id, err)
            return summary_record(self.cfg, "interrupted", error=str(err))
        except Exception as err:
            if stopping.requested() is not None:
                return self._stopped(err)
            # Recorded in summary.json: reports list it, the sweep goes on.
            log.error("run %s failed: %s", self.cfg.run_id, err)
            summary = write_failure(self.cfg, self.run_dir, err)
            if self.raise_errors:
                raise
            return summary

    def _repair_config(self, data: Any) -> None:
        """A finished run whose config.json cannot be read (`bench status`: broken): rewrite
        it (bench.run.records.repair_config); its numbers stand, nothing is trained."""
        from bench.data import dataset_key, load_dataset
        from bench.run.records import repair_config

        if not distributed.current().is_main:
            return
        data = data if data is not None else load_dataset(*dataset_key(self.cfg))
        kept = repair_config(self.run_dir, self.cfg, data)
        log.warning("run %s: its config.json was unreadable or missing: rewritten from the "
                    "planned configuration%s", self.cfg.run_id,
                    f" (the old file is {kept.name})" if kept else "")

    def _stopped(self, err: Exception) -> dict[str, Any]:
        """A signal asked this process to stop and something it reached first broke the run
        (a DataLoader worker dead of the same signal sent to the process group): an
        interruption however it arrived, resumable from the last checkpoint, never a failure
        that a rerun would skip."""
        from bench.run.records import summary_record

        signal = stopping.requested()
        log.warning("run %s stopped by %s (%s: %s); rerun to resume from its last checkpoint",
                    self.cfg.run_id, signal, type(err).__name__, err)
        return summary_record(self.cfg, "interrupted", error=f"stopped by {signal}")

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        # Runs inside submitit's signal handler: nothing here may fail or take long.
        log.warning("run %s preempted or out of time: requeued, it resumes from its last "
                    "checkpoint", self.cfg.run_id)
        return super().checkpoint(*args, **kwargs)
