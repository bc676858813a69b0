"""One run: pretrain -> evaluate -> write the run folder. Resumable at any point.

Determinism: every source of randomness in epoch e (data order, augmentation, masks) comes
from a generator seeded by (seed, e), and a checkpoint is written atomically after every
epoch, so a run killed anywhere and restarted ends with the same numbers as an
uninterrupted one (bit-identical on CPU).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import methods  # noqa: F401  (registers every method)
from bench import checkpoint, compiling, distributed, files, precision, stopping, store, trackers
from bench.catalog import REFERENCES
from bench.config import RunConfig
from bench.data import dataset_key, load_dataset
from bench.data.protocol import TrainingData
from bench.data.streaming import pretrain_batches
from bench.devices import check_device_type, device_name, peak_memory_bytes, resolve_device
from bench.diagnostics import fill_diagnostics
from bench.evaluate import masked_token_metrics, reconstruction_loss
from bench.evaluate_sentences import masked_sentence_metrics
from bench.models.build import build_model
from bench.models.encoders import build_encoder
from bench.models.patches import patchify, unpatchify
from bench.models.pretrainer import MaskedPretrainer
from bench.optim import WEIGHT_DECAY_RULE, build_optimizer, lr_at
from bench.precision import autocast
from bench.probes import evaluate_encoder
from bench.progress import bar, shown
from bench.spec import DataSpec
from bench.validate import check_fits

RECON_IMAGES = 8  # test images shown (recon_indices): the same pictures for every method


class RunInterrupted(Exception):
    """Raised after a checkpoint when the caller asked the run to stop (preemption, tests)."""


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """All randomness of one epoch comes from here, so an epoch replays exactly on resume."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def pretrain_subset(seed: int, available: int, limit: int | None) -> torch.Tensor | None:
    """The training samples a run with `train_limit=limit` pretrains on: `limit` of the
    `available` ones, drawn once from the run's seed (on the CPU, so on any device; the same
    subset for every method of a seed, whatever the epoch), or None for all of them. Epochs
    shuffle within it."""
    if limit is None or limit >= available:
        return None
    gen = torch.Generator().manual_seed(seed * 1_000_003 - 1)  # no epoch generator uses it
    return torch.randperm(available, generator=gen)[:limit].sort().values


def epoch_order(subset: torch.Tensor | None, available: int, gen: torch.Generator) -> torch.Tensor:
    """This epoch's sample order: a permutation of the subset (or of everything) from `gen`."""
    if subset is None:
        return torch.randperm(available, generator=gen, device=gen.device)
    return subset.to(gen.device)[torch.randperm(len(subset), generator=gen, device=gen.device)]


def use_compile(flag: bool | None, device: torch.device) -> bool:
    """torch.compile by default on CUDA only: on CPU compiling costs more than it saves."""
    return device.type == "cuda" if flag is None else flag


def prepare_model(model: MaskedPretrainer, device: torch.device) -> MaskedPretrainer:
    """`model` on `device`; on CUDA a CNN encoder goes channels-last (cuDNN's fast layout)."""
    model = model.to(device)
    if device.type == "cuda" and model.encoder.kind == "dense":
        model.encoder.to(memory_format=torch.channels_last)
    return model


class TrainStep:
    """One optimisation step on this process's rows of a global batch: masks drawn for the
    whole global batch (so any number of ranks draws alike), forward under the run's autocast
    (bf16 on CUDA by default; compiled in `compile_mode` if asked, DDP across ranks), backward,
    AdamW. Returns the loss on the device: nothing here waits for the GPU. `backend` is for
    checks and tests (bench.compiling.compile_step)."""

    def __init__(self, model: MaskedPretrainer, opt: torch.optim.Optimizer, device: torch.device,
                 compile: bool, compile_mode: str = "default", backend: str = "inductor"):
        self.model, self.opt, self.device = model, opt, device
        self.dist = distributed.current()
        net = distributed.wrap(model)
        self.net = compiling.compile_step(net, compile_mode, backend) if compile else net
        self.graphs = compile and compiling.uses_cuda_graphs(compile_mode, device)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch = len(x) * self.dist.world
        visible = self.model.method.choose_visible(batch, self.model.spec.grid, generator)
        visible = distributed.take_rows(visible, self.dist.rows(batch))
        if self.graphs:  # a new iteration: the last replay's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device), distributed.synced_batch_stats():
            loss = self.net(x, None, visible).objective
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        loss = loss.detach().float()
        return loss.clone() if self.graphs else loss  # a graph's output is a reused buffer


