"""The shared pretraining model: embed -> choose_visible -> encoder(visible) -> project ->
method.fill -> decoder(+pos) -> head -> loss on hidden positions (+ the method's regularizer).

A method that fills at the encoder (`MaskingMethod.fill_site`) is called before the
projection instead: encoder(visible) -> method.fill -> project -> decoder. Only `method`
differs between two runs of a comparison; everything here is shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.core.errors import IncompatibleError
from bench.core.spec import DataSpec
from bench.models.decoders import build_decoder
from bench.models.parts import Encoder, init_weights
from bench.ops.masking import Visible
from methods.base import FillRule, MaskingMethod


@dataclass
class PretrainOutput:
    loss: Tensor  # the reconstruction loss on the scored positions
    pred: Tensor  # [B, N, the head's width]
    visible: Visible
    penalty: Tensor | None = None  # the method's regularizer, if it has one

    @property
    def objective(self) -> Tensor:
        """What training minimises: the loss plus the method's regularizer."""
        return self.loss if self.penalty is None else self.loss + self.penalty


class MaskedPretrainer(nn.Module):
    def __init__(
        self,
        spec: DataSpec,
        encoder: Encoder,
        method: MaskingMethod,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        decoder: str = "transformer",
    ):
        super().__init__()
        self.spec, self.encoder, self.method = spec, encoder, method
        self.proj = nn.Linear(encoder.dim, decoder_dim)
        init_weights(self.proj)
        self.decoder = build_decoder(decoder, spec, decoder_dim, decoder_depth, decoder_heads)
        self.fill_site = method.fill_site(method.options)
        self.fill_rule: FillRule | None = None  # `filling_with`: another fill, for evaluation
        width = encoder.dim if self.fill_site == "encoder" else decoder_dim
        if method.dim != width:
            raise IncompatibleError(f"method {method.name!r} fills at the {self.fill_site} (width "
                                    f"{width}) but was built at width {method.dim}")

    def forward(
        self, x: Tensor, generator: torch.Generator | None, visible: Visible | None = None
    ) -> PretrainOutput:
        """`visible` may be chosen by the caller (a data-parallel rank keeps its rows of the
        global batch's masks); otherwise it is drawn here from `generator`."""
        if visible is None:
            visible = self.method.choose_visible(x.shape[0], self.spec.grid, generator)
        pred = self.decode(self.encoder.forward_visible(x, visible), visible)
        return PretrainOutput(self.loss(x, pred, visible), pred, visible, self.penalty(x))

    def decode(self, features: Tensor, visible: Visible) -> Tensor:
        """Encoder features `[B, K, encoder.dim]` of the visible positions -> predictions over
        the whole grid: fill and project in the order the method's `fill_site` names, decode."""
        if self.fill_site == "encoder":
            filled = self.proj(self.fill(features, visible))
        else:
            filled = self.fill(self.proj(features), visible)
        return self.decoder(filled)

    def fill(self, latent: Tensor, visible: Visible) -> Tensor:
        """The method's fill, always in float32: under bf16 autocast a fill would otherwise
        round at every step (QB-Heat's propagation compounds that error over the grid, by as
        much as the A/B terms themselves), which would change one method's numbers and not
        another's. The decoder after it runs under autocast again."""
        rule = self.fill_rule or self.method.fill
        with torch.autocast(latent.device.type, enabled=False):
            return rule(latent.float(), visible, self.spec.grid)

    @contextmanager
    def filling_with(self, rule: FillRule) -> Iterator[None]:
        """Inside the block `rule` replaces the method's fill, at the same site and width
        (bench.eval.contribution scores a constant fill and a method's ablated ones)."""
        self.fill_rule = rule
        try:
            yield
        finally:
            self.fill_rule = None

    def penalty(self, x: Tensor) -> Tensor | None:
        """The method's regularizer in float32, as `fill` (None when it has none)."""
        with torch.autocast(x.device.type, enabled=False):
            return self.method.regularizer()

    def scored(self, x: Tensor, visible: Visible) -> Tensor:
        """BoolTensor[B, N]: the positions the loss scores, hidden ones that are real (the
        head says which: not [PAD] for text, all of them for images)."""
        hidden = ~visible.mask(self.spec.num_tokens)
        real = self.decoder.head.real(x)
        return hidden if real is None else hidden & real

    def position_loss(self, x: Tensor, pred: Tensor) -> Tensor:
        """`[B, N]` float32 loss at every position, as the head scores it (bench.models.heads:
        per-patch normalised-pixel MSE, or token cross-entropy)."""
        return self.decoder.head.position_loss(x, pred)

    def loss(self, x: Tensor, pred: Tensor, visible: Visible) -> Tensor:
        """Mean of `position_loss` over `scored` positions only."""
        hidden = self.scored(x, visible)
        per_position = self.position_loss(x, pred)
        weight = hidden.to(per_position.dtype)
        return (per_position * weight).sum() / weight.sum().clamp_min(1.0)
