"""One run: pretrain -> evaluate -> write the run folder. Resumable at any point.

Determinism: every source of randomness in epoch e (data order, augmentation, masks) comes
from a generator seeded by (seed, e), and a checkpoint is written atomically after every
epoch, so a run killed anywhere and restarted ends with the same numbers as an
uninterrupted one (bit-identical on CPU).
"""

from __future__ import annotations

import math
import platform
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

import methods  # noqa: F401  (registers every method)
from bench import store
from bench.config import RunConfig
from bench.data import load_dataset
from bench.evaluate import (
    autocast,
    extract_features,
    probe_metrics,
    reconstruction_loss,
)
from bench.models.encoders import DataSpec, build_encoder
from bench.models.patches import patchify, unpatchify
from bench.models.pretrainer import MaskedPretrainer
from methods.base import build_method

# Reference rows: what the same probes give without pretraining, so a reader sees what
# pretraining adds. They train nothing and take no method options.
REFERENCES = {
    "random-init": "the same encoder, untrained (probes on its random features)",
    "raw-input": "the same probes on the standardised input (pixels, or bag-of-words for text)",
}

RECON_IMAGES = 8  # the first N test images: the same pictures for every method


class RunInterrupted(Exception):
    """Raised after a checkpoint when the caller asked the run to stop (preemption, tests)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """All randomness of one epoch comes from here, so an epoch replays exactly on resume."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def build_model(cfg: RunConfig, spec: DataSpec) -> MaskedPretrainer:
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.encoder, spec)
    method = build_method(cfg.method, cfg.options, cfg.decoder_dim, spec.modality, encoder.kind)
    return MaskedPretrainer(
        spec, encoder, method, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads
    )


def build_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device):
    """AdamW (betas 0.9/0.95 as MAE); no weight decay on biases, norms and 1-D tokens."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or p.shape[0] == 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then half-cosine to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain_flops_per_sample(model: MaskedPretrainer, x: torch.Tensor) -> float:
    """Forward + backward FLOPs of one pretraining step, per sample (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator(device=x.device).manual_seed(0)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, gen).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass
class RunContext:
    cfg: RunConfig
    run_dir: Path
    device: torch.device
    data: Any
    progress: bool = True


def write_config(run_dir: Path, cfg: RunConfig, data) -> None:
    store.write_json(
        run_dir / store.CONFIG,
        {
            **cfg.to_dict(),
            "run_id": cfg.run_id,
            "lr": cfg.lr,
            "git_sha": store.git_sha(),
            "versions": store.package_versions(),
            "data_fingerprint": getattr(data, "fingerprint", None),
        },
    )


def pretrain(ctx: RunContext, model: MaskedPretrainer, interrupt: Callable[[int], bool] | None):
    """Train `model` to `cfg.epochs`, resuming from the run folder's checkpoint if present."""
    cfg, device, data = ctx.cfg, ctx.device, ctx.data
    ckpt_path = ctx.run_dir / store.CHECKPOINT
    metrics_path = ctx.run_dir / store.METRICS
    opt = build_optimizer(model, cfg, device)
    n = min(data.n_pretrain(), cfg.train_limit or data.n_pretrain())
    if n < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n} pretraining samples")
    steps_per_epoch = n // cfg.batch_size  # full batches only: every step has the same shape
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    state = {"epoch": 0, "train_s": 0.0, "samples": 0}
    if ckpt_path.exists():
        ckpt = store.load_torch(ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        store.truncate_jsonl(metrics_path, lambda r: r.get("epoch", 0) <= state["epoch"])
    elif metrics_path.exists():
        metrics_path.unlink()  # records of an attempt that never reached a checkpoint
    step_fn = torch.compile(model) if cfg.compile else model
    model.train()
    epochs = tqdm(
        range(state["epoch"], cfg.epochs),
        initial=state["epoch"],
        total=cfg.epochs,
        desc=f"{cfg.method} seed {cfg.seed}",
        unit="epoch",
        disable=not ctx.progress,
    )
    for epoch in epochs:
        gen = epoch_generator(cfg.seed, epoch, device)
        perm = torch.randperm(data.n_pretrain(), generator=gen, device=device)[:n]
        loss_sum = torch.zeros((), device=device)
        start = time.perf_counter()
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg.lr)
            x = data.pretrain_batch(perm[i * cfg.batch_size : (i + 1) * cfg.batch_size], gen, cfg.augment)
            with autocast(device):
                loss = step_fn(x, gen).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().float()  # no host sync inside the loop
        epoch_loss = (loss_sum / steps_per_epoch).item()
        state = {
            "epoch": epoch + 1,
            "train_s": state["train_s"] + time.perf_counter() - start,
            "samples": state["samples"] + steps_per_epoch * cfg.batch_size,
        }
        record = {"epoch": epoch + 1, "loss": epoch_loss, "lr": opt.param_groups[0]["lr"]}
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            record.update(evaluate_encoder(ctx, model.encoder, knn_only=True))
        store.append_jsonl(metrics_path, record)
        store.save_torch(
            ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}
        )
        epochs.set_postfix(loss=f"{epoch_loss:.4f}")
        if interrupt is not None and interrupt(epoch + 1) and epoch + 1 < cfg.epochs:
            raise RunInterrupted(f"stopped after epoch {epoch + 1}; rerun to resume")
    return state