class StepLog:
    """The mean loss of every `every` steps of an epoch, all-reduced over ranks, written to
    `steps.jsonl` without stalling the step loop: each mean is copied to the host without
    blocking and written once a CUDA event says the copy landed (at the latest, at epoch end)."""

    def __init__(self, path: Path, every: int, device: torch.device, write: bool,
                 tracker: trackers.RunTracker | None = None):
        self.path, self.every, self.device, self.write = path, every, device, write
        self.tracker = tracker
        self.pending: list[tuple[dict[str, int], torch.Tensor, Any]] = []
        self.window = torch.zeros((), device=device)

    def add(self, epoch: int, i: int, step: int, loss: torch.Tensor) -> None:
        """Step `i` of epoch `epoch` (0-based), global step `step`, has loss `loss`."""
        if not self.every:
            return
        self.window += loss
        if (i + 1) % self.every:
            return
        mean = distributed.mean(self.window / self.every).to("cpu", non_blocking=True)
        event = torch.cuda.Event() if self.device.type == "cuda" else None
        if event is not None:
            event.record()
        self.pending.append(({"epoch": epoch + 1, "step": step + 1}, mean, event))
        self.window = torch.zeros((), device=self.device)
        self.flush(wait=False)

    def flush(self, wait: bool) -> None:
        while self.pending and (wait or self.pending[0][2] is None or self.pending[0][2].query()):
            where, mean, event = self.pending.pop(0)
            if event is not None:  # until the copy lands, the pinned host tensor holds garbage
                event.synchronize()
            if self.write:
                record = {**where, "loss": mean.item()}
                store.append_jsonl(self.path, record)
                if self.tracker is not None:
                    self.tracker.log_metrics(record, where["step"], "steps")

    def new_epoch(self) -> None:
        self.flush(wait=True)
        self.window = torch.zeros((), device=self.device)


def pretrain_flops_per_sample(model: MaskedPretrainer, x: torch.Tensor) -> float:
    """Forward + backward FLOPs of one pretraining step, per sample (torch's flop counter:
    matmuls, convolutions and attention, bench.flops)."""
    from bench.flops import flop_counter

    gen = torch.Generator(device=x.device).manual_seed(0)
    counter = flop_counter()
    with counter:
        model(x, gen).objective.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


@dataclass
class RunContext:
    cfg: RunConfig
    run_dir: Path
    device: torch.device
    data: TrainingData
    tracker: trackers.RunTracker


def write_config(run_dir: Path, cfg: RunConfig, data) -> None:
    store.write_json(
        run_dir / files.CONFIG,
        {
            **cfg.to_dict(),
            "run_id": cfg.run_id,
            "lr": cfg.lr,
            "weight_decay_rule": WEIGHT_DECAY_RULE,
            "git_sha": store.git_sha(),
            "versions": store.package_versions(),
            "data_fingerprint": getattr(data, "fingerprint", None),
            "data_spec": data_spec_record(data),
        },
    )


def data_spec_record(data) -> dict[str, Any]:
    """What rebuilds the encoder and feeds it (bench export): the DataSpec, and for images the
    normalisation the encoder was trained on."""
    return {**asdict(data.spec), "mean": getattr(data, "mean", None),
            "std": getattr(data, "std", None)}


# Under DDP the ranks agree on a mid-epoch checkpoint (a small collective) every this many
# steps; a single process reads its clock after every step, which costs no device sync.
DDP_CHECKPOINT_POLL_STEPS = 50


class CheckpointClock:
    """When to write a mid-epoch checkpoint: after `every_min` minutes of training since the
    last checkpoint (0: at epoch ends only), or at once when a signal asked the process to stop
    (bench.stopping; then `stop` names it). Rank 0 decides for every rank."""

    def __init__(self, every_min: float, world: int):
        self.every_s = every_min * 60
        self.poll = 1 if world == 1 else DDP_CHECKPOINT_POLL_STEPS
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


