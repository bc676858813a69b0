"""Images <-> patch tokens, and the per-patch normalised pixel target of MAE."""

from __future__ import annotations

from torch import Tensor


def patchify(images: Tensor, patch: int) -> Tensor:
    """`[B, C, H, W]` -> `[B, (H/p)(W/p), p*p*C]`, row-major patches, pixels (p, p, C) inside."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not divisible into {patch}-pixel patches")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: Tensor, patch: int, grid: tuple[int, int], channels: int) -> Tensor:
    """Inverse of `patchify`."""
    b = tokens.shape[0]
    gh, gw = grid
    x = tokens.reshape(b, gh, gw, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * patch, gw * patch)


def normalized_patches(images: Tensor, patch: int, eps: float = 1e-6) -> Tensor:
    """Patch pixels standardised per patch (MAE's norm_pix_loss target)."""
    t = patchify(images, patch)
    mean = t.mean(dim=-1, keepdim=True)
    var = t.var(dim=-1, keepdim=True, unbiased=True)
    return (t - mean) / (var + eps).sqrt()
