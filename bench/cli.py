"""Command line: run, report, list, perf. The only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError, UnknownNameError

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


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2, got {text!r}") from None


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=csv_list, default=["mae", "random-init"],
                   help="comma-separated methods and reference rows (see `bench list`)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--encoder", default="vit-micro")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seeds", type=seed_list, default=[0])
    p.add_argument("--out", type=Path, default=Path("results/run"))
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--train-limit", type=int, help="pretrain on the first N training samples")
    p.add_argument("--eval-train-limit", type=int, help="fit probes on the first N training samples")
    p.add_argument("--eval-test-limit", type=int, help="evaluate on the first N test samples")
    p.add_argument("--eval-every", type=int, help="kNN every K epochs during pretraining")
    p.add_argument("--compile", action="store_true", help="torch.compile the pretraining step")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                   help="run fields (epochs=3) or method options (mae.mask_ratio=0.6)")


RUN_FLAGS = ("dataset", "encoder", "epochs", "batch_size", "data_root", "device", "train_limit",
             "eval_train_limit", "eval_test_limit", "eval_every")


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    fixed = {k: getattr(args, k) for k in RUN_FLAGS if getattr(args, k) is not None}
    if args.compile:
        fixed["compile"] = True
    return {**fixed, **parse_assignments(args.settings)}


def cmd_run(args: argparse.Namespace) -> int:
    from bench import store
    from bench.launch import LocalLauncher, check_data, runs_to_do
    from bench.report import write_report
    from bench.sweep import expand

    runs = expand(run_settings(args), {"method": args.methods}, seeds=args.seeds)
    datasets = check_data(runs)
    out = store.ensure_writable(args.out)
    todo = runs_to_do(runs, out, args.retry_failed)
    print(f"{len(runs)} runs ({len(runs) - len(todo)} already done) -> {out}")
    LocalLauncher(progress=not args.no_progress).launch(todo, out, datasets)
    report = write_report([out], out / "report")
    print(f"report: {report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    for d in args.dirs:
        if not d.is_dir():
            raise BenchError(f"no such results folder: {d}")
    out = args.out or args.dirs[0] / "report"
    print(f"report: {write_report(args.dirs, out)}")
    return 0


def catalog() -> dict[str, dict[str, str]]:
    import methods
    from bench.data import DATASETS
    from bench.models.encoders import ENCODERS
    from bench.train import REFERENCES

    out: dict[str, dict[str, str]] = {"methods": {}, "references": dict(REFERENCES)}
    for name in methods.METHODS.names():
        cls = methods.METHODS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        mods = "/".join(sorted(cls.modalities))
        out["methods"][name] = f"{doc} [{mods}; encoders: {', '.join(sorted(cls.encoder_kinds))}]"
    out["encoders"] = {
        n: f"{ENCODERS.get(n).description} [{ENCODERS.get(n).kind}]" for n in ENCODERS.names()
    }
    out["datasets"] = {
        n: f"{DATASETS.get(n).description} [{DATASETS.get(n).modality}]" for n in DATASETS.names()
    }
    return out


def cmd_list(args: argparse.Namespace) -> int:
    cat = catalog()
    if args.json:
        print(json.dumps(cat, indent=2))
        return 0
    for section, items in cat.items():
        print(f"{section}:")
        width = max(map(len, items), default=0)
        for name, line in items.items():
            print(f"  {name:<{width}}  {line}")
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from bench.perf import PerfOptions, format_table, measure

    opts = PerfOptions(
        methods=args.methods, encoder=args.encoder, dataset=args.dataset, batch=args.batch,
        steps=args.steps, warmup=args.warmup, device=args.device or "auto",
        image_size=args.image_size, compile=args.compile, data_root=args.data_root,
    )
    rows = measure(opts)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="pretrain, evaluate and report methods side by side")
    add_run_arguments(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("report", help="aggregate run folders into a report")
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="report folder (default DIR/report)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("list", help="methods, reference rows, encoders and datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("perf", help="benchmark a pretraining step (samples/s, FLOPs)")
    p.add_argument("--methods", type=csv_list, default=["mae"])
    p.add_argument("--encoder", default="vit-micro")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--image-size", type=int, help="synthetic images of this size (e.g. 224)")
    p.add_argument("--device")
    p.add_argument("--data-root")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_perf)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except UnknownNameError as err:
        print(f"error: unknown {err.kind} {err}", file=sys.stderr)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT
