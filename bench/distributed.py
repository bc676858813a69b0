"""Data-parallel training with torch.distributed: one process per device, started by `torchrun`
(env:// variables) or by SLURM (one task per GPU, any number of nodes; submitit's
JobEnvironment names the master), NCCL between GPUs and gloo on CPU.

Sharding without a sampler: every rank builds the same per-epoch permutation and draws the
randomness (augmentation, masks) of the whole global batch from the same seeded generator, then
keeps its own contiguous rows. So W ranks x B/W samples follow the trajectory of one process
with B samples; only the order in which gradients are summed differs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import TypeVar

import torch
import torch.distributed as dist
from submitit.helpers import TorchDistributedEnvironment
from torch import Tensor, nn

from bench.errors import ConfigError

# Other ranks wait at a barrier while rank 0 evaluates and writes the run folder, which takes
# minutes on large data: the default collective timeout (10 min for NCCL) is too short.
TIMEOUT = datetime.timedelta(hours=2)

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank 0 of 1 when not distributed."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, global_batch: int) -> slice:
        """This rank's contiguous share of a global batch of `global_batch` samples."""
        if global_batch % self.world:
            raise ConfigError(
                f"batch_size {global_batch} (the global batch) does not split evenly across "
                f"{self.world} processes"
            )
        per = global_batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def current() -> Dist:
    """Rank and world size of the initialised process group (Dist() when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def init_from_env() -> Dist:
    """Join the process group the launcher described, or stay single.

    torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT. A SLURM step with several
    tasks (`srun`, or submitit with `tasks_per_node` > 1) sets SLURM_STEP_NUM_TASKS; submitit's
    JobEnvironment then turns the SLURM variables into the same env:// variables (master: the
    first node, port from the job id). With CUDA each rank takes GPU `LOCAL_RANK`.
    """
    if dist.is_initialized():
        return current()
    if "RANK" not in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"  # one group for CPU and GPU tensors
    dist.init_process_group(backend, timeout=TIMEOUT)
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().world > 1:
        dist.barrier()


def mean(t: Tensor) -> Tensor:
    """Mean of `t` over ranks (a copy; `t` itself when not distributed). No host sync."""
    world = current().world
    if world == 1:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out / world


def from_main(obj: T) -> T:
    """Rank 0's `obj` on every rank (a picklable value), so that all ranks take its decision."""
    if current().world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def take_rows(batch: T, rows: slice) -> T:
    """Rows `rows` of a batch tensor, or of every tensor field of a batch dataclass (Visible)."""
    if isinstance(batch, Tensor):
        return batch[rows]
    if not is_dataclass(batch):
        raise TypeError(f"cannot take rows of {type(batch).__name__}")
    values = {f.name: getattr(batch, f.name) for f in fields(batch)}
    return replace(batch, **{k: v[rows] for k, v in values.items() if isinstance(v, Tensor)})


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel around `model` when there are several ranks, else `model`.

    DDP averages gradients over ranks; with equal per-rank batches and a per-sample-constant
    number of hidden positions (every image method) that is the gradient of the global mean.
    """
    if current().world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model)
