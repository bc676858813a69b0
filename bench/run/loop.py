"""The pretraining loop: epochs of steps from a resumable state, checkpoints at epoch ends
and on a clock, and hooks (step end, epoch end, checkpoint) for whoever watches it."""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.core import files, store
from bench.data.streaming import pretrain_batches
from bench.eval.diagnostics import fill_diagnostics
from bench.eval.protocols import evaluate_encoder, scored_names
from bench.models.pretrainer import MaskedPretrainer
from bench.run import checkpoint
from bench.run.hooks import StepAt
from bench.run.records import RunContext
from bench.run.sampling import (
    check_fits,
    epoch_generator,
    epoch_order,
    pretrain_count,
    pretrain_subset,
)
from bench.run.step import StepLog, TrainStep, use_compile
from bench.runtime import distributed, stopping
from bench.runtime.devices import check_device_type
from bench.runtime.optim import build_optimizer, lr_at
from bench.runtime.progress import bar


class RunInterrupted(Exception):
    """Raised after a checkpoint when the caller asked the run to stop (preemption, tests)."""


class CheckpointClock:
    """When to write a mid-epoch checkpoint: after `every_min` minutes of training since the
    last checkpoint (0: at epoch ends only), or at once when a signal asked the process to stop
    (bench.runtime.stopping; then `stop` names it). Rank 0 decides for every rank: under DDP
    the ranks agree (a small collective) every `ddp_poll` steps; a single process reads its
    clock after every step, which costs no device sync."""

    def __init__(self, every_min: float, world: int, ddp_poll: int):
        self.every_s = every_min * 60
        self.poll = 1 if world == 1 else ddp_poll
        self.stop: str | None = None
        self.reset()

    def reset(self) -> None:
        self.last = time.monotonic()

    def due(self, i: int) -> bool:
        if (i + 1) % self.poll:
            return False
        timed = bool(self.every_s) and time.monotonic() - self.last >= self.every_s
        timed, self.stop = distributed.from_main((timed, stopping.requested()))
        return timed or self.stop is not None


def advanced(before: dict[str, Any], since: float, epochs_done: int, step: int,
             samples: int) -> dict[str, Any]:
    """The training state `before`, advanced to (`epochs_done`, `step`) by `samples` samples
    trained since `since` (a perf_counter reading)."""
    return {
        "epoch": epochs_done,
        "step": step,
        "train_s": before["train_s"] + time.perf_counter() - since,
        "samples": before["samples"] + samples,
    }


