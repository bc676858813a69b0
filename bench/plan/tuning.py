"""`bench tune`'s two stages through the ordinary launchers: the trials (OUT/tune/), then, once
every trial has a score, the comparison at each row's chosen recipe (OUT/), with the choices in
OUT/tuning.json. Rerunning skips what is finished, so with a launcher that does not wait
(SLURM) the same command submits the trials first and the comparison once they are done."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import store
from bench.core.files import TRIALS_DIR, TUNING
from bench.launch.launchers import Launch, LaunchOptions, launch_runs
from bench.launch.status import read_summary
from bench.plan.sweep import SweepSpec
from bench.plan.tune import (
    Choice,
    TuneSpec,
    choose,
    final_runs,
    plan_rows,
    tuning_record,
)


@dataclass
class Tuned:
    """What a `bench tune` call found and did: the trials' launch, the choices so far, and
    the comparison's launch once every row has its recipe (else None)."""

    trials: Launch
    choices: list[Choice]
    finals: Launch | None = None
    tuning: dict[str, Any] | None = None

    @property
    def waiting(self) -> int:
        """Tuned rows without a recipe yet (trials unfinished or failed)."""
        return sum(c.chosen is None for c in self.choices)


def run_tune(sweep: SweepSpec, tune: TuneSpec, out: Path, options: LaunchOptions,
             show_plan: Callable[[Launch], None] | None = None) -> Tuned:
    """Launch the trials into `out/tune`, choose each row's recipe from their summaries, and
    launch the comparison into `out` when every row has one (a dry run plans the trials only:
    the comparison depends on their scores)."""
    rows = plan_rows(sweep, tune)
    trials = [t for row in rows for t in row.trials]
    trial_options = dataclasses.replace(options, report=False,
                                        job_name=f"{options.job_name}-trials")
    launched = launch_runs(trials, out / TRIALS_DIR, trial_options, show_plan)
    summaries = {t.run_id: read_summary(out / TRIALS_DIR / t.run_id) or {} for t in trials}
    choices = choose(rows, tune, summaries)
    result = Tuned(launched, choices)
    if options.dry_run or result.waiting or not launched.reports:
        return result
    finals = final_runs(rows, choices, sweep)
    result.tuning = tuning_record(tune, choices, finals)
    store.write_json(store.ensure_writable(out) / TUNING, result.tuning)
    result.finals = launch_runs(finals, out, options, show_plan)
    return result
