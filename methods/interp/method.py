"""Interpolation's fill: linear interpolation of the visible features. Text: 1-D, between the
nearest visible neighbours (`interpolate_1d`). Images: `rule=linear` (default), barycentric
over a Delaunay triangulation of the visible positions, the nearest hull point outside their
hull (methods/interp/triangulation.py, weights computed with the mask); `rule=axes`, the
row/column rule of `interpolate_2d`. The card: __init__.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from bench.ops.masking import Visible, gather_tokens, grid_size, nearest_visible, scatter_tokens
from methods.base import MaskingMethod, register_method
from methods.interp import CARD
from methods.interp.triangulation import INSIDE, OUTSIDE, linear_weights

DIAGNOSTIC_MASKS = 512  # masks the rule shares are counted over (seeded: the same every run)


def _line_weights(visible: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Linear interpolation along the last dim of `visible [M, L]`, at index level.

    Returns `left`, `right` (nearest visible index at-or-left / at-or-right, found with a
    running max / min, no loop), the weight `t` of `right`, and whether both sides exist. A
    missing side is replaced by the other one (t = 0: beyond the ends the nearest visible is
    copied); a visible position is its own neighbour; a line with nothing visible points at
    itself.
    """
    m, length = visible.shape
    pos = torch.arange(length, device=visible.device).expand(m, length)
    left = torch.where(visible, pos, -1).cummax(dim=1).values
    right = torch.where(visible, pos, length).flip(1).cummin(dim=1).values.flip(1)
    has_left, has_right = left >= 0, right < length
    left_i = torch.where(has_left, left, torch.where(has_right, right, pos))
    right_i = torch.where(has_right, right, left_i)
    t = (pos - left_i).to(dtype) / (right_i - left_i).clamp_min(1).to(dtype)
    return left_i, right_i, torch.where(right_i > left_i, t, 0.0), has_left & has_right


def interpolate_1d(z: Tensor, visible: Tensor) -> Tensor:
    """`z [N, L, D]`, `visible [N, L]` -> `[N, L, D]`: hidden positions linear between the
    nearest visible neighbours on both sides, a copy of the nearest one beyond the ends.
    Visible positions are unchanged (a sample with nothing visible is returned as is)."""
    left, right, t, _ = _line_weights(visible, z.dtype)
    return torch.lerp(gather_tokens(z, left), gather_tokens(z, right), t.unsqueeze(-1))


