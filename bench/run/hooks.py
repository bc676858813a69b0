"""Hooks on the training loop: what the perf harness, the GPU check and tests attach to watch
(or stop) a run, instead of patching the loop. A hook overrides the calls it needs; every
rank calls its hooks, in the order given. Hooks travel with a run to its worker process or
SLURM task, so they must pickle (module-level classes, no lambdas)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class StepAt:
    """Where the loop is: `epoch` (0-based), `index` (the step within the epoch), `step` (global,
    0-based), `samples` (the indices of the global batch this step trains on; None for
    synthetic inputs) and `rows` (the inputs this process trains on: its rows of the batch)."""

    epoch: int
    index: int
    step: int
    samples: Tensor | None
    rows: int


class Hook:
    """A training-loop observer; each call does nothing unless overridden."""

    def on_step_start(self, at: StepAt) -> None:
        """Before the step's forward pass (raise here to stop the process as a kill would)."""

    def on_step_end(self, at: StepAt, loss: Tensor) -> None:
        """After the optimiser step; `loss` is still on the device (reading it waits for it)."""

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        """After a checkpoint is written (mid-epoch or at an epoch's end); `state` is its
        progress: epochs finished, steps of the next epoch finished, samples, train seconds."""

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        """After epoch `epoch` (1-based) is recorded and checkpointed; `record` is its
        metrics.jsonl line. Return True to stop the run here (it stays resumable)."""
        return False


@dataclass
class StopAfterEpoch(Hook):
    """Stops the run after epoch `epoch` (1-based), as a preemption would: resumable."""

    epoch: int

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        return epoch == self.epoch


@dataclass
class AfterEpoch(Hook):
    """Calls `stop(epoch)` after every epoch (1-based); True stops the run, resumable."""

    stop: Callable[[int], bool]

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        return bool(self.stop(epoch))


# Hooks every run of this process gets besides its own (a process started by a launcher
# the caller does not construct, e.g. a torchrun worker running the CLI): see `watching`.
_PROCESS_HOOKS: list[Hook] = []


@contextmanager
def watching(*hooks: Hook) -> Iterator[None]:
    """Every run this process trains inside the block also calls `hooks`."""
    _PROCESS_HOOKS.extend(hooks)
    try:
        yield
    finally:
        for hook in hooks:
            _PROCESS_HOOKS.remove(hook)


def hooks_of_run(own: Iterable[Hook]) -> list[Hook]:
    """A run's hooks: its own, then the process's (`watching`)."""
    return [*own, *_PROCESS_HOOKS]
