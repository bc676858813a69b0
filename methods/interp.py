"""Interpolation: hidden positions get a linear interpolation of the nearest visible features,
the parameter-free counterpart of QB-Heat's learned extrapolation (1-D for text; images use
the row/column rule of `interpolate_2d`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bench.masking import Visible, gather_tokens, grid_size, scatter_tokens, visible_for_ratio
from methods.base import MaskingMethod, MethodOptions, register_method


def _neighbours(visible: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For `visible [M, L]`: the nearest visible index at-or-left and at-or-right of every
    position (found with a running max / min, no loop), and whether both sides exist.

    A missing side is replaced by the other one (so beyond the ends both are the nearest
    visible index); in a line with nothing visible both are the position itself.
    """
    m, length = visible.shape
    pos = torch.arange(length, device=visible.device).expand(m, length)
    left = torch.where(visible, pos, -1).cummax(dim=1).values
    right = torch.where(visible, pos, length).flip(1).cummin(dim=1).values.flip(1)
    has_left, has_right = left >= 0, right < length
    left_i = torch.where(has_left, left, torch.where(has_right, right, pos))
    right_i = torch.where(has_right, right, left_i)
    return left_i, right_i, has_left & has_right


def _linear(z: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
    """Along dim 1 of `z [M, L, D]`: linear between the two nearest visible neighbours, copy of
    the nearest one where only one side exists; plus the mask of bracketed positions.
    A visible position is its own left and right neighbour, so it comes out unchanged."""
    left, right, bracketed = _neighbours(visible)
    pos = torch.arange(z.shape[1], device=z.device)
    t = (pos - left).to(z.dtype) / (right - left).clamp_min(1).to(z.dtype)
    t = torch.where(right > left, t, 0.0).unsqueeze(-1)
    return gather_tokens(z, left) * (1 - t) + gather_tokens(z, right) * t, bracketed


def interpolate_1d(z: Tensor, visible: Tensor) -> Tensor:
    """`z [N, L, D]`, `visible [N, L]` -> `[N, L, D]`: hidden positions linear between the
    nearest visible neighbours on both sides, a copy of the nearest one beyond the ends.
    Visible positions are unchanged (a sample with nothing visible is returned as is)."""
    return _linear(z, visible)[0]


def _nearest_visible(visible: Tensor, grid: tuple[int, int]) -> Tensor:
    """`[N, P]` flat index of the visible position nearest to each position (Euclidean on
    the grid; ties: lowest flat index), for `visible [N, P]` with at least one True per row.

    Exact integer keys `d^2 * P + index` make one argmin resolve distance and ties at once.
    """
    h, w = grid
    p = h * w
    flat = torch.arange(p, device=visible.device)
    r, c = flat // w, flat % w
    d2 = (r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2
    key = (d2 * p + flat[None]).to(torch.int32)  # [P, P]; < 2^31 for grids up to 180 x 180
    hidden_key = torch.iinfo(torch.int32).max
    return torch.where(visible[:, None, :], key, hidden_key).argmin(dim=-1)


def interpolate_2d(z: Tensor, visible: Tensor) -> Tensor:
    """`z [N, h, w, D]`, `visible [N, h, w]` -> `[N, h, w, D]`.

    A hidden position's row estimate exists when its row has visible tokens on both sides
    (linear between the nearest two); likewise the column estimate. Both: their mean; one:
    that one; none: the nearest visible token (Euclidean grid distance, ties: lowest flat
    index). Visible positions are unchanged, and a field affine in (x, y) is reproduced
    exactly wherever a position is bracketed. Needs a visible position in every sample.
    """
    n, h, w, d = z.shape
    row, row_ok = _linear(z.reshape(n * h, w, d), visible.reshape(n * h, w))
    col, col_ok = _linear(
        z.transpose(1, 2).reshape(n * w, h, d), visible.transpose(1, 2).reshape(n * w, h)
    )
    row, row_ok = row.reshape(n, h, w, d), row_ok.reshape(n, h, w, 1)
    col = col.reshape(n, w, h, d).transpose(1, 2)
    col_ok = col_ok.reshape(n, w, h).transpose(1, 2).unsqueeze(-1)
    nearest = gather_tokens(
        z.reshape(n, h * w, d), _nearest_visible(visible.reshape(n, -1), (h, w))
    )
    out = torch.where(col_ok, col, nearest.reshape(n, h, w, d))
    out = torch.where(row_ok, row, out)
    # Visible positions are bracketed both ways with row == col == z, so (z + z) / 2 == z.
    return torch.where(row_ok & col_ok, (row + col) / 2, out)


@dataclass
class InterpOptions(MethodOptions):
    # "block" shows QB-Heat's contiguous block instead: then nothing outside the block is
    # bracketed and the fill extrapolates (the mask-shape half of the 2 x 2 ablation).
    visible: Literal["random", "block"] = "random"
    block_position: Literal["random", "center", "quadrant"] = "random"


@register_method("interp")
class Interp(MaskingMethod):
    """Random visible subset; hidden positions linearly interpolated from visible neighbours."""

    modalities = frozenset({"image", "text"})
    Options = InterpOptions

    @property
    def extrapolates(self) -> bool:
        """True when the visible part is one block, so hidden positions are never bracketed."""
        return self.options.visible == "block"

    def choose_visible(self, batch: int, grid: tuple[int, ...], generator) -> Visible:
        o = self.options
        return visible_for_ratio(batch, grid, o.mask_ratio, o.visible, o.block_position, generator)

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        b, _, d = latent.shape
        n = grid_size(grid)
        dense = scatter_tokens(latent.new_zeros(b, n, d), visible.index, latent)
        mask = visible.mask(n)
        if len(grid) == 1:
            return interpolate_1d(dense, mask)
        return interpolate_2d(dense.reshape(b, *grid, d), mask.reshape(b, *grid)).reshape(b, n, d)

    def describe(self, grid: tuple[int, ...]) -> str:
        if self.extrapolates:
            return (
                "one contiguous block (as QB-Heat); nothing outside it is bracketed, so the fill "
                "EXTRAPOLATES: each hidden position copies its nearest block token "
                "(QB-Heat with A = B = 0)"
            )
        how = "linear between visible neighbours" + (
            "" if len(grid) == 1 else " along the row and/or column, else the nearest visible"
        )
        return f"random visible subset ({1 - self.options.mask_ratio:.0%}); hidden: {how}"
