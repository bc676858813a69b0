"""MAE (He et al., 2021): hidden positions are filled with one learned [MASK] token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bench.masking import Visible, grid_size, scatter_tokens, visible_for_ratio
from methods.base import MaskingMethod, MethodOptions, register_method


@dataclass
class MAEOptions(MethodOptions):
    # "block" shows QB-Heat's contiguous block instead (the mask-shape half of the ablation).
    visible: Literal["random", "block"] = "random"
    block_position: Literal["random", "center", "quadrant"] = "random"


@register_method("mae")
class MAE(MaskingMethod):
    """Random visible subset; every hidden position gets the same learned [MASK] token."""

    modalities = frozenset({"image", "text"})
    Options = MAEOptions

    def __init__(self, options: MAEOptions, dim: int, modality: str):
        super().__init__(options, dim, modality)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)

    def choose_visible(self, batch: int, grid: tuple[int, ...], generator) -> Visible:
        o = self.options
        return visible_for_ratio(batch, grid, o.mask_ratio, o.visible, o.block_position, generator)

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        b, _, d = latent.shape
        base = self.mask_token.to(latent.dtype).expand(b, grid_size(grid), d)
        return scatter_tokens(base, visible.index, latent)
