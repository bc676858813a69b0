"""MAE's fill: one learned [MASK] token at every hidden position (the card: __init__.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.core.options import LayoutOptions
from bench.ops.masking import Visible, grid_size, scatter_tokens
from methods.base import MaskingMethod, register_method
from methods.mae import CARD


@register_method(CARD)
class MAE(MaskingMethod):
    """Random visible subset; every hidden position gets the same learned [MASK] token."""

    def __init__(self, options: LayoutOptions, dim: int, modality: str):
        super().__init__(options, dim, modality)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        b, _, d = latent.shape
        base = self.mask_token.to(latent.dtype).expand(b, grid_size(grid), d)
        return scatter_tokens(base, visible.index, latent)
