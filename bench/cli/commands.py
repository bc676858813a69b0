"""One function per `bench` command: each parses nothing (bench.cli.arguments did), calls the
library and returns an exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from bench.cli.arguments import EXIT_FAILED_RUNS, parse_assignments, run_settings, sweep_settings
from bench.core.errors import BenchError


@contextlib.contextmanager
def notes():
    """Warnings the library raises inside (e.g. a duplicate seed dropped), as one
    `note:` line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)


def launch_options(args: argparse.Namespace, slurm: dict[str, Any], job_name: str):
    from bench.launch.launchers import LaunchOptions
    from bench.plan.sweep import option_defaults

    return LaunchOptions(launcher=args.launcher, workers=args.workers,
                         retry_failed=args.retry_failed, dry_run=args.dry_run,
                         progress=not args.no_progress, slurm=slurm, job_name=job_name,
                         option_defaults=option_defaults())


def cmd_run(args: argparse.Namespace) -> int:
    from bench import api
    from bench.launch.launchers import launch_runs

    settings, slurm = api.split_launcher_settings(run_settings(args))
    with notes():
        runs = api.plan(args.methods, seeds=args.seeds, **settings)
    return finish(launch_runs(runs, args.out, launch_options(args, slurm, "maskbench-run"),
                                  print_plan))


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench import api
    from bench.launch.launchers import launch_runs

    with notes():
        seeds = None if args.seeds is None else api.unique(args.seeds, "seed")
    spec = api.load_sweep(args.spec, seeds=seeds, settings=sweep_settings(args))
    out = args.out or spec.out or Path("results") / spec.name
    options = launch_options(args, spec.slurm, f"maskbench-{spec.name}")
    if spec.tune:
        print(f"note: {args.spec} has a [tune] table, which bench sweep does not read: every "
              f"row runs at one shared recipe (bench tune {args.spec}: each at its own)",
              file=sys.stderr)
    return finish(launch_runs(spec.runs(), out, options, print_plan))


def cmd_tune(args: argparse.Namespace) -> int:
    from bench import api

    with notes():
        seeds = None if args.seeds is None else api.unique(args.seeds, "seed")
    tuned = api.tune(args.spec, launcher=args.launcher, out=args.out, seeds=seeds,
                     settings=sweep_settings(args), metric=args.metric, workers=args.workers,
                     retry_failed=args.retry_failed, progress=not args.no_progress,
                     dry_run=args.dry_run, show_plan=print_plan)
    trials = tuned.trials
    if args.dry_run:
        print(f"then the comparison: its runs at the sweep's seeds, each of the "
              f"{len(tuned.choices)} tuned rows at its best recipe (chosen from the trials' "
              "validation scores)")
        return finish(trials)
    if tuned.finals is None:
        code = finish(trials)
        if trials.reports and trials.stopped is None:
            print(f"{tuned.waiting} of {len(tuned.choices)} rows wait for their trials; rerun "
                  "this command once they are finished (failed ones: --retry-failed)")
        return code
    for choice in tuned.choices:
        recipe = ", ".join(f"{k}={v}" for k, v in choice.chosen.items())
        print(f"{choice.row.base.method}: {recipe}")
    return finish(tuned.finals)


def finish(launch) -> int:
    """What a launch ends with on the terminal, and its exit code: 0 when every launched run
    finished (or was submitted), 1 when some failed, 130/143 when a signal stopped it."""
    from bench.runtime.stopping import EXIT_CODES

    if not launch.reports:
        return 0  # rank 0 reports
    if launch.script is not None:
        print(launch.script)
    if launch.stopped is not None:
        print(f"stopped by {launch.stopped}: the running run wrote a checkpoint; rerun the same "
              "command to resume", file=sys.stderr)
        return EXIT_CODES.get(launch.stopped, 1)
    for summary in launch.interrupted:  # e.g. a full disk: say why, then stop
        print(f"error: run {summary['run_id']} stopped: {summary.get('error')}", file=sys.stderr)
        return EXIT_FAILED_RUNS
    if launch.report is not None:
        print_report(launch.report)
    if launch.job_id is not None:
        print(f"submitted {len(launch.todo)} runs as SLURM job {launch.job_id}; follow them "
              f"with: python -m bench status {launch.out}")
    if launch.failed:
        print(f"error: {len(launch.failed)} of {len(launch.todo)} runs failed; their errors: "
              f"python -m bench status {launch.out}", file=sys.stderr)
        return EXIT_FAILED_RUNS
    return 0


def print_report(report_html: Path) -> None:
    """The report's path and main tables on stdout, in one write: a terminal whose encoding
    cannot show them (PYTHONIOENCODING=ascii: ±, ·) gets one line saying so, and the report,
    already written, stays as it is."""
    text = f"report: {report_html}\n{main_tables(report_html)}"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except UnicodeEncodeError as err:
        raise BenchError(f"the report is written ({report_html}), but stdout's encoding "
                         f"({err.encoding}) cannot print its tables: read report.md there, or "
                         "set PYTHONIOENCODING=utf-8") from None