def pretrain(ctx: RunContext, model: MaskedPretrainer, interrupt: Callable[[int], bool] | None):
    """Train `model` to `cfg.epochs`, resuming from the run folder's checkpoint if present.

    A checkpoint is written after every epoch and, within long epochs, every
    `checkpoint_every_min` minutes; a mid-epoch one also holds the epoch generator's state and
    the epoch's running loss sums, so the resumed epoch draws and logs exactly what an
    uninterrupted one would. Under DDP every rank takes its rows of each global batch of
    `cfg.batch_size`; rank 0 writes the metrics and checkpoints while the others wait, and
    every rank resumes from them.
    """
    cfg, device, data = ctx.cfg, ctx.device, ctx.data
    dist = distributed.current()
    rows = dist.rows(cfg.batch_size)
    metrics_path = ctx.run_dir / files.METRICS
    steps_path = ctx.run_dir / files.STEPS
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, device)
    subset = pretrain_subset(cfg.seed, data.n_pretrain(), cfg.train_limit)
    n = data.n_pretrain() if subset is None else len(subset)
    check_fits(cfg, data)
    steps_per_epoch = n // cfg.batch_size  # full batches only: every step has the same shape
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    state, partial = resume(ctx, model, opt, steps_per_epoch)
    ctx.tracker.start(state["epoch"] * steps_per_epoch + state["step"])
    train_step = TrainStep(model, opt, device, use_compile(cfg.compile, device), cfg.compile_mode)
    step_log = StepLog(steps_path, cfg.log_every, device, write=dist.is_main, tracker=ctx.tracker)
    clock = CheckpointClock(cfg.checkpoint_every_min, dist.world)

    def save(extra: dict[str, Any] | None = None) -> None:
        if dist.is_main:
            checkpoint.save(ctx.run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "state": state, "device_type": device.type,
                                          **(extra or {})})
        distributed.barrier()  # every rank resumes from the same checkpoint
        clock.reset()

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
            loss = train_step(x, gen)
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
                record.update(evaluate_encoder(cfg, data, model.encoder, device, knn_only=True))
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
        if interrupt is not None and interrupt(epoch + 1) and epoch + 1 < cfg.epochs:
            raise RunInterrupted(f"stopped after epoch {epoch + 1}; rerun to resume")
    steps.close()
    return state


def recon_indices(labels: torch.Tensor, n: int = RECON_IMAGES) -> torch.Tensor:
    """`n` test positions across classes: the first image of each class (classes in label
    order), then the second of each, and so on; the same positions for the same split."""
    by_class = torch.sort(labels, stable=True).indices  # test order kept within a class
    grouped = labels[by_class]
    rank = torch.arange(len(labels)) - torch.searchsorted(grouped, grouped)  # k-th of its class
    return by_class[torch.sort(rank, stable=True).indices][:n]


@torch.no_grad()
def save_reconstructions(ctx: RunContext, model: MaskedPretrainer) -> None:
    """Original, visible mask and reconstruction of test images across classes (images
    only), from the split the probes were scored on (already decoded)."""
    if model.spec.modality != "image":
        return
    data, spec = ctx.data, model.spec
    test = data.eval_split("test", ctx.cfg.eval_test_limit)
    raw = test.x[recon_indices(test.y.cpu())].to(ctx.device)
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
        ctx.run_dir / files.RECONSTRUCTIONS,
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
    data: TrainingData | None = None,
) -> dict[str, Any]:
    """Pretrain (unless a reference row), evaluate, write `summary.json` last. Returns it.

    Under DDP (see bench.distributed) all ranks pretrain; rank 0 alone evaluates and writes the
    run folder, and the other ranks return `summary_record(cfg, "ok", rank=r)` after pretraining.
    `progress=False` silences every progress bar of the run (bench.progress); `cfg.precision`
    sets the autocast of all its forward passes (bench.precision). The trackers of
    `cfg.log_to` (bench.trackers) are checked before anything else and follow the run folder.
    """
    with shown(progress), precision.chosen(cfg.precision), \
            trackers.open_run(cfg, run_dir, stopped=(RunInterrupted,)) as tracker:
        return _train_and_evaluate(cfg, run_dir, interrupt, data, tracker)


