"""Launchers: where runs execute. `local` trains in this process, one run after another."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import store
from bench.config import RunConfig
from bench.data import load_dataset
from bench.train import train_run, write_failure

log = logging.getLogger(__name__)


def run_status(run_dir: Path) -> str | None:
    """'ok' / 'failed' from a finished run's summary.json, None if it has not finished."""
    try:
        return store.read_json(run_dir / store.SUMMARY).get("status")
    except (OSError, ValueError):
        return None


def runs_to_do(runs: Sequence[RunConfig], out: Path, retry_failed: bool) -> list[RunConfig]:
    """Skip finished runs; failed ones only come back with `retry_failed`."""
    todo = []
    for cfg in runs:
        status = run_status(out / cfg.run_id)
        if status == "ok" or (status == "failed" and not retry_failed):
            continue
        todo.append(cfg)
    return todo


def check_data(runs: Sequence[RunConfig]) -> dict[tuple[str, str | None], Any]:
    """Load every dataset the runs need once, before anything is written (fails early)."""
    return {
        key: load_dataset(*key) for key in dict.fromkeys((r.dataset, r.data_root) for r in runs)
    }


class LocalLauncher:
    """In-process, sequential. A failing run is recorded as failed and the rest go on."""

    def __init__(self, progress: bool = True):
        self.progress = progress

    def launch(self, runs: Sequence[RunConfig], out: Path, datasets: dict | None = None) -> list[dict]:
        datasets = datasets if datasets is not None else check_data(runs)
        summaries = []
        for i, cfg in enumerate(runs, 1):
            run_dir = out / cfg.run_id
            log.info("run %d/%d %s (%s seed %d) -> %s", i, len(runs), cfg.run_id, cfg.method, cfg.seed, run_dir)
            try:
                summaries.append(
                    train_run(cfg, run_dir, self.progress, data=datasets[(cfg.dataset, cfg.data_root)])
                )
            except Exception as err:  # noqa: BLE001  (recorded in summary.json, then go on)
                log.error("run %s failed: %s", cfg.run_id, err)
                summaries.append(write_failure(cfg, run_dir, err))
        return summaries
