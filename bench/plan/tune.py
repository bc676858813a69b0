"""`bench tune`: each method of a comparison at its own recipe, chosen without the test split.

A sweep file's `[tune]` table names a small grid over the recipe (`TUNE_KEYS`: base_lr,
weight_decay, decoder_depth, warm-up) and how trials are scored:

    [tune]
    base_lr = [1.5e-4, 5e-4, 1.5e-3]
    warmup = [0.05, 0.2]
    metric = "linear_top1"   # the primary metric, scored on the validation split: val_linear_top1
    val_fraction = 0.1       # share of the training split held out (bench.data.validation)
    seeds = [0]              # trial seeds (default: the sweep's first)

Every row of the comparison (a run of the sweep at one seed; reference rows are not tuned)
gets one trial per grid point and trial seed: an ordinary run with `val_fraction` set (so it
resumes, is skipped when finished and goes to SLURM as an array like any other), whose
protocols fit on the training split less one fixed validation subset and report `val_*` scores
on that subset. A row's recipe is the grid
point with the best mean score over trial seeds (ties: the first in grid order); the
comparison then runs at the sweep's seeds with each row at its chosen recipe. `tuning.json`
in the results folder records every trial, score and choice, and the report shows them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

from bench.core.config import PROTOCOLS, RunConfig, apply_overrides
from bench.core.errors import ConfigError
from bench.core.references import REFERENCE_ROWS
from bench.plan.sweep import SweepSpec, resolve_run

TUNE_KEYS = ("base_lr", "weight_decay", "decoder_depth", "warmup", "warmup_epochs")
TUNE_SETTINGS = ("metric", "val_fraction", "seeds")
DEFAULT_METRIC = "linear_top1"  # the primary metric where none is declared
DEFAULT_VAL_FRACTION = 0.1


@dataclass
class TuneSpec:
    """A checked `[tune]` table."""

    grid: dict[str, list[Any]]
    metric: str = DEFAULT_METRIC
    val_fraction: float = DEFAULT_VAL_FRACTION
    seeds: list[int] | None = None

    @property
    def points(self) -> list[dict[str, Any]]:
        """Every recipe of the grid, in grid order."""
        return [dict(zip(self.grid, row)) for row in itertools.product(*self.grid.values())]


def tune_spec(raw: dict[str, Any], metric: str | None = None) -> TuneSpec:
    """Check a `[tune]` table: grid keys among `TUNE_KEYS` with non-empty lists, a metric a
    protocol reports (`metric` overrides the table's), a validation share in (0, 1); an
    unknown key raises ConfigError naming the valid ones."""
    if not raw:
        raise ConfigError("no [tune] table: add one with a grid over "
                          f"{', '.join(TUNE_KEYS)} (see bench/plan/tune.py)")
    grid = {}
    for key, values in raw.items():
        if key in TUNE_SETTINGS:
            continue
        if key not in TUNE_KEYS:
            raise ConfigError(f"unknown key tune.{key}; tune grids: {', '.join(TUNE_KEYS)}; "
                              f"settings: {', '.join(TUNE_SETTINGS)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"tune.{key} must be a non-empty list, got {values!r}")
        for value in values:
            apply_overrides(RunConfig(), {key: value})  # typed and bounded as a run field
        grid[key] = values
    if not grid:
        raise ConfigError(f"[tune] has no grid: give lists for some of {', '.join(TUNE_KEYS)}")
    chosen = metric or raw.get("metric", DEFAULT_METRIC)
    scored = [f"{p}_top1" for p in PROTOCOLS]
    if chosen not in scored:
        raise ConfigError(f"tune metric {chosen!r}: must be one of {', '.join(scored)}")
    fraction = raw.get("val_fraction", DEFAULT_VAL_FRACTION)
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(f"tune.val_fraction must be in (0, 1), got {fraction!r}")
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds
                              or not all(type(s) is int for s in seeds)):
        raise ConfigError(f"tune.seeds must be a non-empty list of integers, got {seeds!r}")
    return TuneSpec(grid, chosen, float(fraction), seeds)


def recipe_of(cfg: RunConfig, keys: tuple[str, ...] = TUNE_KEYS) -> dict[str, Any]:
    """The recipe settings of a run."""
    return {k: getattr(cfg, k) for k in keys}


@dataclass
class Row:
    """One row of the comparison: its run at the sweep's first seed (`base`), its trials."""

    base: RunConfig
    trials: list[RunConfig]

    @property
    def key(self) -> str:
        """The row's identity without seed (its base run id at seed 0)."""
        return dataclasses.replace(self.base, seed=0).run_id

    @property
    def tuned(self) -> bool:
        return self.base.method not in REFERENCE_ROWS


def plan_rows(sweep: SweepSpec, tune: TuneSpec) -> list[Row]:
    """The comparison's rows (its runs, one per configuration whatever the seed) and each
    tuned row's trials: every grid point at every trial seed, with `val_fraction` set. A
    grid point the row cannot run (e.g. decoder_depth with decoder=conv) raises ConfigError."""
    runs = sweep.runs()
    if tune.metric.removesuffix("_top1") not in {
            p for r in runs for p in r.protocols.split(",")}:
        raise ConfigError(f"tune metric {tune.metric}: the runs do not evaluate "
                          f"{tune.metric.removesuffix('_top1')} (protocols=...)")
    first = {}
    for run in runs:
        first.setdefault(dataclasses.replace(run, seed=0).run_id, run)
    trial_seeds = tune.seeds or [min(r.seed for r in runs)]
    rows = []
    for base in first.values():
        trials = []
        if base.method not in REFERENCE_ROWS:
            for point in tune.points:
                for seed in trial_seeds:
                    cfg = apply_overrides(base, {**_recipe_reset(base, point), **point,
                                                 "val_fraction": tune.val_fraction,
                                                 "seed": seed})
                    trials.append(resolve_run(cfg))
        rows.append(Row(base, trials))
    return rows


def _recipe_reset(base: RunConfig, point: dict[str, Any]) -> dict[str, Any]:
    """Settings a grid point needs cleared: a `warmup` share replaces warmup_epochs, so the
    row's own warmup_epochs goes back to its default (and the reverse)."""
    defaults = RunConfig()
    if "warmup" in point:
        return {"warmup_epochs": defaults.warmup_epochs}
    if "warmup_epochs" in point:
        return {"warmup": None}
    return {}


@dataclass
class Choice:
    """A tuned row's trials scored, and the recipe chosen (None: not every trial finished)."""

    row: Row
    scores: list[dict[str, Any]]  # per grid point: recipe, mean score, per-seed scores, run ids
    chosen: dict[str, Any] | None


def choose(rows: list[Row], tune: TuneSpec, summaries: dict[str, dict]) -> list[Choice]:
    """Each tuned row's best grid point by the mean `val_<metric>` of its trials (`summaries`:
    run id -> summary.json of the finished ones); a row with an unfinished or failed trial,
    or one without the score, has no choice yet."""
    name = f"val_{tune.metric}"
    out = []
    for row in rows:
        if not row.tuned:
            continue
        scores = []
        for point in tune.points:
            trials = [t for t in row.trials if recipe_of(t, tuple(point)) == point]
            values = [summaries.get(t.run_id, {}).get("metrics", {}).get(name) for t in trials]
            done = all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            scores.append({"recipe": point, "score": sum(values) / len(values) if done else None,
                           "scores": values, "run_ids": [t.run_id for t in trials]})
        ready = all(s["score"] is not None for s in scores)
        best = max(scores, key=lambda s: s["score"]) if ready else None  # first of equals
        out.append(Choice(row, scores, None if best is None else best["recipe"]))
    return out


def final_runs(rows: list[Row], choices: list[Choice], sweep: SweepSpec) -> list[RunConfig]:
    """The comparison at the sweep's seeds, each tuned row at its chosen recipe (reference
    rows as they are); only when every tuned row has a choice."""
    chosen = {c.row.key: c.chosen for c in choices}
    if any(v is None for v in chosen.values()):
        raise ConfigError("not every row has a chosen recipe yet")
    seeds = sweep.seeds if sweep.seeds is not None else [rows[0].base.seed]
    runs = []
    for row in rows:
        point = chosen.get(row.key) or {}
        for seed in seeds:
            cfg = apply_overrides(row.base, {**_recipe_reset(row.base, point), **point,
                                             "seed": seed})
            runs.append(resolve_run(cfg))
    return runs


def tuning_record(tune: TuneSpec, choices: list[Choice],
                  finals: list[RunConfig]) -> dict[str, Any]:
    """What `tuning.json` holds: the grid, metric and split, and per tuned row its trials'
    scores, the chosen recipe and the run ids of its comparison runs."""
    rows = []
    for c in choices:
        rows.append({
            "method": c.row.base.method,
            "options": c.row.base.options,
            "row": c.row.key,
            "trials": c.scores,
            "chosen": c.chosen,
            "runs": [r.run_id for r in finals if _same_row(r, c)],
        })
    return {"metric": tune.metric, "scored_as": f"val_{tune.metric}",
            "val_fraction": tune.val_fraction, "grid": tune.grid,
            "trial_seeds": sorted({t.seed for c in choices for t in c.row.trials}), "rows": rows}


def _same_row(run: RunConfig, choice: Choice) -> bool:
    """Whether `run` is `choice`'s row at its chosen recipe (any seed)."""
    point = choice.chosen or {}
    at = apply_overrides(choice.row.base, {**_recipe_reset(choice.row.base, point), **point,
                                           "seed": run.seed})
    return resolve_run(at).run_id == run.run_id
