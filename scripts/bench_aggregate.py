"""Benchmark `bench.report.aggregate` and `bench report` on synthetic results: N run folders with
realistic files.

Usage: python scripts/bench_aggregate.py [--runs 10000] [--epochs 20] [--repeat 3] [--keep DIR]
[--no-report] (with PYTHONPATH=. unless maskbench is installed). Prints the best of `--repeat`
timings of collect() and curves(), then one timing of `python -m bench report` end to end (a
fresh process: imports, statistics, figures, HTML), wall and CPU seconds: a sweep of 10,000
runs must take seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.core.config import RunConfig
from bench.report.aggregate import collect, curves

METHODS = {
    "mae": [{"mask_ratio": r} for r in (0.5, 0.6, 0.75, 0.9)],
    "qb-heat": [{"mask_ratio": r, "heat_steps": k} for r in (0.6, 0.75) for k in (4, 8)],
    "interp": [{"mask_ratio": r, "mode": m} for r in (0.6, 0.75) for m in ("linear", "cubic")],
}
DATASETS = ("fashion-mnist", "cifar10", "svhn", "stl10")
ENCODERS = ("vit-micro", "vit-tiny")
_R = TypeVar("_R")


# Every (method, options, dataset, encoder) combination; run i is cell i % len(CELLS) with seed
# i // len(CELLS), so cells share seeds (paired comparisons) and no run repeats another.
CELLS = [
    (method, options, dataset, encoder)
    for method, option_sets in METHODS.items()
    for options in option_sets
    for dataset in DATASETS
    for encoder in ENCODERS
]


def write_run(root: Path, i: int, epochs: int, rng: random.Random) -> None:
    """One run folder as the trainer writes it; about 1 in 50 failed, 1 in 200 unfinished."""
    method, options, dataset, encoder = CELLS[i % len(CELLS)]
    cfg = RunConfig(
        method=method,
        options=options,
        dataset=dataset,
        encoder=encoder,
        seed=i // len(CELLS),
        epochs=epochs,
    )
    sweep = f"sweep-{i // 1000:02d}"
    run_dir = root / sweep / f"{cfg.run_id}-{i}"
    run_dir.mkdir(parents=True)
    config = {
        **cfg.to_dict(),
        "git_sha": "3f2c1e0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e",
        "versions": {"python": "3.11.9", "torch": "2.4.1", "timm": "1.0.9", "numpy": "2.1.1"},
    }
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    lines, loss, knn = [], 1.0, 0.1
    for epoch in range(epochs):
        loss *= 0.9 + rng.random() * 0.05
        knn = min(0.95, knn + rng.random() * 0.05)
        lines.append(json.dumps({"epoch": epoch, "loss": loss, "lr": 1.5e-3, "knn_top1": knn}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if i % 200 == 199:
        return  # still running: no summary.json yet
    failed = i % 50 == 49
    summary = {
        "run_id": cfg.run_id,
        "method": method,
        "dataset": cfg.dataset,
        "encoder": cfg.encoder,
        "seed": cfg.seed,
        "status": "failed" if failed else "ok",
        "metrics": {}
        if failed
        else {"linear_top1": knn + 0.02, "knn_top1": knn, "recon_loss": loss},
        "compute": {
            "pretrain_flops_per_sample": 1.2e9,
            "train_samples_per_s": 4000 + rng.random() * 500,
            "peak_mem_bytes": 2_147_483_648,
            "wall_s": 600 + rng.random() * 60,
            "device": "NVIDIA H100 80GB HBM3",
        },
    }
    if failed:
        summary["error"] = "RuntimeError: CUDA out of memory"
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def report(label: str, n_runs: int, wall: float, cpu: float) -> None:
    """Wall and CPU seconds: CPU time stays meaningful on a shared, busy machine."""
    print(f"{label:<18} {wall:7.2f} s wall  {cpu:7.2f} s CPU  {n_runs / wall:7.0f} runs/s")


def timed(fn: Callable[[], _R], repeat: int) -> tuple[_R, float, float]:
    """Result and best wall/CPU seconds over `repeat` calls (the page cache is warm after one)."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return result, best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    parser.add_argument("--no-report", action="store_true", help="skip timing `bench report`")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="maskbench-agg-") as tmp:
        root = args.keep or Path(tmp)
        rng = random.Random(0)
        start = time.perf_counter()
        for i in range(args.runs):
            write_run(root, i, args.epochs, rng)
        print(f"generated {args.runs} runs in {time.perf_counter() - start:.1f} s under {root}")

        agg, wall_a, cpu_a = timed(lambda: collect([root]), args.repeat)
        curve, wall_c, cpu_c = timed(lambda: curves([root]), args.repeat)
        report("collect", args.runs, wall_a, cpu_a)
        report("curves", args.runs, wall_c, cpu_c)
        report("collect + curves", args.runs, wall_a + wall_c, cpu_a + cpu_c)
        print(
            f"table {len(agg.table):,} rows, failed {len(agg.failed):,}, "
            f"problems {len(agg.problems):,}, curves {len(curve):,} rows"
        )
        if not args.no_report:
            wall, cpu = time_cli_report(root, root / "report")
            report("bench report", args.runs, wall, cpu)
            print(f"report: {root / 'report' / 'report.html'}")


def time_cli_report(root: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `python -m bench report ROOT --out OUT` in a fresh process
    (imports included: what a user waits for)."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "bench", "report", str(root), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


if __name__ == "__main__":
    main()