def _train_and_evaluate(
    cfg: RunConfig, run_dir: Path, interrupt: Callable[[int], bool] | None,
    data: TrainingData | None, tracker: trackers.RunTracker,
) -> dict[str, Any]:
    wall_start = time.perf_counter()
    dist = distributed.current()
    device = resolve_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = (data if data is not None else load_dataset(*dataset_key(cfg))).to(device)
    if dist.is_main:
        write_config(run_dir, cfg, data)
    elif cfg.method in REFERENCES:  # nothing to train: rank 0 evaluates
        return summary_record(cfg, "ok", rank=dist.rank)
    ctx = RunContext(cfg, run_dir, device, data, tracker)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compute: dict[str, Any] = {
        "pretrain_flops_per_sample": 0.0,
        "train_samples_per_s": None,
        "device": device_name(device),
        "device_type": device.type,  # numbers differ between device types: never pooled
        "processes": dist.world,  # data-parallel ranks: samples/s is theirs together
    }
    if cfg.method == "raw-input":
        setup = setup_record(cfg, data.spec)
        metrics = evaluate_encoder(cfg, data, None, device)
    elif cfg.method == "random-init":
        torch.manual_seed(cfg.seed)
        encoder = build_encoder(cfg.encoder, data.spec).to(device)
        setup = setup_record(cfg, data.spec, encoder=encoder)
        metrics = evaluate_encoder(cfg, data, encoder, device)
    else:
        model = prepare_model(build_model(cfg, data.spec, getattr(data, "sentences", None)),
                              device)
        setup = setup_record(cfg, data.spec, model.encoder, model)
        probe_x = data.pretrain_batch(torch.arange(2, device=device), epoch_generator(0, -1, device), False)
        compute["pretrain_flops_per_sample"] = pretrain_flops_per_sample(model, probe_x)
        state = pretrain(ctx, model, interrupt)
        compute["train_samples_per_s"] = state["samples"] / max(state["train_s"], 1e-9)
        compute["train_s"] = state["train_s"]
        if not dist.is_main:
            return summary_record(cfg, "ok", rank=dist.rank)
        metrics = evaluate_encoder(cfg, data, model.encoder, device)
        if cfg.granularity == "sentence":  # recon_loss = held-out bag-of-words cross-entropy
            windows = data.heldout_windows(cfg.eval_test_limit)
            metrics.update(masked_sentence_metrics(model, windows, cfg.eval_batch_size,
                                                   device, cfg.seed))
        elif model.spec.modality == "text":  # recon_loss = held-out masked-token cross-entropy
            blocks = data.heldout_blocks(cfg.eval_test_limit)
            metrics.update(masked_token_metrics(model, blocks, cfg.eval_batch_size, device,
                                                cfg.seed))
        else:
            test = data.eval_split("test", cfg.eval_test_limit)
            metrics["recon_loss"] = reconstruction_loss(
                model, data, test, cfg.eval_batch_size, device, cfg.seed
            )
        metrics.update(fill_diagnostics(model, data, cfg.eval_test_limit, cfg.eval_batch_size,
                                        device, cfg.seed))
        metrics["pretrain_loss"] = store.read_jsonl(run_dir / files.METRICS)[-1]["loss"]
        save_reconstructions(ctx, model)
    compute["peak_mem_bytes"] = peak_memory_bytes(device)
    compute["wall_s"] = time.perf_counter() - wall_start
    summary = summary_record(cfg, "ok", metrics=metrics, compute=compute, setup=setup,
                             data=data_record(data))
    store.write_json(run_dir / files.SUMMARY, summary)
    tracker.log_result(summary)
    return summary


def data_record(data: Any) -> dict[str, Any]:
    """What the run's data left out: files that do not decode (skipped and counted)."""
    skipped = list(getattr(data, "skipped", ()))
    return {"skipped": len(skipped), "skipped_files": skipped[:20]}


def _parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters() if p.requires_grad)


def setup_record(cfg: RunConfig, spec: DataSpec, encoder: nn.Module | None = None,
                 model: MaskedPretrainer | None = None) -> dict[str, Any]:
    """What the report's fairness table compares between rows: tokens the encoder sees and
    positions the loss scores per sample, trainable parameters by part, epochs and batch.
    Reference rows see every position and score none."""
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
