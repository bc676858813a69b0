"""What a run pretrains on and in which order: the subset a `train_limit` draws once from the
seed, each epoch's permutation of it, and the generator all of an epoch's randomness comes
from (so an epoch replays exactly on resume)."""

from __future__ import annotations

from typing import Any

import torch

from bench.core.config import RunConfig
from bench.core.errors import ConfigError
from bench.runtime import distributed


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


def pretrain_count(cfg: RunConfig, data: Any) -> int:
    """Samples a run pretrains on: the data's, or `train_limit` of them."""
    n = data.n_pretrain()
    return n if cfg.train_limit is None else min(n, cfg.train_limit)


def check_fits(cfg: RunConfig, data: Any) -> None:
    """The global batch fits the pretraining data and splits evenly across processes."""
    n = pretrain_count(cfg, data)
    if cfg.batch_size > n:
        where = f"train_limit={cfg.train_limit}" if cfg.train_limit else f"{cfg.dataset}"
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {n} pretraining samples "
                          f"({where}); lower --batch-size")
    distributed.current().rows(cfg.batch_size)
