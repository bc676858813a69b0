"""TensorBoard: event files in the run folder (`OUT/<run_id>/tensorboard/`), written by torch's
SummaryWriter. A resumed run writes to the same folder with `purge_step` = the first step not
covered by its checkpoint, so TensorBoard hides whatever a killed attempt logged after that
checkpoint: every step shows once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from bench.run.trackers import TrackerSite

LOG_DIR = "tensorboard"


def check(site: TrackerSite) -> None:
    """Nothing beyond the import: the writer needs only the run folder."""


class TensorBoardTracker:
    def __init__(self, site: TrackerSite, resume_step: int):
        purge = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(str(site.run_dir / LOG_DIR), purge_step=purge)

    def log_config(self, config: Mapping[str, Any]) -> None:
        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        self.writer.add_text("config", f"```json\n{text}\n```", 0)

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_image(self, name: str, image: Any, step: int) -> None:
        self.writer.add_image(name, image, step, dataformats="HWC")
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.close()


start = TensorBoardTracker
