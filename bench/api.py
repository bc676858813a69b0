"""Maskbench from Python (notebooks, scripts): the same planning, validation, launch and report
code as the command line, which is a thin layer over this module. Errors are exceptions
(bench.core.errors), never exit codes.

    from bench import api
    results = api.run(["qbheat", "mae"], dataset="digits", seeds=[0, 1], epochs=2,
                      out="results/nb", options={"mae": {"mask_ratio": 0.6}})
    table = api.collect(["results/nb"])              # one row per run x metric
    paths = api.report(["results/nb"], baseline="mae")
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.config import RunConfig
from bench.core.errors import ConfigError
from bench.launch.launchers import Launch, LaunchOptions, launch_runs

DEFAULT_METHODS = ("mae", "random-init")


@dataclass
class RunResult:
    """One run after a launch: its state (`done`, `failed`, `interrupted`, `pending`, ...), and
    what its summary.json says when it has one."""

    run_id: str
    method: str
    seed: int
    state: str
    run_dir: Path
    config: RunConfig
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    compute: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None


def _flat_settings(options: Mapping[str, Mapping[str, Any]] | None,
                   settings: Mapping[str, Any]) -> dict[str, Any]:
    """Run fields and `method.option` keys in one dict, as the command line spells them."""
    flat = dict(settings)
    for method, values in (options or {}).items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"options[{method!r}] must map option names to values")
        flat.update({f"{method}.{key}": value for key, value in values.items()})
    return flat


def unique(values: Iterable, what: str) -> list:
    """`values` in order, each once; each repeated value is dropped with one warning."""
    values = list(values)
    for value in dict.fromkeys(v for i, v in enumerate(values) if v in values[:i]):
        warnings.warn(f"duplicate {what} {value} dropped", stacklevel=3)
    return list(dict.fromkeys(values))


def plan(methods: Sequence[str] = DEFAULT_METHODS, *, seeds: Iterable[int] = (0,),
         options: Mapping[str, Mapping[str, Any]] | None = None,
         **settings: Any) -> list[RunConfig]:
    """The resolved, validated runs of `methods` x `seeds` with run fields `settings`
    (`epochs=2`, `dataset="digits"`) and method options (`options={"mae": {"mask_ratio": .6}}`,
    or `**{"mae.mask_ratio": 0.6}`)."""
    from bench.plan.sweep import expand

    methods, seeds = unique(methods, "method"), unique(seeds, "seed")
    if not methods:
        raise ConfigError("no method given; e.g. methods=['qbheat', 'mae']")
    if not seeds:
        raise ConfigError("no seed given; e.g. seeds=[0, 1, 2]")
    return expand(_flat_settings(options, settings), {"method": methods}, seeds=seeds)


def launch(runs: Sequence[RunConfig], out: str | Path, *, launcher: str = "local",
           workers: int = 1, retry_failed: bool = False, dry_run: bool = False,
           progress: bool = True, slurm: Mapping[str, Any] | None = None,
           job_name: str = "maskbench", report: bool = True, baseline: str | None = None,
           show_plan: Callable[[Launch], None] | None = None) -> Launch:
    """Launch planned runs into `out` (see bench.launch.launchers.launch_runs): skip done ones, resume
    interrupted ones, and write `out/report` when the launcher waited for them."""
    from bench.plan.sweep import option_defaults

    options = LaunchOptions(launcher, workers, retry_failed, dry_run, progress,
                            dict(slurm or {}), job_name, report, baseline, option_defaults())
    return launch_runs(runs, Path(out), options, show_plan)


def results(launched: Launch) -> list[RunResult]:
    """Every run of a launch as it stands on disk now."""
    from bench.launch.status import read_summary, run_states

    states = {s.run_id: s for s in run_states(launched.out, [r.run_id for r in launched.runs])}
    out = []
    for cfg in launched.runs:
        run_dir = launched.out / cfg.run_id
        summary = read_summary(run_dir) or {}
        state = states[cfg.run_id]
        out.append(RunResult(cfg.run_id, cfg.method, cfg.seed, state.state, run_dir, cfg,
                             summary.get("metrics") or {}, summary.get("compute") or {},
                             state.error or summary.get("error")))
    return out


def run(methods: Sequence[str] = DEFAULT_METHODS, *, seeds: Iterable[int] = (0,),
        out: str | Path = "results/run", launcher: str = "local", workers: int = 1,
        retry_failed: bool = False, progress: bool = True, report: bool = True,
        baseline: str | None = None, slurm: Mapping[str, Any] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        **settings: Any) -> list[RunResult]:
    """Plan, validate, train, evaluate and report `methods` x `seeds`, as `bench run` does;
    returns every run's result."""
    runs = plan(methods, seeds=seeds, options=options, **settings)
    launched = launch(runs, out, launcher=launcher, workers=workers, retry_failed=retry_failed,
                      progress=progress, slurm=slurm, job_name="maskbench-run", report=report,
                      baseline=baseline)
    return results(launched)


