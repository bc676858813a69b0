"""Copy a finished `make reference` sweep into the repository: results/reference/<name>/.

    .venv/bin/python scripts/publish_reference.py results/reference-run --wall-s 5400

Keeps what a reader and tests/e2e/test_reference.py need and nothing heavy: of every run
folder config.json, summary.json, metrics.jsonl and outcomes.npz (the per-example test
outcomes the report's confidence intervals use), never checkpoints nor reconstruction samples
(16 MB for 60 runs; the report then has no reconstruction figure); and the report built from
exactly those files (`bench report DEST/runs --out DEST`: report.md, report.html, tables.tex,
the CSVs, the figures), so rebuilding it from the repository gives the committed verdict.
MACHINE.json records the machine, the package versions, the git sha and the sweep's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench import cli
from bench.core import store

RUN_FILES = ("config.json", "summary.json", "metrics.jsonl", "outcomes.npz")
REPORT_PACKAGES = ("scipy", "pandas")  # beside a run's own (store.package_versions)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return float("nan")


def machine(wall_s: float | None, command: str) -> dict:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_sha": store.git_sha() or "(no git)",
        "command": command,
        "wall_s": wall_s,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "device": "cpu",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {**store.package_versions(),
                     **{p: metadata.version(p) for p in REPORT_PACKAGES}},
    }


def publish(src: Path, dest: Path, info: dict) -> int:
    """Copy the light files of every finished run folder under `src` to `dest/runs` (`dest`
    replaced if it exists), write their report into `dest`; return the number of runs."""
    runs = sorted(p.parent for p in src.glob("*/summary.json"))
    if not runs:
        raise SystemExit(f"error: no finished run under {src}: has the sweep run?")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "runs").mkdir(parents=True)
    for run in runs:
        (dest / "runs" / run.name).mkdir()
        for name in RUN_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, dest / "runs" / run.name / name)
    if cli.main(["report", str(dest / "runs"), "--out", str(dest), "--no-progress"]) != 0:
        raise SystemExit("error: the report of the published runs failed")
    (dest / "MACHINE.json").write_text(json.dumps({**info, "runs": len(runs)}, indent=1) + "\n")
    return len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="the sweep's results folder (its --out)")
    parser.add_argument("--dest", type=Path,
                        help="default: results/reference/cpu-<today>")
    parser.add_argument("--wall-s", type=float, help="the sweep's wall time, seconds")
    parser.add_argument("--command", default="make reference")
    args = parser.parse_args()
    dest = args.dest or Path("results/reference") / f"cpu-{datetime.now(UTC):%Y-%m-%d}"
    n = publish(args.src, dest, machine(args.wall_s, args.command))
    print(f"published {n} runs and the report to {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
