"""Fixed sin-cos position tables (MAE's formulation), 1-D for text and 2-D for images."""

from __future__ import annotations

import torch
from torch import Tensor


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """`[len(positions), dim]`: first half sin, second half cos, frequencies 1/10000^(2i/dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(h: int, w: int, dim: int) -> Tensor:
    """`[h * w, dim]` in row-major order: half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=1)


def sincos_table(grid: tuple[int, ...], dim: int) -> Tensor:
    if len(grid) == 1:
        return sincos_1d(torch.arange(grid[0]), dim)
    if len(grid) == 2:
        return sincos_2d(grid[0], grid[1], dim)
    raise ValueError(f"grid must be 1-D or 2-D, got {grid}")