def evaluate_encoder(ctx: RunContext, encoder, knn_only: bool = False) -> dict[str, float]:
    cfg, data = ctx.cfg, ctx.data
    train = data.eval_split("train", cfg.eval_train_limit)
    test = data.eval_split("test", cfg.eval_test_limit)
    if encoder is None:  # raw-input reference
        train_f = data.raw_features(train.x.to(ctx.device), _to(train.pad_mask, ctx.device)).float()
        test_f = data.raw_features(test.x.to(ctx.device), _to(test.pad_mask, ctx.device)).float()
    else:
        bs = max(cfg.batch_size, 256)
        train_f = extract_features(encoder, data, train, bs, ctx.device, "features train")
        test_f = extract_features(encoder, data, test, bs, ctx.device, "features test")
    if knn_only:
        from bench.evaluate import knn_top1

        return {
            "knn_top1": knn_top1(
                train_f, train.y.to(ctx.device), test_f, test.y.to(ctx.device),
                cfg.knn_k, cfg.knn_temperature,
            )
        }
    return probe_metrics(train_f, train.y, test_f, test.y, cfg)


def _to(t, device):
    return None if t is None else t.to(device)


@torch.no_grad()
def save_reconstructions(ctx: RunContext, model: MaskedPretrainer) -> None:
    """Original, visible mask and reconstruction of the first test images (images only)."""
    if model.spec.modality != "image":
        return
    data, spec = ctx.data, model.spec
    raw = data.eval_split("test", RECON_IMAGES).x.to(ctx.device)
    x = data.eval_batch(raw)
    model.eval()
    out = model(x, torch.Generator(device=ctx.device).manual_seed(0))
    # The prediction is in per-patch normalised units: undo that with each patch's own
    # statistics, as MAE's visualisation does, then map back to [0, 1] pixels.
    target = patchify(x, spec.patch_size)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    pred = out.pred.float() * (var + 1e-6).sqrt() + mean
    recon = unpatchify(pred, spec.patch_size, spec.grid, spec.in_chans)
    to_unit = lambda t: (  # noqa: E731
        t * torch.tensor(data.std, device=t.device).view(1, -1, 1, 1)
        + torch.tensor(data.mean, device=t.device).view(1, -1, 1, 1)
    ).clamp(0, 1)
    store.save_torch(
        ctx.run_dir / store.RECONSTRUCTIONS,
        {
            "images": to_unit(x).cpu(),
            "visible": out.visible.mask(spec.num_tokens).cpu(),
            "recon": to_unit(recon).cpu(),
            "patch_size": spec.patch_size,
            "grid": spec.grid,
            "description": model.method.describe(spec.grid),
        },
    )


def train_run(
    cfg: RunConfig,
    run_dir: Path,
    progress: bool = True,
    interrupt: Callable[[int], bool] | None = None,
    data=None,
) -> dict[str, Any]:
    """Pretrain (unless a reference row), evaluate, write `summary.json` last. Returns it."""
    wall_start = time.perf_counter()
    device = resolve_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = (data if data is not None else load_dataset(cfg.dataset, cfg.data_root)).to(device)
    write_config(run_dir, cfg, data)
    ctx = RunContext(cfg, run_dir, device, data, progress)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compute: dict[str, Any] = {
        "pretrain_flops_per_sample": 0.0,
        "train_samples_per_s": None,
        "device": device_name(device),
    }
    if cfg.method == "raw-input":
        metrics = evaluate_encoder(ctx, None)
    elif cfg.method == "random-init":
        torch.manual_seed(cfg.seed)
        metrics = evaluate_encoder(ctx, build_encoder(cfg.encoder, data.spec).to(device))
    else:
        model = build_model(cfg, data.spec).to(device)
        probe_x = data.pretrain_batch(torch.arange(2, device=device), epoch_generator(0, -1, device), False)
        compute["pretrain_flops_per_sample"] = pretrain_flops_per_sample(model, probe_x)
        state = pretrain(ctx, model, interrupt)
        compute["train_samples_per_s"] = state["samples"] / max(state["train_s"], 1e-9)
        compute["train_s"] = state["train_s"]
        metrics = evaluate_encoder(ctx, model.encoder)
        test = data.eval_split("test", cfg.eval_test_limit)
        metrics["recon_loss"] = reconstruction_loss(
            model, data, test, max(cfg.batch_size, 256), device, cfg.seed
        )
        metrics["pretrain_loss"] = store.read_jsonl(run_dir / store.METRICS)[-1]["loss"]
        save_reconstructions(ctx, model)
    compute["peak_mem_bytes"] = peak_memory_bytes(device)
    compute["wall_s"] = time.perf_counter() - wall_start
    summary = summary_record(cfg, "ok", metrics=metrics, compute=compute)
    store.write_json(run_dir / store.SUMMARY, summary)
    return summary


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
    store.write_json(run_dir / store.SUMMARY, summary)
    return summary
