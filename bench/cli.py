"""Command line: run, sweep, tune, status, report, list, encoders, perf, export, download. The
only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from bench.core.config import COMPILE_MODES, PRECISIONS, comma_list
from bench.core.errors import BenchError, ConfigError, UnknownNameError
from bench.runtime import progress

EXIT_FAILED_RUNS = 1
EXIT_BAD_INPUT = 2


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`key=value` words -> dict (values stay strings; typed later against the dataclasses)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"expected KEY=VALUE (e.g. mae.mask_ratio=0.6), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def item_list(text: str, what: str) -> list[str]:
    """'a,b' -> ['a', 'b'] (bench.core.config.comma_list) as an argparse type."""
    try:
        return comma_list(text, what, EXAMPLES[what])
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


EXAMPLES = {"method": "qbheat,mae,interp", "seed": "0,1,2"}


def method_list(text: str) -> list[str]:
    return item_list(text, "method")


def seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in item_list(text, "seed")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2, got {text!r}") from None


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    from bench.core.config import PROTOCOLS, RunConfig

    d = RunConfig()
    p.add_argument("--methods", type=method_list, default=["mae", "random-init"],
                   help="comma list of methods and reference rows (see `bench list`); "
                        "default mae,random-init")
    p.add_argument("--dataset", help=f"dataset name (see `bench list`); default {d.dataset}")
    p.add_argument("--encoder", help=f"encoder preset (see `bench list`); default {d.encoder}")
    p.add_argument("--epochs", type=int, help=f"pretraining epochs; default {d.epochs}")
    p.add_argument("--batch-size", type=int,
                   help=f"global pretraining batch (split across processes); lr = base_lr x "
                        f"batch / 256; default {d.batch_size}")
    p.add_argument("--seeds", type=seed_list, default=[0],
                   help="comma list of seeds, one run per method and seed; default 0")
    p.add_argument("--out", type=Path, default=Path("results/run"),
                   help="results folder, one run folder per run inside; default results/run")
    p.add_argument("--data-root", help="folder holding the dataset files (only there: an "
                                       "explicit folder is never replaced by another)")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:N; default auto")
    p.add_argument("--train-limit", type=int,
                   help="pretrain on N training samples drawn once from the seed; default all")
    p.add_argument("--eval-train-limit", type=int,
                   help="fit the probes on the first N training samples; default all")
    p.add_argument("--eval-test-limit", type=int,
                   help="evaluate on the first N test samples; default all")
    p.add_argument("--eval-every", type=int,
                   help="also kNN every K epochs during pretraining (the equal-compute view); "
                        "default 0: only at the end")
    p.add_argument("--protocols",
                   help=f"evaluation protocols, comma list of {','.join(PROTOCOLS)}; default "
                        f"{d.protocols}")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the pretraining step; default: on CUDA only")
    add_launcher_arguments(p)


def int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= `minimum` (`what`, in the error message)."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return int(text)

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "a non-negative integer")


def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    """Where and how runs execute: shared by `run` and `sweep` (one code path)."""
    p.add_argument("--launcher", choices=("local", "slurm", "debug"), default="local",
                   help="local (default): here, one run after another (or --workers); slurm: "
                        "one job array (settings: the spec's [slurm] table or slurm.KEY=VALUE); "
                        "debug: submitit's in-process executor, errors stop in pdb")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="local: N runs at once in N processes (one GPU each when GPUs exist); "
                        "default 1")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs (and for slurm the sbatch script); launch nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="rerun runs that failed or were cancelled before")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-to", metavar="TRACKERS",
                   help="also log each run to these trackers: comma list of tensorboard, wandb, "
                        "mlflow (the run setting log_to; see README)")
    p.add_argument("settings", nargs="*", default=[], metavar="KEY=VALUE",
                   help="run fields (epochs=3), method options (mae.mask_ratio=0.6) or SLURM "
                        "settings (slurm.partition=gpu, slurm.sbatch.reservation=x)")


RUN_FLAGS = ("dataset", "encoder", "epochs", "batch_size", "data_root", "device", "train_limit",
             "eval_train_limit", "eval_test_limit", "eval_every", "protocols")


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    fixed = {k: getattr(args, k) for k in (*RUN_FLAGS, "log_to") if getattr(args, k) is not None}
    if args.compile is not None:
        fixed["compile"] = args.compile
    return {**fixed, **parse_assignments(args.settings)}


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


def sweep_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = parse_assignments(args.settings)
    if args.log_to is not None:
        settings["log_to"] = args.log_to
    return settings


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
        print(f"report: {launch.report}")
        print(main_tables(launch.report), end="")
    if launch.job_id is not None:
        print(f"submitted {len(launch.todo)} runs as SLURM job {launch.job_id}; follow them "
              f"with: python -m bench status {launch.out}")
    if launch.failed:
        print(f"error: {len(launch.failed)} of {len(launch.todo)} runs failed; their errors: "
              f"python -m bench status {launch.out}", file=sys.stderr)
        return EXIT_FAILED_RUNS
    return 0


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
    html = write_report(args.dirs, out, baseline=args.baseline, primary=args.primary,
                        option_defaults=option_defaults())
    print(f"report: {html}")
    print(main_tables(html), end="")
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


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block): exit 2, the help to read."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="pretrain, evaluate and report methods side by side")
    add_run_arguments(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("sweep", help="expand a sweep file (sweeps/*.toml) and launch its runs")
    p.add_argument("spec", type=Path, help="sweep file: fixed settings, [grid], [zip], seeds, [slurm]")
    p.add_argument("--out", type=Path, help="results folder (default: the spec's out, else results/NAME)")
    p.add_argument("--seeds", type=seed_list, help="replace the spec's seeds (e.g. 0,1,2)")
    add_launcher_arguments(p)
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("tune", help="each method at its own recipe: the sweep's [tune] grid as "
                       "trials scored on a validation split of the training data, then the "
                       "comparison at each row's best recipe")
    p.add_argument("spec", type=Path, help="sweep file with a [tune] table")
    p.add_argument("--out", type=Path, help="results folder (default: the spec's out, else "
                   "results/NAME); trials go to OUT/tune, the choices to OUT/tuning.json")
    p.add_argument("--seeds", type=seed_list, help="the comparison's seeds (e.g. 0,1,2)")
    p.add_argument("--metric", help="the score trials are chosen by, on the validation split "
                   "(default: the [tune] table's metric, else linear_top1)")
    add_launcher_arguments(p)
    p.set_defaults(fn=cmd_tune)

    p = sub.add_parser("status", help="state of every run in a results folder (and its SLURM job)")
    p.add_argument("dir", type=Path, help="a results folder (the --out of run or sweep)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("report", help="aggregate run folders into a report")
    p.add_argument("dirs", nargs="+", type=Path,
                   help="results folders; every run folder under them is read")
    p.add_argument("--out", type=Path, help="report folder (default: DIR/report of the first)")
    p.add_argument("--baseline",
                   help="method every other row is compared with, paired by seed (default: mae, "
                        "where it has runs); a baseline named must be a row of the report")
    p.add_argument("--primary", metavar="METRIC",
                   help="the metric the headline verdict speaks of (default: the runs' "
                   "primary_metric, linear_top1 unless set); the others are secondary")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("list", help="methods, reference rows, encoders and datasets")
    p.add_argument("--json", action="store_true", help="the same catalogue as JSON")
    p.add_argument("--dataset", help="also each encoder preset's parameters and FLOPs on this "
                   "dataset (as bench encoders; builds the presets, loads no data)")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("encoders", help="each encoder preset's parameters and FLOPs on a "
                       "dataset (builds the presets; loads no data)")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset (default fashion-mnist)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_encoders)

    p = sub.add_parser("perf", help="benchmark a pretraining step (samples/s, FLOPs, MFU)")
    p.add_argument("--methods", type=method_list, default=["mae"],
                   help="comma list of methods (default mae)")
    p.add_argument("--encoder", default="vit-micro", help="encoder preset (default vit-micro)")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="dataset whose data path is timed (default fashion-mnist)")
    p.add_argument("--batch", type=positive_int, default=256, help="global batch (default 256)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=non_negative_int, default=3,
                   help="untimed steps first: compilation, caches (default 3)")
    p.add_argument("--image-size", type=positive_int,
                   help="synthetic images of this size only (e.g. 224); no data path")
    p.add_argument("--device", help="auto (default), cuda, cuda:1, cpu")
    p.add_argument("--data-root", help="where the dataset's files are")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the step (default: on CUDA only, as in training)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                   help="torch.compile mode; reduce-overhead replays CUDA graphs (default: default)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast: auto (bf16 on CUDA only), bf16 or fp32 (default auto)")
    p.add_argument("--json", action="store_true", help="one JSON object per method")
    p.add_argument("settings", nargs="*", default=[], metavar="KEY=VALUE",
                   help="run fields of the timed run (decoder_depth=4, vocab_size=2000, "
                        "mae.mask_ratio=0.6)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_perf)

    p = sub.add_parser("export", help="write a finished run's encoder for timm (or as safetensors)")
    p.add_argument("run_dir", type=Path, help="a finished run's folder (OUT/<run_id>)")
    p.add_argument("--to", choices=("timm", "safetensors"), default="timm",
                   help="timm: the matching timm model's weights (ViT: VisionTransformer; CNN: its "
                        "timm trunk); safetensors: the encoder's own state dict (default timm)")
    p.add_argument("--out", type=Path, help="file to write (default RUN_DIR/encoder-TO.safetensors, "
                   "inside the run folder); never a file of a run folder")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out if it exists (never a file of a run folder)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("download", help="fetch a torchvision dataset (cifar10, cifar100, stl10)")
    p.add_argument("dataset")
    p.add_argument("--data-root", help="where to put it (default $MASKBENCH_DATA, else the card's)")
    p.set_defaults(fn=cmd_download)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE words may follow options (`sweep SPEC --dry-run epochs=1`), which argparse
    # does not allow after a positional; anything else left over is an error.
    if extra and (not hasattr(args, "settings") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.settings = [*args.settings, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except SystemExit as done:  # --help (0) or a bad argument (2, one line already printed)
        return done.code if isinstance(done.code, int) else EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with progress.shown(not getattr(args, "no_progress", False)):
            return args.fn(args)
    except UnknownNameError as err:
        print(f"error: unknown {err.kind} {err}", file=sys.stderr)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
    except BrokenPipeError:  # `bench ... | head` closed our stdout: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT
