"""`probe_layers=all`: the linear probe on every layer of a ViT encoder, to see where in depth
the features that classify live.

Layer 0 is the embedding (patch or token embedding plus positions), layer i the output of
block i, each mean-pooled over real positions before the final norm (the probe standardises
every feature, so the norm's scale does not matter; `linear_top1` reads the output after it).
`linear_layer{i}_top1`: test top-1 of the fixed linear-probe recipe trained on the probe's
training split. The best layer is chosen on a validation split, never on test data: the last
`LAYER_VALIDATION_SHARE` of the probe's training split scores a probe trained on the rest;
`linear_layer_best` is the layer with the highest validation top-1 (ties: the shallower) and
`linear_layer_best_top1` that layer's test top-1 (of the probe trained on the whole split).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench.data.protocol import EvalSplit
from bench.eval.heldout import evaluating
from bench.eval.positions import batches
from bench.eval.probes import ProbeRecipe, linear_probe
from bench.models.parts import Encoder, mean_pool
from bench.runtime import precision

LAYER_VALIDATION_SHARE = 0.2


def has_layers(encoder: Encoder | None) -> bool:
    """Whether the per-layer probe applies: an encoder with blocks (ViT)."""
    return encoder is not None and hasattr(encoder, "forward_layers")


@torch.no_grad()
def layer_features(encoder: Encoder, data, split: EvalSplit, batch_size: int,
                   device: torch.device, desc: str) -> list[Tensor]:
    """Per layer (`forward_layers`), the mean-pooled features `[N, dim]` of every input."""
    per_layer: list[list[Tensor]] = []
    with evaluating(encoder):
        for _, xb, pb in batches(split.x, split.pad_mask, batch_size, device, desc):
            with precision.autocast(device):
                layers = encoder.forward_layers(data.eval_batch(xb), pb)
            for i, tokens in enumerate(layers):
                if i == len(per_layer):
                    per_layer.append([])
                per_layer[i].append(mean_pool(tokens, pb).float())
    return [torch.cat(f) for f in per_layer]


def best_layer(train: list[Tensor], y: Tensor, seed: int, recipe: ProbeRecipe) -> int:
    """The layer whose probe, trained on the first part of the training split, scores best on
    its last `LAYER_VALIDATION_SHARE` (ties: the shallower layer)."""
    n_fit = min(len(y) - 1, math.ceil(len(y) * (1 - LAYER_VALIDATION_SHARE)))
    val = [linear_probe(f[:n_fit], y[:n_fit], f[n_fit:], y[n_fit:], seed, recipe)
           for f in train]
    return max(range(len(val)), key=lambda i: (val[i], -i))


def layer_metrics(cfg, data, encoder: Encoder, train: EvalSplit, test: EvalSplit,
                  device: torch.device, l2: float | None = None) -> dict[str, float]:
    """Each block's linear probe at penalty `l2` (None: each chooses its own), and the best
    layer chosen on a share of the training split."""
    recipe = ProbeRecipe(steps=cfg.probe_steps, l2=l2)
    train_f = layer_features(encoder, data, train, cfg.eval_batch_size, device, "layers train")
    test_f = layer_features(encoder, data, test, cfg.eval_batch_size, device, "layers test")
    train_y, test_y = train.y.to(device), test.y.to(device)
    out = {f"linear_layer{i}_top1": linear_probe(tr, train_y, te, test_y, cfg.seed, recipe)
           for i, (tr, te) in enumerate(zip(train_f, test_f))}
    best = best_layer(train_f, train_y, cfg.seed, recipe)
    return {**out, "linear_layer_best": float(best),
            "linear_layer_best_top1": out[f"linear_layer{best}_top1"]}
