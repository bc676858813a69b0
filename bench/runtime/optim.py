"""AdamW parameter groups under one stated weight-decay rule, and the learning-rate schedule.

The rule is the same for every method, every parameterisation and every evaluation protocol,
so that no comparison mixes a strategy with a regulariser: decay every parameter except the
1-D ones (biases, normalisation and layer-scale weights: timm's convention) and the ones a
module names in `no_weight_decay()` (timm's hook), which every masking method uses for all of
its own parameters (the [MASK] token, QB-Heat's A and B under full, diag or low-rank forms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

WEIGHT_DECAY_RULE = (
    "AdamW weight decay on every parameter except 1-D ones (biases, norm and layer-scale "
    "weights) and those a module lists in no_weight_decay() (all of a method's fill "
    "parameters: [MASK] token, A, B, U, V)"
)


def declared_no_decay(model: nn.Module) -> set[str]:
    """Full names of the parameters that modules of `model` list in `no_weight_decay()`."""
    params = dict(model.named_parameters())
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declare = getattr(module, "no_weight_decay", None)
        if not callable(declare):
            continue
        for name in declare():
            full = f"{prefix}.{name}" if prefix else name
            if full not in params:
                raise ValueError(f"{type(module).__name__}.no_weight_decay() names {name!r}, "
                                 "which is not one of its parameters")
            names.add(full)
    return names


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the trainable parameters of `model` that WEIGHT_DECAY_RULE does not decay."""
    declared = declared_no_decay(model)
    return {n for n, p in model.named_parameters()
            if p.requires_grad and (p.ndim <= 1 or n in declared)}


def decay_groups(named: Iterable[tuple[str, nn.Parameter]], no_decay: set[str], lr: float,
                 weight_decay: float) -> list[dict]:
    """Two AdamW groups at `lr` (empty ones dropped): decayed, and the names in `no_decay`."""
    decay, keep = [], []
    for name, p in named:
        if p.requires_grad:
            (keep if name in no_decay else decay).append(p)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": keep, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device):
    """AdamW with MAE's betas (0.9, 0.95) under WEIGHT_DECAY_RULE; fused on CUDA."""
    groups = decay_groups(model.named_parameters(), no_decay_names(model), lr, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then half-cosine to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    done = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