def resume(ctx: RunContext, model: MaskedPretrainer, opt: torch.optim.Optimizer,
           steps_per_epoch: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Where pretraining starts: the run folder's checkpoint loaded into `model` and `opt` (its
    progress `state`, and a mid-epoch checkpoint's generator state and running sums), the
    metric records after it dropped; or the start, with the records of an attempt that never
    reached a checkpoint removed. Rank 0 reads first (moving an unreadable file aside), then
    the others read what it read."""
    dist, device = distributed.current(), ctx.device
    ckpt_path = ctx.run_dir / files.CHECKPOINT
    metrics_path = ctx.run_dir / files.METRICS
    steps_path = ctx.run_dir / files.STEPS
    # epoch: epochs finished; step: steps of the next epoch finished (a mid-epoch checkpoint).
    state = {"epoch": 0, "step": 0, "train_s": 0.0, "samples": 0}
    partial = None  # a mid-epoch checkpoint's generator state and running sums
    ckpt = checkpoint.load(ctx.run_dir) if dist.is_main else None
    distributed.barrier()
    if not dist.is_main:
        ckpt = checkpoint.load(ctx.run_dir, move_aside=False)
    if ckpt is not None:
        check_device_type(ckpt.get("device_type"), device, ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = {"step": 0, **ckpt["state"]}
        partial = ckpt.get("partial")
        if dist.is_main:
            done = state["epoch"] * steps_per_epoch + state["step"]
            if metrics_path.exists():
                store.truncate_jsonl(metrics_path, lambda r: r["epoch"] <= state["epoch"])
            if steps_path.exists():
                store.truncate_jsonl(steps_path, lambda r: r["step"] <= done)
    elif dist.is_main:  # records of an attempt that never reached a checkpoint
        metrics_path.unlink(missing_ok=True)
        steps_path.unlink(missing_ok=True)
    return state, partial


def pretrain(ctx: RunContext, model: MaskedPretrainer) -> dict[str, Any]:
    """Train `model` to `cfg.epochs`, resuming from the run folder's checkpoint if present.

    A checkpoint is written after every epoch and, within long epochs, every
    `checkpoint_every_min` minutes; a mid-epoch one also holds the epoch generator's state and
    the epoch's running loss sums, so the resumed epoch draws and logs exactly what an
    uninterrupted one would. Under DDP every rank takes its rows of each global batch of
    `cfg.batch_size`; rank 0 writes the metrics and checkpoints while the others wait, and
    every rank resumes from them. `ctx.hooks` watch steps, checkpoints and epochs (bench.run.hooks).
    """
    cfg, device, data = ctx.cfg, ctx.device, ctx.data
    dist = distributed.current()
    rows = dist.rows(cfg.batch_size)
    metrics_path = ctx.run_dir / files.METRICS
    steps_path = ctx.run_dir / files.STEPS
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, device)
    subset = pretrain_subset(cfg.seed, data.n_pretrain(), cfg.train_limit)
    check_fits(cfg, data)
    steps_per_epoch = pretrain_count(cfg, data) // cfg.batch_size  # full batches only: every step has the same shape
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps(steps_per_epoch)
    state, partial = resume(ctx, model, opt, steps_per_epoch)
    ctx.tracker.start(state["epoch"] * steps_per_epoch + state["step"])
    train_step = TrainStep(model, opt, device, use_compile(cfg.compile, device), cfg.compile_mode)
    step_log = StepLog(steps_path, cfg.log_every, device, write=dist.is_main, tracker=ctx.tracker)
    clock = CheckpointClock(cfg.checkpoint_every_min, dist.world, cfg.checkpoint_poll_steps)

    def save(extra: dict[str, Any] | None = None) -> None:
        if dist.is_main:
            checkpoint.save(ctx.run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "state": state, "device_type": device.type,
                                          **(extra or {})})
        distributed.barrier()  # every rank resumes from the same checkpoint
        clock.reset()
        for hook in ctx.hooks:
            hook.on_checkpoint(dict(state))

    model.train()
    steps = bar(total=total, initial=state["epoch"] * steps_per_epoch + state["step"],
                desc=f"{cfg.method} seed {cfg.seed}", unit="step")
    for epoch in range(state["epoch"], cfg.epochs):
        gen = epoch_generator(cfg.seed, epoch, device)
        order = epoch_order(subset, data.n_pretrain(), gen)
        batches = order[: steps_per_epoch * cfg.batch_size].view(steps_per_epoch, cfg.batch_size)
        first, loss_sum = 0, torch.zeros((), device=device)
        if partial is not None:  # resume inside this epoch
            first = state["step"]
            gen.set_state(partial["generator"])
            loss_sum = torch.tensor(partial["loss_sum"], device=device)
            step_log.window = torch.tensor(partial["log_window"], device=device)
            partial = None
        start, before = time.perf_counter(), dict(state)
        inputs = pretrain_batches(data, batches[first:], gen, cfg.augment, rows)
        steps.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}")
        for i, x in enumerate(inputs, start=first):
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg.lr)
            at = StepAt(epoch, i, step, batches[i], len(x))
            for hook in ctx.hooks:
                hook.on_step_start(at)
            loss = train_step(x, gen)
            for hook in ctx.hooks:
                hook.on_step_end(at, loss)
            loss_sum += loss  # no host sync inside the loop
            step_log.add(epoch, i, step, loss)
            steps.update()
            if i + 1 < steps_per_epoch and clock.due(i):
                step_log.flush(wait=True)
                state = advanced(before, start, epoch, i + 1, (i + 1 - first) * cfg.batch_size)
                # Running sums as the mean over ranks: any number of ranks resumes from them.
                save({"partial": {
                    "generator": gen.get_state(),
                    "loss_sum": distributed.mean(loss_sum).item(),
                    "log_window": distributed.mean(step_log.window).item(),
                }})
                if clock.stop is not None:
                    raise RunInterrupted(f"stopped by {clock.stop} at epoch {epoch + 1} step "
                                         f"{i + 1}; checkpoint written, rerun to resume")
        epoch_loss = (distributed.mean(loss_sum) / steps_per_epoch).item()
        step_log.new_epoch()
        state = advanced(before, start, epoch + 1, 0, (steps_per_epoch - first) * cfg.batch_size)
        record = {"epoch": epoch + 1, "loss": epoch_loss, "lr": opt.param_groups[0]["lr"]}
        if dist.is_main:
            if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
                record.update(scored_names(cfg, evaluate_encoder(
                    cfg, data, model.encoder, device, ("knn",), knn_only=True)))
                if cfg.val_fraction is None:  # a tuning trial: its probes' figures only
                    record.update(fill_diagnostics(model, data, cfg.eval_test_limit,
                                                   cfg.eval_batch_size, device, cfg.seed))
            store.append_jsonl(metrics_path, record)
            ctx.tracker.log_metrics(record, (epoch + 1) * steps_per_epoch, "epoch")
        save()
        steps.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{epoch_loss:.4f}")
        stop = distributed.from_main(stopping.requested())
        if stop is not None:  # also before evaluation: it can take long
            raise RunInterrupted(f"stopped by {stop} after epoch {epoch + 1}; checkpoint "
                                 "written, rerun to resume")
        asked = [hook.on_epoch_end(epoch + 1, record) for hook in ctx.hooks]
        if any(asked) and epoch + 1 < cfg.epochs:
            raise RunInterrupted(f"stopped after epoch {epoch + 1} by a hook; rerun to resume")
    steps.close()
    return state
