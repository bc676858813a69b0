"""Command line: run, sweep, tune, status, report, list, encoders, perf, export, download. The
only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bench.cli.arguments import (
    EXIT_BAD_INPUT,
    Parser,
    add_launcher_arguments,
    add_run_arguments,
    method_list,
    non_negative_int,
    positive_int,
    seed_list,
)
from bench.cli.commands import (
    cmd_download,
    cmd_encoders,
    cmd_export,
    cmd_list,
    cmd_perf,
    cmd_report,
    cmd_run,
    cmd_status,
    cmd_sweep,
    cmd_tune,
)
from bench.core.config import COMPILE_MODES, PRECISIONS
from bench.core.errors import BenchError, UnknownNameError
from bench.runtime import progress


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
