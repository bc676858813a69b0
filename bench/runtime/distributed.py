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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import TypeVar

import torch
import torch.distributed as dist
from submitit.helpers import TorchDistributedEnvironment
from torch import Tensor, nn

from bench.core.errors import ConfigError

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
    Batch normalisation layers are switched to statistics over the global batch (in place:
    the same parameters and buffers), so W ranks normalise as one process does.
    """
    if current().world == 1:
        return model
    global_batch_norm(model)
    return nn.parallel.DistributedDataParallel(model)


# ------------------------------------------------------------------ batch norm over all ranks

_sync_stats = [False]


@contextmanager
def synced_batch_stats() -> Iterator[None]:
    """Inside this block (the data-parallel training step only) batch normalisation in
    training mode uses the global batch's statistics; elsewhere (a rank-0-only evaluation that
    trains a copy of the encoder) it stays local, so no rank waits for a collective that the
    others never join."""
    _sync_stats.append(True)
    try:
        yield
    finally:
        _sync_stats.pop()


def syncing_stats() -> bool:
    """Whether batch statistics are shared across ranks here (inside `synced_batch_stats`,
    under several processes)."""
    return _sync_stats[-1] and current().world > 1


def normalize_batch(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, weight: Tensor | None = None,
                    across_ranks: bool = True) -> Tensor:
    """Batch norm of `x` in training mode with the mean and biased variance over the positions
    `weight` marks (1: counted, 0: not; broadcast to `x`, None: all of them), over every rank
    with `across_ranks` (two differentiable all-reduces; the backward all-reduces the gradients
    the same way, so DDP's averaged gradients are those of one process on the whole batch).
    Running statistics are updated as `F.batch_norm` updates them (unbiased variance)."""
    from torch.distributed.nn.functional import all_reduce

    reduce = all_reduce if across_ranks else (lambda t: t)
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()
    if weight is None:
        local_n = torch.tensor([xf.numel() / xf.shape[1]], device=x.device)
        totals = reduce(torch.cat([xf.sum(dims), local_n]))
    else:
        w = weight.float().expand(xf.shape[0], 1, *xf.shape[2:])
        totals = reduce(torch.cat([(xf * w).sum(dims), w.sum().reshape(1)]))
    n = totals[-1]
    mean = totals[:-1] / n
    centred = xf - mean.view(shape)
    spread = centred.pow(2) if weight is None else centred.pow(2) * w
    var = reduce(spread.sum(dims)) / n
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
    return y.to(x.dtype)


class _GlobalBatchNorm:
    """Mixed into a batch-norm class (`global_batch_norm`): global statistics inside
    `synced_batch_stats` in training mode, the class's own forward everywhere else."""

    def forward(self, x: Tensor) -> Tensor:
        if not (_sync_stats[-1] and self.training):
            return super().forward(x)
        return after_norm(self, normalize_batch(self, x))


def after_norm(bn: nn.Module, y: Tensor) -> Tensor:
    """What a batch-norm layer applies after normalising: timm's BatchNormAct2d its dropout
    and activation, a plain batch norm nothing."""
    return bn.act(bn.drop(y)) if _is_timm_norm_act(bn) else y


_GLOBAL_CLASSES: dict[type, type] = {}


def _is_timm_norm_act(module: nn.Module) -> bool:
    from timm.layers import BatchNormAct2d

    return isinstance(module, BatchNormAct2d)


def global_batch_norm(model: nn.Module) -> nn.Module:
    """Switch every batch-norm layer of `model` to global statistics (see `_GlobalBatchNorm`),
    keeping its parameters, buffers and state-dict names (checkpoints resume under any number
    of processes). torch's SyncBatchNorm is not used: it refuses CPU (gloo) tensors."""
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for name, module in model.named_modules():
        cls = type(module)
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or cls in _GLOBAL_CLASSES.values():
            continue
        if getattr(cls, "shares_stats_itself", False):  # bench.models.sparse: visible-only
            continue
        if cls not in plain and not _is_timm_norm_act(module):
            raise ConfigError(f"{name} is a {cls.__name__}, whose statistics cannot be shared "
                              "across processes here; train this encoder in one process")
        if cls not in _GLOBAL_CLASSES:
            _GLOBAL_CLASSES[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
        module.__class__ = _GLOBAL_CLASSES[cls]
    return model
