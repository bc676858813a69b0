"""Encoders shared by every method, and the encoder registry (`vit-*` presets, CNNs).

An encoder turns the input into tokens on the method's grid. Token encoders (ViT) drop
hidden tokens and process only the visible ones; dense encoders (CNNs) need one contiguous
block of pixels and return its feature map at stride = patch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from timm.models.vision_transformer import Block
from torch import Tensor, nn

from bench.errors import IncompatibleError, UnknownEncoderError
from bench.masking import Visible, gather_tokens
from bench.models.posembed import sincos_table
from bench.registry import Registry
from bench.spec import DataSpec


class Encoder(nn.Module):
    """Interface of every encoder. `kind` says what a method may ask of it."""

    kind: ClassVar[str] = "token"
    dim: int

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


class TransformerEncoder(Encoder):
    """ViT over image patches or text tokens; sees only the tokens it is given."""

    kind = "token"

    def __init__(self, spec: DataSpec, dim: int, depth: int, heads: int):
        super().__init__()
        self.dim = dim
        self.tokens = ImageTokens(spec, dim) if spec.modality == "image" else TextTokens(spec, dim)
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


@dataclass(frozen=True)
class EncoderSpec:
    """A named encoder preset: `build(spec)` makes the module for a dataset."""

    name: str
    kind: str
    description: str
    build: Callable[[DataSpec], Encoder]
    modalities: frozenset[str] = frozenset({"image", "text"})


ENCODERS: Registry[EncoderSpec] = Registry("encoder", UnknownEncoderError)


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    return ENCODERS.add(spec.name, spec)


def _vit(name: str, dim: int, depth: int, heads: int, note: str) -> None:
    register_encoder(
        EncoderSpec(
            name,
            "token",
            f"ViT dim {dim}, depth {depth}, {heads} heads ({note})",
            lambda spec: TransformerEncoder(spec, dim, depth, heads),
        )
    )


_vit("vit-micro", 128, 4, 4, "CPU demo and tests")
_vit("vit-tiny", 192, 12, 3, "ViT-Ti")
_vit("vit-small", 384, 12, 6, "ViT-S")
_vit("vit-base", 768, 12, 12, "ViT-B")


def build_encoder(name: str, spec: DataSpec) -> Encoder:
    preset = ENCODERS.get(name)
    if spec.modality not in preset.modalities:
        usable = [n for n in ENCODERS.names() if spec.modality in ENCODERS.get(n).modalities]
        raise IncompatibleError(
            f"encoder {name!r} does not take {spec.modality} data; use one of: {', '.join(usable)}"
        )
    return preset.build(spec)


def encoders_of_kind(kinds: frozenset[str], modality: str) -> list[str]:
    return [
        n
        for n in ENCODERS.names()
        if ENCODERS.get(n).kind in kinds and modality in ENCODERS.get(n).modalities
    ]


__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderSpec",
    "TransformerEncoder",
    "build_encoder",
    "encoders_of_kind",
    "mean_pool",
    "register_encoder",
]

# CNN presets register themselves on import; last, because they subclass Encoder.
import bench.models.cnn  # noqa: E402, F401