def interpolation_matrix(visible: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """`[N, P, P]` (P = h * w) weights of the 2-D rule for `visible [N, h, w]`: row p holds
    how much output position p takes from each flat position (see `interpolate_2d`).

    The rule is linear in the features, so it is built once at index level (the 1-D rule
    along rows and along columns, then the mix) and applied as one batched matmul, which
    costs less than gathering and blending four neighbour fields of width D.
    """
    n, h, w = visible.shape
    rl, rr, rt, row_ok = (x.view(n, h, w) for x in _line_weights(visible.reshape(n * h, w), dtype))
    cl, cr, ct, col_ok = (
        x.view(n, w, h).transpose(1, 2)
        for x in _line_weights(visible.transpose(1, 2).reshape(n * w, h), dtype)
    )
    rows = torch.arange(h, device=visible.device).view(h, 1) * w
    cols = torch.arange(w, device=visible.device)
    # Both estimates: half each; one: all of it; none: the nearest visible position.
    row_share = row_ok * torch.where(col_ok, 0.5, 1.0).to(dtype)
    col_share = col_ok * torch.where(row_ok, 0.5, 1.0).to(dtype)
    nearest = nearest_visible(visible.reshape(n, h * w), (h, w)).view(n, h, w)
    index = torch.stack([rows + rl, rows + rr, cl * w + cols, cr * w + cols, nearest], dim=-1)
    weight = torch.stack(
        [
            row_share * (1 - rt),
            row_share * rt,
            col_share * (1 - ct),
            col_share * ct,
            (~(row_ok | col_ok)).to(dtype),
        ],
        dim=-1,
    )
    out = torch.zeros(n, h * w, h * w, dtype=dtype, device=visible.device)
    return out.scatter_add_(2, index.view(n, h * w, 5), weight.view(n, h * w, 5))


def interpolate_2d(z: Tensor, visible: Tensor) -> Tensor:
    """`z [N, h, w, D]`, `visible [N, h, w]` -> `[N, h, w, D]`.

    A hidden position's row estimate exists when its row has visible tokens on both sides
    (linear between the nearest two); likewise the column estimate. Both: their mean; one:
    that one; none: the nearest visible token (Euclidean grid distance, ties: lowest flat
    index). Visible positions are unchanged (weight 1 on themselves), and a field affine in
    (x, y) is reproduced exactly wherever a position is bracketed. Needs a visible position
    in every sample.
    """
    n, h, w, d = z.shape
    weights = interpolation_matrix(visible, z.dtype)
    return (weights @ z.reshape(n, h * w, d)).view(n, h, w, d)


def axes_rules(visible: Tensor) -> Tensor:
    """`[N, h, w]` what `interpolate_2d` did at each position of `visible [N, h, w]`: 0
    visible, 1 the row and the column estimate, 2 one of them, 3 the nearest visible."""
    n, h, w = visible.shape
    row_ok = _line_weights(visible.reshape(n * h, w), torch.float32)[3].view(n, h, w)
    col_ok = _line_weights(visible.transpose(1, 2).reshape(n * w, h), torch.float32)[3]
    col_ok = col_ok.view(n, w, h).transpose(1, 2)
    rule = torch.where(row_ok & col_ok, 1, torch.where(row_ok | col_ok, 2, 3))
    return torch.where(visible, 0, rule)


@register_method(CARD)
class Interp(MaskingMethod):
    """Random visible subset; hidden positions linearly interpolated from visible neighbours."""

    grid: tuple[int, ...] | None = None  # the last grid masks were drawn on (diagnostics)

    @property
    def extrapolates(self) -> bool:
        """True when the visible part is one block, so hidden positions are never bracketed."""
        return self.options.visible == "block"

    def choose_visible(self, batch: int, grid: tuple[int, ...], generator) -> Visible:
        """The layout's positions and, for images under `rule=linear`, the fill's weights:
        computed on the host per mask (scipy's Delaunay), here rather than in `fill`, so a
        compiled step stays one graph."""
        visible = super().choose_visible(batch, grid, generator)
        self.grid = tuple(grid)
        if len(grid) != 2 or self.options.rule != "linear":
            return visible
        mask = visible.mask(grid_size(grid)).view(batch, *grid).cpu().numpy()
        weights = torch.from_numpy(linear_weights(mask)[0]).to(visible.index.device)
        return dataclasses.replace(visible, fill_weights=weights)

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        b, _, d = latent.shape
        n = grid_size(grid)
        mask = visible.mask(n)
        if len(grid) == 1:
            dense = scatter_tokens(latent.new_zeros(b, n, d), visible.index, latent)
            return interpolate_1d(dense, mask)
        if self.options.rule == "linear":
            weights = visible.fill_weights
            if weights is None:  # a Visible made elsewhere: the weights, eagerly
                weights = torch.from_numpy(
                    linear_weights(mask.view(b, *grid).cpu().numpy())[0]).to(latent.device)
            weights = weights.to(latent.dtype)
        else:  # the axes rule's weights on the visible tokens only, applied to `latent`
            weights = interpolation_matrix(mask.view(b, *grid), latent.dtype)
            weights = weights.gather(2, visible.index.unsqueeze(1).expand(-1, n, -1))
        # Written back so visible features stay bit-exact under reduced-precision matmuls (TF32).
        return scatter_tokens(weights @ latent, visible.index, latent)

    def diagnostics(self) -> dict[str, float]:
        """The share of hidden positions each rule fills, over DIAGNOSTIC_MASKS masks drawn as
        the run draws them (seeded), on the grid the run uses."""
        if self.grid is None:
            return {}
        grid = self.grid
        visible = super().choose_visible(DIAGNOSTIC_MASKS, grid,
                                         torch.Generator().manual_seed(0))
        mask = visible.mask(grid_size(grid)).cpu()
        hidden = float((~mask).sum())
        if len(grid) == 1:
            _, _, _, bracketed = _line_weights(mask, torch.float32)
            inside = float((bracketed & ~mask).sum())
            return {"interp_share_inside": inside / hidden,
                    "interp_share_outside": 1 - inside / hidden}
        if self.options.rule == "linear":
            code = linear_weights(mask.view(-1, *grid).numpy())[1]
            return {"interp_share_inside": float(np.sum(code == INSIDE)) / hidden,
                    "interp_share_outside": float(np.sum(code == OUTSIDE)) / hidden}
        rule = axes_rules(mask.view(-1, *grid))
        return {name: float((rule == k).sum()) / hidden for k, name in (
            (1, "interp_share_both_axes"), (2, "interp_share_one_axis"),
            (3, "interp_share_nearest"))}

    def describe(self, grid: tuple[int, ...]) -> str:
        if self.extrapolates:
            return (
                "one contiguous block (as QB-Heat); nothing outside it is bracketed, so the fill "
                "EXTRAPOLATES: each hidden position copies its nearest block token "
                "(QB-Heat with A = B = 0)"
            )
        if len(grid) == 1:
            how = "linear between visible neighbours, the nearest beyond the ends"
        elif self.options.rule == "linear":
            how = ("barycentric over a Delaunay triangulation of the visible positions, the "
                   "nearest point of their hull outside it")
        else:
            how = "linear along the row and/or column, else the nearest visible"
        return f"random visible subset ({1 - self.options.mask_ratio:.0%}); hidden: {how}"
