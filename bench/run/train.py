"""One run: pretrain -> evaluate -> write the run folder. Resumable at any point.

Determinism: every source of randomness in epoch e (data order, augmentation, masks) comes
from a generator seeded by (seed, e), and a checkpoint is written atomically after every
epoch, so a run killed anywhere and restarted ends with the same numbers as an
uninterrupted one (bit-identical on CPU).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.core import files, store
from bench.core.config import RunConfig, protocol_list
from bench.core.outcomes import Outcome, write_outcomes
from bench.core.references import REFERENCE_ROWS, ReferenceRow
from bench.core.spec import DataSpec
from bench.data import dataset_key, load_dataset
from bench.data.protocol import TrainingData
from bench.data.validation import ValidationData
from bench.eval.contribution import fill_contribution
from bench.eval.diagnostics import fill_diagnostics
from bench.eval.pretext import pretext_metrics
from bench.eval.protocols import evaluate_encoder, scored_names
from bench.models.build import build_model
from bench.models.encoders import build_encoder
from bench.models.parts import Encoder
from bench.run import trackers
from bench.run.hooks import Hook, hooks_of_run
from bench.run.loop import RunInterrupted, pretrain
from bench.run.reconstructions import save_reconstructions
from bench.run.records import RunContext, data_record, setup_record, summary_record, write_config
from bench.run.sampling import epoch_generator
from bench.run.step import prepare_model, pretrain_flops_per_sample
from bench.runtime import distributed, precision
from bench.runtime.devices import device_name, peak_memory_bytes, resolve_device
from bench.runtime.progress import shown


def train_run(
    cfg: RunConfig,
    run_dir: Path,
    progress: bool = True,
    hooks: Sequence[Hook] = (),
    data: TrainingData | None = None,
) -> dict[str, Any]:
    """Pretrain (unless a reference row), evaluate, write `summary.json` last. Returns it.

    Under DDP (see bench.runtime.distributed) all ranks pretrain; rank 0 alone evaluates and
    writes the run folder, and the other ranks return `summary_record(cfg, "ok", rank=r)`
    after pretraining. `progress=False` silences every progress bar of the run
    (bench.runtime.progress); `cfg.precision` sets the autocast of all its forward passes
    (bench.runtime.precision); `hooks` watch the training loop (bench.run.hooks). The trackers
    of `cfg.log_to` (bench.run.trackers) are checked before anything else and follow the run
    folder.
    """
    with shown(progress), precision.chosen(cfg.precision), \
            trackers.open_run(cfg, run_dir, stopped=(RunInterrupted,)) as tracker:
        return _train_and_evaluate(cfg, run_dir, hooks_of_run(hooks), data, tracker)


def _train_and_evaluate(
    cfg: RunConfig, run_dir: Path, hooks: list[Hook], data: TrainingData | None,
    tracker: trackers.RunTracker,
) -> dict[str, Any]:
    wall_start = time.perf_counter()
    dist = distributed.current()
    device = resolve_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = (data if data is not None else load_dataset(*dataset_key(cfg))).to(device)
    if cfg.val_fraction is not None:  # a tuning trial: evaluated on a split of the training data
        data = ValidationData(data, cfg.val_fraction)
    reference = REFERENCE_ROWS.get(cfg.method)
    if dist.is_main:
        write_config(run_dir, cfg, data)
    elif reference is not None:  # nothing to train: rank 0 evaluates
        return summary_record(cfg, "ok", rank=dist.rank)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compute: dict[str, Any] = {
        "pretrain_flops_per_sample": 0.0,
        "train_samples_per_s": None,
        "device": device_name(device),
        "device_type": device.type,  # numbers differ between device types: never pooled
        "processes": dist.world,  # data-parallel ranks: samples/s is theirs together
    }
    selected = protocol_list(cfg.protocols)
    outcomes: dict[str, Outcome] = {}  # per-example test scores, beside summary.json
    if reference is not None:
        encoder = reference_encoder(reference, cfg, data.spec, device)
        setup = setup_record(cfg, data.spec, encoder=encoder)
        metrics = scored_names(cfg, evaluate_encoder(cfg, data, encoder, device,
                                                     reference.reports(selected),
                                                     outcomes=outcomes))
    else:
        ctx = RunContext(cfg, run_dir, device, data, tracker, hooks)
        model = prepare_model(build_model(cfg, data.spec, getattr(data, "sentences", None)),
                              device)
        setup = setup_record(cfg, data.spec, model.encoder, model)
        probe_x = data.pretrain_batch(torch.arange(2, device=device),
                                      epoch_generator(0, -1, device), False)
        compute["pretrain_flops_per_sample"] = pretrain_flops_per_sample(model, probe_x)
        state = pretrain(ctx, model)
        compute["train_samples_per_s"] = state["samples"] / max(state["train_s"], 1e-9)
        compute["train_s"] = state["train_s"]
        if not dist.is_main:
            return summary_record(cfg, "ok", rank=dist.rank)
        metrics = {
            **scored_names(cfg, evaluate_encoder(cfg, data, model.encoder, device, selected,
                                                 outcomes=outcomes,
                                                 steps=model.method.neighbour_maps())),
            "pretrain_loss": store.read_jsonl(run_dir / files.METRICS)[-1]["loss"],
        }
        if cfg.val_fraction is None:  # a tuning trial: its probes' figures only (no recipe
            # is chosen by the pretext task's own numbers)
            metrics |= {
                **pretext_metrics(cfg, model, data, device),
                **fill_contribution(cfg, model, data, device),
                **fill_diagnostics(model, data, cfg.eval_test_limit, cfg.eval_batch_size,
                                   device, cfg.seed),
            }
            save_reconstructions(ctx, model)
    compute["peak_mem_bytes"] = peak_memory_bytes(device)
    compute["wall_s"] = time.perf_counter() - wall_start
    summary = summary_record(cfg, "ok", metrics=metrics, compute=compute, setup=setup,
                             data=data_record(data))
    # before summary.json (a finished run has both), named as the metrics are (val_*)
    write_outcomes(run_dir, scored_names(cfg, outcomes))
    store.write_json(run_dir / files.SUMMARY, summary)
    tracker.log_result(summary)
    return summary


def reference_encoder(row: ReferenceRow, cfg: RunConfig, spec: DataSpec,
                      device: torch.device) -> Encoder | None:
    """What a reference row's probes read: None for the input itself, else the run's encoder
    at its random initialisation, seeded by the run's seed."""
    if row.features == "input":
        return None
    torch.manual_seed(cfg.seed)
    return build_encoder(cfg.encoder, spec).to(device)
