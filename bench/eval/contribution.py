"""What the learned fill contributes, measured in every run: the held-out reconstruction loss
(`recon_loss`) again with the fill replaced, on the same inputs and the same seeded masks,
by a constant fill (each sample's mean visible feature at every hidden position:
`recon_loss_fill_const`) and by each ablation the method declares (`ablated_fills`, e.g.
QB-Heat with A = B = 0, a copy of the nearest block edge: `recon_loss_fill_copy`). The
encoder and decoder stay as trained, so the gap is what the fill rule itself adds to what the
decoder could do without it."""

from __future__ import annotations

import torch

from bench.core.config import RunConfig
from bench.eval.pretext import pretext_metrics
from bench.models.pretrainer import MaskedPretrainer
from bench.ops.masking import mean_visible_fill

PREFIX = "recon_loss_fill_"  # + the fill's name: a summary.json metric


def fill_contribution(cfg: RunConfig, model: MaskedPretrainer, data, device: torch.device
                      ) -> dict[str, float]:
    """`recon_loss_fill_<name>` of the constant fill and of the method's ablated fills, each
    the run's `recon_loss` (bench.eval.pretext) computed with that fill in place."""
    rules = {"const": mean_visible_fill, **model.method.ablated_fills()}
    out = {}
    for name, rule in rules.items():
        with model.filling_with(rule):
            out[PREFIX + name] = pretext_metrics(cfg, model, data, device)["recon_loss"]
    return out