def main_tables(report_html: Path) -> str:
    """The main table of each section, as report.md beside `report_html` has them (title,
    rows, no notes): what a finished run or report shows on the terminal."""
    lines = (report_html.parent / "report.md").read_text().splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("**") and line.endswith(": main table**"):
            block = [line.strip("*")]
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                block.append(row)
            out.append("\n".join(block) + "\n")
    return "\n".join(out)


def print_plan(launch) -> None:
    """Count, run ids, state and what differs between the runs; `+` marks those launched now."""
    from bench.core.config import differing_keys
    from bench.launch.status import describe_run
    from bench.plan.sweep import option_defaults

    runs, states, todo, out = launch.runs, launch.states, launch.todo, launch.out
    counts: dict[str, int] = {}
    for r in runs:
        counts[states[r.run_id].state] = counts.get(states[r.run_id].state, 0) + 1
    held = [f"{n} {k}" for k, n in sorted(counts.items()) if k not in ("done", "new", "interrupted")]
    extra = f", {', '.join(held)}" if held else ""
    print(f"{len(runs)} runs ({counts.get('done', 0)} already done{extra}, {len(todo)} to run) -> {out}")
    keys = differing_keys(runs)
    print(f"runs differ in: {', '.join(keys) or 'nothing'}")
    launched = {r.run_id for r in todo}
    defaults = option_defaults()
    for r in runs:
        mark = "+" if r.run_id in launched else " "
        print(f"{mark} {r.run_id}  {states[r.run_id].state:<11}  "
              f"{describe_run(r, keys, defaults)}")
    if any(states[r.run_id].state in ("failed", "cancelled") for r in runs if r.run_id not in launched):
        print("failed and cancelled runs are kept as they are; rerun them with --retry-failed")


def cmd_status(args: argparse.Namespace) -> int:
    from bench.launch.status import format_status, run_states
    from bench.plan.sweep import option_defaults

    if not args.dir.is_dir():
        raise BenchError(f"no such results folder: {args.dir}")
    states = run_states(args.dir)
    if not states:
        raise BenchError(f"no runs under {args.dir} (a run folder holds job.json, config.json "
                         "or summary.json)")
    if args.json:
        print(json.dumps([vars(s) for s in states], indent=2, default=str))
    else:
        print(format_status(states, option_defaults()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.plan.sweep import option_defaults
    from bench.report.build import write_report

    for d in args.dirs:
        if not d.is_dir():
            raise BenchError(f"no such results folder: {d}")
    out = args.out or args.dirs[0] / "report"
    print_report(write_report(args.dirs, out, baseline=args.baseline, primary=args.primary,
                              option_defaults=option_defaults()))
    return 0


def catalog() -> dict[str, dict[str, str]]:
    """What `bench list` prints: methods, reference rows, encoders, datasets (no torch)."""
    from bench.core.references import REFERENCE_ROWS
    from bench.data import DATASETS
    from bench.models.presets import ENCODERS
    from bench.plan.sweep import known_methods

    out: dict[str, dict[str, str]] = {"methods": {}, "references": {
        name: row.description for name, row in REFERENCE_ROWS.items()}}
    for name in known_methods().names():
        card = known_methods().get(name)
        mods = "/".join(sorted(card.modalities))
        kinds = ", ".join(sorted(card.encoder_kinds))
        out["methods"][name] = f"{card.summary} [{mods}; encoders: {kinds}]"
    out["encoders"] = {
        n: f"{ENCODERS.get(n).description} [{ENCODERS.get(n).kind}]" for n in ENCODERS.names()
    }
    out["datasets"] = {
        n: f"{DATASETS.get(n).description} [{DATASETS.get(n).modality}]" for n in DATASETS.names()
    }
    return out


def cmd_list(args: argparse.Namespace) -> int:
    cat: dict = catalog()
    sizes = None
    if args.dataset:  # builds the presets: torch, only when asked
        from bench.models.sizes import format_sizes, preset_sizes

        sizes = preset_sizes(args.dataset)
    if args.json:
        print(json.dumps(cat if sizes is None else {**cat, "encoder_sizes": sizes}, indent=2))
        return 0
    for section, items in cat.items():
        print(f"{section}:")
        width = max(map(len, items), default=0)
        for name, line in items.items():
            print(f"  {name:<{width}}  {line}")
    if sizes is not None:
        print(f"encoder sizes on {args.dataset}:")
        print(format_sizes(sizes))
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from bench.models.sizes import format_sizes, preset_sizes

    rows = preset_sizes(args.dataset)
    print(json.dumps(rows, indent=2) if args.json else format_sizes(rows))
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from bench.checks.perf import PerfOptions, format_table, measure

    opts = PerfOptions(
        methods=args.methods, encoder=args.encoder, dataset=args.dataset, batch=args.batch,
        steps=args.steps, warmup=args.warmup, device=args.device or "auto",
        image_size=args.image_size, compile=args.compile, data_root=args.data_root,
        compile_mode=args.compile_mode, precision=args.precision,
        settings=parse_assignments(args.settings),
    )
    rows = measure(opts)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.export import export_run

    done = export_run(args.run_dir, args.to, args.out, force=args.force)
    print(f"wrote {done.path} ({done.tensors} tensors); load it with:\n{done.load}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from bench.data.streaming import download

    print(f"{args.dataset}: {download(args.dataset, args.data_root)}")
    return 0
