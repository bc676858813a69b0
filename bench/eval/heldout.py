"""Held-out passes: a module in eval mode for a block, sized batches of held-out inputs, and
the pretrainer's outputs on them under seeded masks (every held-out metric of a run scores
the same masks)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.models.pretrainer import MaskedPretrainer, PretrainOutput
from bench.runtime import precision, progress


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode for the block, then back in the mode it was in (an evaluation in
    the middle of pretraining must not leave the model in eval mode, nor the reverse)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass
class Batches:
    """`inputs` in consecutive batches of `batch_size` on `device`, each through `prepare`
    (e.g. normalising); sized, so a progress bar over it knows its total."""

    inputs: Tensor
    batch_size: int
    device: torch.device
    prepare: Callable[[Tensor], Tensor] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.inputs) / self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(0, len(self.inputs), self.batch_size):
            x = self.inputs[i : i + self.batch_size].to(self.device)
            yield x if self.prepare is None else self.prepare(x)


def heldout_outputs(model: MaskedPretrainer, batches: Iterable[Tensor], device: torch.device,
                    seed: int, desc: str) -> Iterator[tuple[Tensor, PretrainOutput]]:
    """`(x, model(x))` for each held-out batch: eval mode, autocast, no gradients, the
    method's own masks drawn from one generator seeded `seed`, so every held-out metric of a
    run scores the same masks."""
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad(), evaluating(model):
        for x in progress.bar(batches, desc=desc, leave=False, unit="batch"):
            with precision.autocast(device):
                out = model(x, gen)
            yield x, out
