"""The shared pretraining model: embed -> choose_visible -> encoder(visible) -> project ->
method.fill -> decoder(+pos) -> head -> loss on hidden positions.

Only `method` differs between two runs of a comparison; everything here is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.masking import Visible
from bench.models.encoders import LAYER_NORM, Encoder, init_weights, transformer_blocks
from bench.models.patches import normalized_patches
from bench.models.posembed import sincos_table
from bench.spec import DataSpec
from methods.base import MaskingMethod


class Decoder(nn.Module):
    """Transformer decoder over the full grid with fixed sin-cos positions, then a linear head."""

    def __init__(self, spec: DataSpec, dim: int, depth: int, heads: int):
        super().__init__()
        self.register_buffer("pos", sincos_table(spec.grid, dim).unsqueeze(0), persistent=False)
        self.blocks = transformer_blocks(dim, depth, heads)
        self.norm = LAYER_NORM(dim)
        self.head = nn.Linear(dim, spec.target_dim)
        self.apply(init_weights)

    def forward(self, filled: Tensor) -> Tensor:
        x = self.blocks(filled + self.pos)
        return self.head(self.norm(x))


@dataclass
class PretrainOutput:
    loss: Tensor
    pred: Tensor  # [B, N, target_dim]
    visible: Visible


class MaskedPretrainer(nn.Module):
    def __init__(
        self,
        spec: DataSpec,
        encoder: Encoder,
        method: MaskingMethod,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
    ):
        super().__init__()
        self.spec, self.encoder, self.method = spec, encoder, method
        self.proj = nn.Linear(encoder.dim, decoder_dim)
        init_weights(self.proj)
        self.decoder = Decoder(spec, decoder_dim, decoder_depth, decoder_heads)

    def forward(
        self, x: Tensor, generator: torch.Generator | None, visible: Visible | None = None
    ) -> PretrainOutput:
        """`visible` may be chosen by the caller (a data-parallel rank keeps its rows of the
        global batch's masks); otherwise it is drawn here from `generator`."""
        if visible is None:
            visible = self.method.choose_visible(x.shape[0], self.spec.grid, generator)
        latent = self.proj(self.encoder.forward_visible(x, visible))
        pred = self.decoder(self.fill(latent, visible))
        return PretrainOutput(self.loss(x, pred, visible), pred, visible)

    def fill(self, latent: Tensor, visible: Visible) -> Tensor:
        """The method's fill, always in float32: under bf16 autocast a fill would otherwise
        round at every step (QB-Heat's propagation compounds that error over the grid, by as
        much as the A/B terms themselves), which would change one method's numbers and not
        another's. The decoder after it runs under autocast again."""
        with torch.autocast(latent.device.type, enabled=False):
            return self.method.fill(latent.float(), visible, self.spec.grid)

    def scored(self, x: Tensor, visible: Visible) -> Tensor:
        """BoolTensor[B, N]: the positions the loss scores, hidden ones that are not padding."""
        hidden = ~visible.mask(self.spec.num_tokens)
        if self.spec.modality == "text":
            hidden &= x != self.spec.pad_id
        return hidden

    def loss(self, x: Tensor, pred: Tensor, visible: Visible) -> Tensor:
        """Mean over `scored` positions only: per-patch normalised-pixel MSE, or token CE."""
        hidden = self.scored(x, visible)
        if self.spec.modality == "image":
            target = normalized_patches(x, self.spec.patch_size)
            per_position = (pred.float() - target).pow(2).mean(dim=-1)
        else:
            per_position = F.cross_entropy(
                pred.float().transpose(1, 2), x, reduction="none"
            )
        weight = hidden.to(per_position.dtype)
        return (per_position * weight).sum() / weight.sum().clamp_min(1.0)
