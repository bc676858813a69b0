"""The ViT family: patch or token embeddings with fixed sin-cos positions, then timm's blocks.
A token encoder: it drops hidden tokens and processes only the visible ones."""

from __future__ import annotations

from torch import Tensor, nn

from bench.core.spec import DataSpec
from bench.models.parts import LAYER_NORM, Encoder, init_weights, transformer_blocks
from bench.ops.masking import Visible, gather_tokens
from bench.ops.posembed import sincos_table


class ImageTokens(nn.Module):
    """Non-overlapping patches -> linear embedding + fixed 2-D sin-cos positions."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(spec.in_chans, dim, spec.patch_size, stride=spec.patch_size)
        self.register_buffer("pos", sincos_table(spec.grid, dim).unsqueeze(0), persistent=False)
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as MAE: like a Linear layer

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2) + self.pos


class TextTokens(nn.Module):
    """Token embedding + fixed 1-D sin-cos positions."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__()
        self.embed = nn.Embedding(spec.vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.register_buffer("pos", sincos_table(spec.grid, dim).unsqueeze(0), persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        return self.embed(ids) + self.pos[:, : ids.shape[1]]


EMBEDDINGS: dict[str, type[ImageTokens] | type[TextTokens]] = {"image": ImageTokens,
                                                              "text": TextTokens}


class TransformerEncoder(Encoder):
    """ViT over image patches or text tokens; sees only the tokens it is given."""

    kind = "token"

    def __init__(self, spec: DataSpec, dim: int, depth: int, heads: int):
        super().__init__()
        self.dim = dim
        self.tokens = EMBEDDINGS[spec.modality](spec, dim)
        self.blocks = transformer_blocks(dim, depth, heads)
        self.norm = LAYER_NORM(dim)
        self.blocks.apply(init_weights)

    def _run(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        attn_mask = None if pad_mask is None else pad_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x)

    def forward_visible(self, x: Tensor, visible: Visible) -> Tensor:
        return self._run(gather_tokens(self.tokens(x), visible.index), None)

    def forward_tokens(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        return self._run(self.tokens(x), pad_mask)

    def forward_layers(self, x: Tensor, pad_mask: Tensor | None = None) -> list[Tensor]:
        """Token features `[B, N, dim]` after each layer of the full input: the embedding
        (layer 0), then every block's output (before the final norm)."""
        attn_mask = None if pad_mask is None else pad_mask[:, None, None, :]
        out = [self.tokens(x)]
        for block in self.blocks:
            out.append(block(out[-1], attn_mask=attn_mask))
        return out


def build_vit(spec: DataSpec, *, dim: int, depth: int, heads: int) -> TransformerEncoder:
    """The `vit` family's builder (a preset's settings are its keyword arguments)."""
    return TransformerEncoder(spec, dim, depth, heads)
