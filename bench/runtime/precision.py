"""Mixed precision with one switch: a run's `precision` (auto | bf16 | fp32) decides the autocast
of every forward pass beneath it (pretraining step, features, probes, fine-tuning, reconstruction),
on any device. `auto` is bf16 on CUDA and float32 elsewhere (CPU bf16 is slow on most CPUs and
changes results), so asking for bf16 on a CPU exercises the GPU's numerics without a GPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from bench.core.config import PRECISIONS
from bench.core.errors import ConfigError

_chosen = ["auto"]  # a stack: the innermost `chosen` decides


@contextmanager
def chosen(precision: str) -> Iterator[None]:
    """Forward passes inside this block run at `precision` (one of PRECISIONS)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: must be one of {', '.join(PRECISIONS)}")
    _chosen.append(precision)
    try:
        yield
    finally:
        _chosen.pop()


def uses_bf16(device: torch.device) -> bool:
    """Whether forward passes on `device` run under bf16 autocast now."""
    precision = _chosen[-1]
    return device.type == "cuda" if precision == "auto" else precision == "bf16"


def autocast(device: torch.device):
    """bf16 autocast where the chosen precision asks for it on `device`; else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device))
