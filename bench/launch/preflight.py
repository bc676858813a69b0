"""The one validation pass over resolved runs, before any run folder is created (shared by
`bench run`, `bench sweep` and the Python API). RunConfig already refuses bad values on its
own; this pass checks what needs the machine, the data or the disk: the device exists, every
dataset loads (once), the batch fits the data, each model builds (shapes), the mask ratio hides
something on the data's grid, a few-shot k fits the probe's classes, and a checkpoint to
resume was written on this device type.

A failed check raises a BenchError subclass naming the run and the key to change; nothing has
been written by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.core import files
from bench.core.config import RunConfig, protocol_list
from bench.core.errors import ConfigError, DataNotFoundError
from bench.core.references import REFERENCE_ROWS
from bench.data import dataset_key, load_dataset
from bench.ops.masking import visible_count
from bench.run import checkpoint, trackers
from bench.run.sampling import check_fits
from bench.runtime.devices import check_device_type, resolve_device


def check_model(cfg: RunConfig, data: Any) -> None:
    """Build the run's model on the meta device (no memory, no compute): shape errors (heads
    that do not divide a width, a patch size a CNN has no stage for) surface now, and the mask
    ratio must leave something hidden on the data's grid."""
    from bench.models.build import build_model  # torch: only when there is a run to check

    if cfg.method in REFERENCE_ROWS:
        return
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            model = build_model(cfg, data.spec, getattr(data, "sentences", None))
    except (AssertionError, ValueError, RuntimeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{cfg.method} with encoder {cfg.encoder} on {cfg.dataset} cannot be "
                          f"built: {err}") from None
    try:
        visible_count(model.spec.grid, cfg.options.get("mask_ratio", 0.75))
    except ValueError as err:
        raise ConfigError(f"{cfg.method}.mask_ratio: {err}") from None


def check_protocol_data(cfg: RunConfig, data: Any) -> None:
    """What the selected protocols need of the loaded data: `fewshot` a `fewshot_k` no larger
    than the smallest class of the probe's training split."""
    from bench.eval.fewshot import check_fewshot

    if "fewshot" in protocol_list(cfg.protocols) and data.classes is not None:
        check_fewshot(cfg.fewshot_k, data.eval_split("train", cfg.eval_train_limit).y,
                      data.classes)


def validate(runs: Sequence[RunConfig], out: Path) -> dict[tuple, Any]:
    """Check every run; return the loaded datasets by `dataset_key` (launching reuses them)."""
    datasets: dict[tuple, Any] = {}
    models: set[str] = set()
    for cfg in runs:
        device = resolve_device(cfg.device)
        key = dataset_key(cfg)
        if key not in datasets:
            datasets[key] = load_dataset(*key)
        data = datasets[key]
        skipped = getattr(data, "skipped", ())
        if skipped and cfg.strict_data:
            raise DataNotFoundError(f"{cfg.dataset}: {skipped[0]} ({len(skipped)} unreadable "
                                    "file(s); strict_data=true refuses them, false skips them)")
        if cfg.method not in REFERENCE_ROWS:
            check_fits(cfg, data)
        check_protocol_data(cfg, data)
        shape_key = repr({**cfg.identity(), "seed": None, "device": device.type})
        if shape_key not in models:
            models.add(shape_key)
            check_model(cfg, data)
        found = checkpoint.peek(out / cfg.run_id)
        if found is not None:
            check_device_type(found["device_type"], device, out / cfg.run_id / files.CHECKPOINT)
    trackers.check_runs(runs, out)  # a missing package or a bad URI: one line, nothing trained
    return datasets
