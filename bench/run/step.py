"""One pretraining step (masks, forward under autocast, backward, AdamW), the step-loss
log written without stalling the loop, and the FLOPs of a step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.core import store
from bench.models.pretrainer import MaskedPretrainer
from bench.run import trackers
from bench.runtime import compiling, distributed, precision


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
    checks and tests (bench.runtime.compiling.compile_step)."""

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
        with precision.autocast(self.device), distributed.synced_batch_stats():
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
    matmuls, convolutions and attention, bench.runtime.flops)."""
    from bench.runtime.flops import flop_counter

    gen = torch.Generator(device=x.device).manual_seed(0)
    counter = flop_counter()
    with counter:
        model(x, gen).objective.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


@torch.no_grad()
def decoder_flops_per_sample(model: MaskedPretrainer) -> float:
    """Forward FLOPs of the shared decoder (projection, decoder and head) on one sample's full
    grid: what `decoder=transformer` and `decoder=conv` cost apart from the fill."""
    from bench.runtime.flops import flop_counter

    p = next(model.parameters())
    features = torch.zeros(1, model.spec.num_tokens, model.proj.in_features, device=p.device)
    counter = flop_counter()
    with counter:
        model.decoder(model.proj(features))
    return float(counter.get_total_flops())
