"""What every encoder and decoder is made of: the encoder interface, mean pooling, MAE's
LayerNorm, timm's ViT blocks and MAE's initialisation."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from timm.models.vision_transformer import Block
from torch import Tensor, nn

from bench.ops.masking import Visible


class Encoder(nn.Module):
    """Interface of every encoder. `kind` says what a method may ask of it."""

    kind: ClassVar[str] = "token"
    dim: int

    @property
    def kinds(self) -> frozenset[str]:
        """The encoder kinds it serves (bench.core.cards.KIND_NAMES): its `kind` by default."""
        return frozenset({self.kind})

    def forward_visible(self, x: Tensor, visible: Visible) -> Tensor:
        """Features `[B, K, dim]` of the visible positions, in `visible.index` order."""
        raise NotImplementedError

    def forward_tokens(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Features `[B, N, dim]` of every position of the full input (evaluation)."""
        raise NotImplementedError

    def pooled(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Mean of the token features over real (non-padding) positions: `[B, dim]`."""
        return mean_pool(self.forward_tokens(x, pad_mask), pad_mask)


def mean_pool(tokens: Tensor, pad_mask: Tensor | None = None) -> Tensor:
    """`[B, N, dim]` -> `[B, dim]`: the mean over real positions (`pad_mask` True = real)."""
    if pad_mask is None:
        return tokens.mean(dim=1)
    w = pad_mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


LAYER_NORM = partial(nn.LayerNorm, eps=1e-6)  # MAE's; stated, since timm's default changed


def transformer_blocks(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> nn.Sequential:
    """timm's pre-norm ViT blocks (fused SDPA attention where available), with LayerNorm eps
    1e-6 given explicitly (timm's own default has moved between releases). Padding masks
    (`attn_mask`) reach the attention from timm 1.0.26 on: pyproject pins that floor."""
    blocks = [Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=LAYER_NORM)
              for _ in range(depth)]
    return nn.Sequential(*blocks)


def init_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
