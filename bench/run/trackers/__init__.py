"""Experiment trackers: a run also logs to TensorBoard, W&B or MLflow (`log_to=`, `--log-to`).
The run folder stays the source of truth; a tracker holds a copy where researchers look.

What a run logs, each name saying which run-folder file holds the same value:

    config           config.json (when the run starts fresh)
    steps/loss       steps.jsonl (`log_every`)
    epoch/<key>      metrics.jsonl: loss, lr and the `--eval-every` knn_top1
    final/<metric>   summary.json's metrics
    compute/<key>    summary.json's compute (its numbers)
    reconstructions  reconstructions.pt as one picture (image runs)

The x axis is always the number of optimisation steps done (an epoch's record sits at its last
step, the final values at the run's last step). A resumed run continues the same tracker run,
and nothing is logged twice (each adapter says how). Only rank 0 logs under DDP. A tracker
that cannot be used (package missing, bad URI) is a `TrackerError` before training starts; one
that fails later is a warning and is dropped: the run goes on.

One module per library (`<name>_tracker.py`), each with `check(site)` and `start(site,
resume_step) -> Tracker`.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.core import files, store, tensorfile
from bench.core.config import RunConfig, tracker_list
from bench.core.errors import TrackerError
from bench.runtime import distributed

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'maskbench[trackers]'"
POSITION_KEYS = ("epoch", "step")  # where a record sits, not a value to plot


class Tracker(Protocol):
    """One library's run. `step`: optimisation steps done."""

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, values: Mapping[str, float], step: int) -> None: ...

    def log_image(self, name: str, image: Any, step: int) -> None:
        """`image`: RGB uint8 `[H, W, 3]` (numpy)."""

    def finish(self, status: str) -> None:
        """`status`: ok, failed or interrupted (it resumes later)."""


@dataclass(frozen=True)
class TrackerSite:
    """Where a run is: its id and folder, and its results folder (`out`), whose name is the
    sweep's (`results/<sweep>/<run_id>`): the W&B group and MLflow experiment."""

    run_id: str
    run_dir: Path
    out: Path

    @classmethod
    def of(cls, run_id: str, run_dir: Path) -> TrackerSite:
        run_dir = Path(run_dir).resolve()
        return cls(run_id, run_dir, run_dir.parent)

    @property
    def group(self) -> str:
        return self.out.name

    @property
    def unique_id(self) -> str:
        """The run id plus a hash of the results folder: the same configuration in two results
        folders is two tracker runs, the same folder resumed is one."""
        digest = hashlib.blake2b(str(self.out).encode(), digest_size=4).hexdigest()
        return f"{self.run_id}-{digest}"


def _adapter(name: str):
    try:
        return importlib.import_module(f"bench.run.trackers.{name}_tracker")
    except ImportError as err:
        raise TrackerError(f"log_to={name} needs the {err.name or name} package, which is not "
                           f"installed: {INSTALL_HINT}") from None


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def check(names: Sequence[str], site: TrackerSite) -> None:
    """Every tracker in `names` can be used for a run at `site`, else TrackerError."""
    for name in names:
        module = _adapter(name)
        try:
            module.check(site)
        except TrackerError:
            raise
        except Exception as err:  # the library's own complaint, in one line
            raise TrackerError(f"log_to={name}: {_one_line(err)}") from None


def check_runs(runs: Sequence[RunConfig], out: Path) -> None:
    """Before launching: the trackers every run asks for can be used (once per distinct list)."""
    for names in dict.fromkeys(tracker_list(r.log_to) for r in runs):
        if names:
            check(names, TrackerSite.of("check", Path(out) / "check"))


def _numbers(record: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in record.items()
            if k not in POSITION_KEYS and isinstance(v, int | float) and not isinstance(v, bool)}


class RunTracker:
    """Every tracker of one run, called at the points where the run folder is written. With
    no names (or off rank 0) every call does nothing."""

    def __init__(self, names: Sequence[str], site: TrackerSite):
        self.names, self.site = tuple(names), site
        self.active: dict[str, Tracker] = {}
        self.started = False
        self.step = 0  # the last step logged: where the final values go

    def start(self, resume_step: int) -> None:
        """Open (or, with `resume_step` > 0 steps done, continue) each tracker's run; a fresh
        run also logs its config.json. Called once, before the first training step."""
        if self.started or not self.names:
            return
        self.started, self.step = True, resume_step
        for name in self.names:
            try:
                self.active[name] = _adapter(name).start(self.site, resume_step)
            except TrackerError:
                raise
            except Exception as err:
                raise TrackerError(f"log_to={name}: cannot start the run: {_one_line(err)}") from None
        config_path = self.site.run_dir / files.CONFIG
        if resume_step == 0 and config_path.exists():
            self._each("log_config", store.read_json(config_path))

    def log_metrics(self, record: Mapping[str, Any], step: int, prefix: str) -> None:
        """The numbers of a run-folder record (`prefix`: the file, see the module doc)."""
        if not self.names:
            return
        self.start(0)
        self.step = max(self.step, step)
        values = _numbers(record, prefix)
        if values:
            self._each("log_metrics", values, step)

    def log_result(self, summary: Mapping[str, Any]) -> None:
        """The final metrics and compute, and the reconstructions (when the run saved them)."""
        if not self.names:
            return
        self.log_metrics(summary.get("metrics", {}), self.step, "final")
        self.log_metrics(summary.get("compute", {}), self.step, "compute")
        path = self.site.run_dir / files.RECONSTRUCTIONS
        if path.exists():
            from bench.report.figures import reconstruction_grid

            grid = reconstruction_grid(tensorfile.load_arrays(path))
            self._each("log_image", "reconstructions", grid, self.step)

    def finish(self, status: str) -> None:
        self._each("finish", status)
        self.active.clear()

    def _each(self, method: str, *args: Any) -> None:
        """Call `method` on every tracker; one that fails is dropped with a warning."""
        for name, tracker in list(self.active.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:
                log.warning("log_to=%s failed (%s); the run goes on without it (its folder "
                            "%s has everything)", name, _one_line(err), self.site.run_dir)
                del self.active[name]


@contextmanager
def open_run(cfg: RunConfig, run_dir: Path,
             stopped: tuple[type[BaseException], ...] = ()) -> Iterator[RunTracker]:
    """The run's trackers (checked now: a TrackerError before anything trains), finished on
    leaving: ok, failed, or interrupted for `stopped` exceptions and signals (it resumes)."""
    names = tracker_list(cfg.log_to) if distributed.current().is_main else ()
    site = TrackerSite.of(cfg.run_id, run_dir)
    check(names, site)
    tracker = RunTracker(names, site)
    try:
        yield tracker
    except stopped:
        tracker.finish("interrupted")
        raise
    except Exception:
        tracker.finish("failed")
        raise
    except BaseException:  # SIGTERM/requeue (SystemExit), Ctrl-C: the run resumes later
        tracker.finish("interrupted")
        raise
    tracker.finish("ok")