def load_sweep(spec: str | Path | Mapping[str, Any], *, seeds: Iterable[int] | None = None,
               settings: Mapping[str, Any] | None = None):
    """A sweep file (path) or the same content as a dict, with command-line-style overrides
    (`settings={"epochs": 1, "slurm.partition": "debug"}`) and optional seeds."""
    from bench.plan.sweep import load_spec, spec_from_dict

    sweep = load_spec(Path(spec)) if isinstance(spec, str | Path) else spec_from_dict(
        "sweep", dict(spec))
    run_settings, slurm = split_launcher_settings(dict(settings or {}))
    sweep = sweep.override(run_settings)
    if seeds is not None:
        sweep.seeds = list(seeds)
    for key, value in slurm.items():  # the overrides win, table by table
        merged = {**sweep.slurm.get(key, {}), **value} if isinstance(value, dict) else value
        sweep.slurm[key] = merged
    return sweep


def sweep(spec: str | Path | Mapping[str, Any], *, launcher: str = "local",
          out: str | Path | None = None, seeds: Iterable[int] | None = None,
          settings: Mapping[str, Any] | None = None, workers: int = 1,
          retry_failed: bool = False, progress: bool = True, report: bool = True,
          baseline: str | None = None) -> list[RunResult]:
    """Expand and launch a sweep (a sweep file or a dict of its content), as `bench sweep`."""
    loaded = load_sweep(spec, seeds=seeds, settings=settings)
    folder = Path(out) if out is not None else loaded.out or Path("results") / loaded.name
    launched = launch(loaded.runs(), folder, launcher=launcher, workers=workers,
                      retry_failed=retry_failed, progress=progress, slurm=loaded.slurm,
                      job_name=f"maskbench-{loaded.name}", report=report, baseline=baseline)
    return results(launched)


def tune(spec: str | Path | Mapping[str, Any], *, launcher: str = "local",
         out: str | Path | None = None, seeds: Iterable[int] | None = None,
         settings: Mapping[str, Any] | None = None, metric: str | None = None,
         workers: int = 1, retry_failed: bool = False, progress: bool = True,
         dry_run: bool = False, baseline: str | None = None,
         show_plan: Callable[[Launch], None] | None = None):
    """`bench tune`: a sweep's `[tune]` trials on a validation split of the training data, then
    the comparison with each row at its chosen recipe (bench.plan.tuning.run_tune; rerun to go
    on after trials a non-waiting launcher submitted). Returns what it did (`Tuned`)."""
    from bench.plan.tune import tune_spec
    from bench.plan.tuning import run_tune

    loaded = load_sweep(spec, seeds=seeds, settings=settings)
    folder = Path(out) if out is not None else loaded.out or Path("results") / loaded.name
    options = LaunchOptions(launcher, workers, retry_failed, dry_run, progress,
                            dict(loaded.slurm), f"maskbench-{loaded.name}", True, baseline)
    # the sweep's declared primary metric scores the trials unless --metric or [tune] says
    declared = metric or loaded.tune.get("metric") or loaded.fixed.get("primary_metric")
    return run_tune(loaded, tune_spec(loaded.tune, declared), folder, options, show_plan)


def collect(dirs: Iterable[str | Path]):
    """The long table the report uses (pandas): one row per run x metric of every run folder
    under `dirs`, failed runs included with their status."""
    from bench.report.aggregate import collect as collect_runs

    return collect_runs([Path(d) for d in dirs]).table


def report(dirs: Iterable[str | Path], *, baseline: str | None = None,
           out: str | Path | None = None, primary: str | None = None) -> dict[str, Path]:
    """Write the comparison report of the runs under `dirs` (default into the first's
    report/ folder); `primary`: the headline verdict's metric (default: the runs'
    primary_metric). Returns the paths of report.html, report.md, tables.tex and runs.csv."""
    from bench.plan.sweep import option_defaults
    from bench.report.build import write_report

    folders = [Path(d) for d in dirs]
    if not folders:
        raise ConfigError("no results folder given")
    target = Path(out) if out is not None else folders[0] / "report"
    html = write_report(folders, target, baseline=baseline, primary=primary,
                        option_defaults=option_defaults())
    return {"html": html, "markdown": target / "report.md", "latex": target / "tables.tex",
            "runs": target / "runs.csv"}


def split_launcher_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`slurm.KEY` settings become the [slurm] table (`slurm.sbatch.KEY` its sbatch table); the
    rest are run settings."""
    run_settings: dict[str, Any] = {}
    slurm: dict[str, Any] = {}
    for key, value in settings.items():
        if not key.startswith("slurm."):
            run_settings[key] = value
            continue
        *tables, name = key.split(".")[1:]
        target = slurm
        for table in tables:
            target = target.setdefault(table, {})
        target[name] = value
    return run_settings, slurm
