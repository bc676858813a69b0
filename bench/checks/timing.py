"""The GPU check's speed and science parts: `bench perf` figures, timed epochs, the Fashion-MNIST
table at the epochs the time allows, and the extrapolated time of the full table."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import store
from bench.core.config import RunConfig
from bench.core.references import REFERENCE_ROWS
from bench.plan.sweep import SweepSpec
from bench.run.hooks import Hook
from bench.run.train import train_run


def run_perf(args: list[str]) -> dict[str, Any]:
    """`bench perf ARGS --json` through the command line's own code; its rows, or its error."""
    from bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["perf", *args, "--json", "--no-progress"])
    if code != 0:
        return {"pass": False, "args": args, "error": err.getvalue().strip()[-2000:]}
    return {"pass": True, "args": args, "rows": perf_figures(json.loads(out.getvalue()))}


@dataclass
class EpochClock(Hook):
    """A training-loop hook that stamps the time of every epoch end into
    `folder/<pid>.jsonl`, so epoch times can be read from worker processes too."""

    folder: Path

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        store.append_jsonl(self.folder / f"{os.getpid()}.jsonl",
                           {"epoch": epoch, "time": time.time()})
        return False


def steady_epochs(folder: Path) -> list[float]:
    """Seconds of every epoch after the first of each run stamped by an EpochClock: the gaps
    between consecutive stamps of one process whose epochs follow each other (one process runs
    its runs one after another; a new run starts again at epoch 1)."""
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        stamps = store.read_jsonl(path)
        for a, b in zip(stamps, stamps[1:]):
            if b["epoch"] == a["epoch"] + 1:
                out.append(b["time"] - a["time"])
    return out


def timed_epochs(cfg: RunConfig, run_dir: Path, data: Any) -> dict[str, Any]:
    """A 2-epoch run of `cfg`: the second epoch's seconds (compilation is in the first), and
    the run's overhead besides its epochs (setup, evaluation)."""
    clock = EpochClock(run_dir.parent / f"{run_dir.name}-epochs")
    start = time.perf_counter()
    summary = train_run(dataclasses.replace(cfg, epochs=2), run_dir, progress=False,
                        hooks=[clock], data=data)
    wall = time.perf_counter() - start
    (epoch_s,) = steady_epochs(clock.folder)
    return {"pass": summary["status"] == "ok", "epoch_s": epoch_s, "run_s": wall,
            "overhead_s": max(0.0, wall - 2 * epoch_s),
            "steps_per_epoch": (cfg.train_limit or data.n_pretrain()) // cfg.batch_size}


def affordable_epochs(remaining_s: float, runs: list[RunConfig], epochs: dict[str, dict],
                      workers: int) -> int:
    """The most epochs (<= FULL_EPOCHS) the table fits in `remaining_s`, priced from the timed
    epochs: each run's overhead (shared by the workers) plus its epochs one after another (no
    gain assumed from sharing the device, so the estimate errs long)."""
    per_epoch = sum(epochs[r.method]["epoch_s"] for r in runs if r.method in epochs)
    overhead = max(e["overhead_s"] for e in epochs.values())
    fixed = len(runs) * overhead / workers + RESERVE_S
    if per_epoch <= 0:
        return FULL_EPOCHS
    return max(0, min(FULL_EPOCHS, int((remaining_s - fixed) // per_epoch)))


def full_table_estimate(wall_s: float, epochs_run: int, steady: list[float], trained_runs: int,
                        workers: int, alone_epoch_s: float) -> tuple[float, str]:
    """Seconds the table would take at FULL_EPOCHS, from its run at `epochs_run` epochs: the
    measured wall time plus the missing epochs of every trained run at the mean epoch time
    measured in the table (W workers sharing the device, so W epochs progress at once). With
    no such epoch (one epoch run), the single-run epoch times, one after another."""
    missing = (FULL_EPOCHS - epochs_run) * trained_runs
    if steady:
        mean = sum(steady) / len(steady)
        return wall_s + missing * mean / workers, (
            f"measured {wall_s:.0f} s at {epochs_run} epochs + {missing} run-epochs x "
            f"{mean:.2f} s (mean epoch in the table, {workers} runs at once) / {workers}")
    return wall_s + missing * alone_epoch_s, (
        f"measured {wall_s:.0f} s at {epochs_run} epoch + {missing} run-epochs x "
        f"{alone_epoch_s:.2f} s (mean single-run epoch), one after another")


def run_table(spec: SweepSpec, epochs: int, out: Path, workers: int,
              alone_epoch_s: float) -> dict[str, Any]:
    from bench.launch.launchers import LocalLauncher
    from bench.report.build import write_report

    runs = spec.override({"epochs": epochs}).runs()
    stamps = out / "epoch-stamps"
    start = time.perf_counter()
    summaries = LocalLauncher(progress=False, workers=workers,
                              hooks=[EpochClock(stamps)]).launch(runs, out)
    report = write_report([out], out / "report")
    wall = time.perf_counter() - start  # as `time bench sweep` would say: the report included
    trained = sum(r.method not in REFERENCE_ROWS for r in runs)
    estimate, how = full_table_estimate(wall, epochs, steady_epochs(stamps), trained, workers,
                                        alone_epoch_s)
    failed = [s["run_id"] for s in summaries if s.get("status") != "ok"]
    return {"pass": not failed, "epochs": epochs, "runs": len(runs), "trained_runs": trained,
            "workers": workers, "wall_s": wall, "failed": failed,
            "report": str(report.with_suffix(".md")), "full_table_s": estimate,
            "full_table_estimator": how}


def perf_figures(rows: list[dict]) -> list[dict]:
    keys = ("method", "encoder", "image_size", "batch", "compile", "compile_mode", "bf16",
            "samples_per_s_synthetic", "samples_per_s_data", "epoch_s_data", "mfu",
            "achieved_tflops", "fill_share", "peak_mem_bytes")
    return [{k: r.get(k) for k in keys} for r in rows]


FULL_EPOCHS = 100


RESERVE_S = 20.0  # what the report and the summary need after the table
