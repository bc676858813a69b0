"""What a run writes about itself: config.json, the setup the fairness table compares,
summary.json (also for a failed run)."""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core import files, store
from bench.core.config import RunConfig
from bench.core.spec import DataSpec
from bench.data.protocol import TrainingData
from bench.models.pretrainer import MaskedPretrainer
from bench.run import trackers
from bench.run.hooks import Hook
from bench.run.step import decoder_flops_per_sample
from bench.runtime import distributed
from bench.runtime.optim import WEIGHT_DECAY_RULE


@dataclass
class RunContext:
    """What every part of one run shares: its config, folder, device, data, tracker and the
    hooks watching its training loop."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    data: TrainingData
    tracker: trackers.RunTracker
    hooks: list[Hook] = field(default_factory=list)


def config_record(cfg: RunConfig, data) -> dict[str, Any]:
    """config.json: the resolved config, its run id and what the code and data were."""
    return {
        **cfg.to_dict(),
        "run_id": cfg.run_id,
        "lr": cfg.lr,
        "weight_decay_rule": WEIGHT_DECAY_RULE,
        "git_sha": store.git_sha(),
        "versions": store.package_versions(),
        "data_fingerprint": getattr(data, "fingerprint", None),
        "data_spec": data_spec_record(data),
    }


def write_config(run_dir: Path, cfg: RunConfig, data) -> None:
    store.write_json(run_dir / files.CONFIG, config_record(cfg, data))


REPAIRED_NOTE = ("config.json was unreadable or missing after the run finished; rewritten from "
                 "the planned configuration, whose hash is the run id, so the settings are the "
                 "ones trained; data_spec and data_fingerprint are of the data at repair time; "
                 "the code that trained the run (git_sha, versions) is unknown")


def repair_config(run_dir: Path, cfg: RunConfig, data) -> Path | None:
    """Rewrite a finished run's unreadable or missing config.json from `cfg` (planned with the
    folder's run id, so its settings are certain), saying so under `repaired`; what it cannot
    know (the git sha and package versions of the training) is None. The unreadable file is
    kept as config.broken-N.json; returns where it went (None: there was none)."""
    path = run_dir / files.CONFIG
    kept = None
    if path.exists():
        n = 1
        while (kept := run_dir / files.BROKEN_CONFIG.format(n=n)).exists():
            n += 1
        path.replace(kept)
    store.write_json(path, {**config_record(cfg, data), "git_sha": None, "versions": None,
                            "repaired": {"time": time.time(), "by_git_sha": store.git_sha(),
                                         "note": REPAIRED_NOTE}})
    return kept


def data_spec_record(data) -> dict[str, Any]:
    """What rebuilds the encoder and feeds it (bench export): the DataSpec, and for images the
    normalisation the encoder was trained on."""
    return {**asdict(data.spec), "mean": getattr(data, "mean", None),
            "std": getattr(data, "std", None)}


def data_record(data: Any) -> dict[str, Any]:
    """What the run's data left out (files that do not decode: skipped and counted) and, for
    data with per-pixel labels, the names of the dense probe's labels (`dense_iou_<k>` is the
    IoU of `dense_classes[k]`)."""
    skipped = list(getattr(data, "skipped", ()))
    record = {"skipped": len(skipped), "skipped_files": skipped[:20]}
    if (classes := getattr(data, "dense_classes", None)) is not None:
        record["dense_classes"] = list(classes)
    return record


def _parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters() if p.requires_grad)


def setup_record(cfg: RunConfig, spec: DataSpec, encoder: nn.Module | None = None,
                 model: MaskedPretrainer | None = None) -> dict[str, Any]:
    """What the report's fairness table compares between rows: tokens the encoder sees and
    positions the loss scores per sample, trainable parameters by part, the decoder's forward
    FLOPs per sample, epochs and batch. Reference rows see every position and score none."""
    if model is not None:
        spec = model.spec  # the method's grid (sentence slots at granularity=sentence)
    n = spec.num_tokens
    visible = n
    if model is not None:
        visible = model.method.choose_visible(1, spec.grid, torch.Generator().manual_seed(0)).count
    return {
        "visible_tokens": visible,
        "scored_positions": n - visible if model is not None else 0,
        "encoder_params": _parameters(encoder),
        "decoder_params": 0 if model is None else _parameters(model.proj) + _parameters(model.decoder),
        "method_params": 0 if model is None else _parameters(model.method),
        "decoder_flops": 0.0 if model is None else decoder_flops_per_sample(model),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
    }


def summary_record(cfg: RunConfig, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": cfg.run_id,
        "method": cfg.method,
        "dataset": cfg.dataset,
        "encoder": cfg.encoder,
        "seed": cfg.seed,
        "status": status,
        "metrics": {},
        "compute": {},
        **extra,
    }


def write_failure(cfg: RunConfig, run_dir: Path, err: BaseException) -> dict[str, Any]:
    """Record a failed run (the error and its traceback) so reports list it, never drop it."""
    summary = summary_record(
        cfg,
        "failed",
        error=f"{type(err).__name__}: {err}",
        traceback="".join(traceback.format_exception(err))[-4000:],
    )
    if distributed.current().is_main:
        store.write_json(run_dir / files.SUMMARY, summary)
    return summary
