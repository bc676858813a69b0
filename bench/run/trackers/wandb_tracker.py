"""Weights & Biases: offline by default (`$WANDB_MODE` chooses; `wandb sync` uploads), files
under the run folder (`OUT/<run_id>/wandb/`), run name = run id, group = the results folder
(the sweep), project `$WANDB_PROJECT` or maskbench.

A resumed run opens the same W&B run id (an offline attempt is one more folder of that run;
`wandb sync` joins them in order). What each attempt logged is kept in `LEDGER` (the last step
per key), and a resumed attempt skips those steps, so no step is logged twice."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import wandb

from bench.core import store
from bench.core.errors import TrackerError
from bench.run.trackers import TrackerSite

LEDGER = "maskbench-logged.json"  # in OUT/<run_id>/wandb/: {key: last step logged}
MODES = ("offline", "online", "disabled", "shared")


def mode() -> str:
    value = os.environ.get("WANDB_MODE") or "offline"
    if value not in MODES:
        raise TrackerError(f"WANDB_MODE={value!r}: must be one of {', '.join(MODES)}")
    return value


def check(site: TrackerSite) -> None:
    mode()


class WandbTracker:
    def __init__(self, site: TrackerSite, resume_step: int):
        folder = site.run_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        self.ledger = folder / LEDGER
        self.logged: dict[str, int] = (
            store.read_json(self.ledger) if resume_step and self.ledger.exists() else {}
        )
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "maskbench",
            id=site.unique_id,
            name=site.run_id,
            group=site.group,
            dir=str(site.run_dir),
            mode=mode(),
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                    disable_git=True, save_code=False),
        )

    def _log(self, values: Mapping[str, Any], step: int) -> None:
        fresh = {k: v for k, v in values.items() if step > self.logged.get(k, -1)}
        if fresh:
            self.run.log(fresh, step=step)
            self.logged.update(dict.fromkeys(fresh, step))
            store.write_json(self.ledger, self.logged)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        self._log(values, step)

    def log_image(self, name: str, image: Any, step: int) -> None:
        if step > self.logged.get(name, -1):
            self._log({name: wandb.Image(image)}, step)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "ok" else 1)


start = WandbTracker
