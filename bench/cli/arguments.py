"""The command line's arguments: argparse types with one-line errors, the run and launcher
flags shared by `run`, `sweep` and `tune`, and the exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.core.config import comma_list
from bench.core.errors import BenchError, ConfigError

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


def sweep_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = parse_assignments(args.settings)
    if args.log_to is not None:
        settings["log_to"] = args.log_to
    return settings


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block): exit 2, the help to read."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message}; see `{self.prog} --help`\n")
