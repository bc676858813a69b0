"""The shared decoders, one per `RunConfig.decoder`, each ending in the data's head:

- `transformer` (default): MAE's pre-norm ViT blocks over the whole grid. Global attention lets
  a hidden position read the visible tokens directly, whatever the fill put there.
- `conv`: FINOLA's local decoder, three 3x3 convolutions at the decoder width on the 2-D grid
  (kernel 3 along a text grid): a hidden position sees only its neighbours' filled features,
  so the decoder cannot repair a poor fill from far away.

Both add the fixed sin-cos positions of the grid first and end in a LayerNorm and the head, so
the two differ only in how positions mix.
"""

from __future__ import annotations

from torch import Tensor, nn

from bench.core.spec import DataSpec
from bench.models.heads import build_head
from bench.models.parts import LAYER_NORM, init_weights, transformer_blocks
from bench.ops.posembed import sincos_table

CONV_LAYERS = 3  # FINOLA's decoder: three 3x3 convolutions


class Decoder(nn.Module):
    """Transformer decoder over the full grid with fixed sin-cos positions, then a linear head."""

    def __init__(self, spec: DataSpec, dim: int, depth: int, heads: int):
        super().__init__()
        self.register_buffer("pos", sincos_table(spec.grid, dim).unsqueeze(0), persistent=False)
        self.blocks = transformer_blocks(dim, depth, heads)
        self.norm = LAYER_NORM(dim)
        self.head = build_head(spec, dim)
        self.apply(init_weights)

    def forward(self, filled: Tensor) -> Tensor:
        x = self.blocks(filled + self.pos)
        return self.head(self.norm(x))


class ConvDecoder(nn.Module):
    """FINOLA's decoder: `CONV_LAYERS` convolutions of kernel 3 (3x3 on an image grid, 3 on a
    text grid), stride 1, padding 1, at the decoder width with GELU between them, over the
    filled grid plus fixed sin-cos positions; then LayerNorm and the head, as `Decoder`."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()
        self.grid = spec.grid
        self.register_buffer("pos", sincos_table(spec.grid, dim).unsqueeze(0), persistent=False)
        conv = nn.Conv2d if len(spec.grid) == 2 else nn.Conv1d
        layers: list[nn.Module] = []
        for i in range(CONV_LAYERS):
            layers += [conv(dim, dim, 3, padding=1)] + ([nn.GELU()] if i < CONV_LAYERS - 1 else [])
        self.convs = nn.Sequential(*layers)
        self.norm = LAYER_NORM(dim)
        self.head = build_head(spec, dim)
        self.apply(init_weights)

    def forward(self, filled: Tensor) -> Tensor:
        b, n, d = filled.shape
        x = (filled + self.pos).transpose(1, 2).reshape(b, d, *self.grid)
        x = self.convs(x).reshape(b, d, n).transpose(1, 2)
        return self.head(self.norm(x))


def build_decoder(kind: str, spec: DataSpec, dim: int, depth: int, heads: int) -> nn.Module:
    """The decoder `kind` ("transformer": `depth` blocks of `heads` heads; "conv": FINOLA's)."""
    if kind == "transformer":
        return Decoder(spec, dim, depth, heads)
    if kind == "conv":
        return ConvDecoder(spec, dim)
    raise ValueError(f"decoder {kind!r}; known: conv, transformer")
