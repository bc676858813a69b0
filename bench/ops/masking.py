"""Small typed building blocks for choosing visible positions (shared by every method)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.core.spec import contiguous_block_shape, grid_size, visible_count  # noqa: F401 (re-exported)


@dataclass
class Visible:
    """Which grid positions the encoder sees.

    `index` holds sorted flat positions `[B, K]`. Contiguous strategies also give the block
    geometry: `origin` `[B, ndim]` (top-left corner, per sample) and `shape` (block extent),
    so a fill rule can work on the block as a dense array instead of a token list. A linear
    fill whose weights depend on the mask alone may give them here, `fill_weights [B, N, K]`
    (what each position takes from each visible one), computed when the mask is drawn: then
    no data-dependent host work happens inside a compiled step.
    """

    index: Tensor
    origin: Tensor | None = None
    shape: tuple[int, ...] | None = None
    fill_weights: Tensor | None = None

    @property
    def batch(self) -> int:
        return self.index.shape[0]

    @property
    def count(self) -> int:
        return self.index.shape[1]

    def mask(self, n: int) -> Tensor:
        """Bool `[B, N]`: True at visible positions."""
        out = torch.zeros(self.batch, n, dtype=torch.bool, device=self.index.device)
        return out.scatter_(1, self.index, True)

    def to(self, device: torch.device | str) -> Visible:
        origin = None if self.origin is None else self.origin.to(device)
        weights = None if self.fill_weights is None else self.fill_weights.to(device)
        return Visible(self.index.to(device), origin, self.shape, weights)


def random_visible(batch: int, n: int, keep: int, generator: torch.Generator) -> Visible:
    """Per-sample uniform random subset of `keep` of `n` positions (MAE's argsort-of-noise rule)."""
    if not 0 < keep <= n:
        raise ValueError(f"keep must be in 1..{n}, got {keep}")
    noise = torch.rand(batch, n, generator=generator, device=generator.device)
    index = noise.argsort(dim=1)[:, :keep].sort(dim=1).values
    return Visible(index)


def block_visible(
    batch: int,
    grid: tuple[int, ...],
    shape: tuple[int, ...],
    position: str,
    generator: torch.Generator,
) -> Visible:
    """One contiguous block of `shape` per sample on `grid` (any number of dims).

    `position`: `random` (uniform over valid origins), `center` (origin `(g - s) // 2` per
    axis), or `quadrant`: the block sits in one of the grid's 2^ndim corners, drawn uniformly
    per sample (each axis independently at origin 0 or g - s), so it touches two edges and
    the hidden part is the rest of the grid. Where each side is half the grid (even grids at
    mask ratio 0.75) that is one of the four quarters; on odd grids the block is
    `contiguous_block_shape`'s rounding (7x7 at 0.75: 4x4, round(3.5) = 4), still flush with
    its corner, and the two placements along an axis overlap by 2s - g rows or columns (one,
    on 7x7). For text (one axis) it is the span at the start or at the end.
    """
    if len(shape) != len(grid) or any(s < 1 or s > g for s, g in zip(shape, grid)):
        raise ValueError(f"block {shape} does not fit grid {grid}")
    device = generator.device
    # Small constants go host -> device without blocking: a blocking copy would make the
    # host wait for the GPU's queue at every step.
    room = torch.tensor([g - s for g, s in zip(grid, shape)]).to(device, non_blocking=True)
    if position == "random":
        u = torch.rand(batch, len(grid), generator=generator, device=device)
        origin = (u * (room + 1)).floor().long().minimum(room)
    elif position == "center":
        origin = (room // 2).expand(batch, -1).clone()
    elif position == "quadrant":
        corner = torch.randint(0, 2, (batch, len(grid)), generator=generator, device=device)
        origin = corner * room
    else:
        raise ValueError(f"block position {position!r}; known: center, quadrant, random")
    # Flat indices of the block: offsets inside the block plus the per-sample origin.
    axes = torch.meshgrid(*[torch.arange(s, device=device) for s in shape], indexing="ij")
    coords = torch.stack([a.reshape(-1) for a in axes], dim=-1)  # [K, ndim]
    pos = coords.unsqueeze(0) + origin.unsqueeze(1)  # [B, K, ndim]
    strides = torch.tensor([grid_size(grid[i + 1 :]) for i in range(len(grid))]).to(
        device, non_blocking=True
    )
    index = (pos * strides).sum(-1)  # row-major order inside the block is already sorted
    return Visible(index, origin=origin, shape=tuple(shape))


def grid_coords(grid: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """`[N, ndim]` integer coordinates of every position of `grid`, in flat (row-major) order."""
    axes = torch.meshgrid(*[torch.arange(g, device=device) for g in grid], indexing="ij")
    return torch.stack([a.reshape(-1) for a in axes], dim=-1)


def nearest_visible(visible: Tensor, grid: tuple[int, ...]) -> Tensor:
    """`[B, N]` flat index of the visible position nearest to each position (Euclidean on
    the grid; ties: lowest flat index), for `visible [B, N]` with at least one True per row.

    Exact integer keys `d^2 * N + index` make one argmin resolve distance and ties at once.
    """
    n = grid_size(grid)
    coords = grid_coords(grid, visible.device)
    d2 = (coords[:, None] - coords[None]).square().sum(-1)
    flat = torch.arange(n, device=visible.device)
    key = (d2 * n + flat[None]).to(torch.int32)  # [N, N]; < 2^31 for grids up to 180 x 180
    hidden_key = torch.iinfo(torch.int32).max
    return torch.where(visible[:, None, :], key, hidden_key).argmin(dim=-1)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """`x[b, index[b, k]]` for `x: [B, N, D]`, `index: [B, K]` -> `[B, K, D]`."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(base: Tensor, index: Tensor, values: Tensor) -> Tensor:
    """Copy of `base [B, N, D]` with `values [B, K, D]` written at `index [B, K]`."""
    return base.scatter(1, index.unsqueeze(-1).expand(-1, -1, base.shape[-1]), values)


def mean_visible_fill(latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
    """A constant fill: every hidden position gets its sample's mean visible feature, the
    visible ones stay (`[B, K, D]` -> `[B, N, D]`). What a fill that learned nothing about
    position gives: the baseline a fill's contribution is measured against."""
    base = latent.mean(dim=1, keepdim=True).expand(-1, grid_size(grid), -1)
    return scatter_tokens(base, visible.index, latent)


def visible_for_ratio(
    batch: int,
    grid: tuple[int, ...],
    mask_ratio: float,
    layout: str,
    position: str,
    generator: torch.Generator,
) -> Visible:
    """What the encoder sees when `mask_ratio` of `grid` is hidden, one rule for every method.

    `layout="random"`: MAE's random subset of `visible_count` positions; `"block"`: QB-Heat's
    one contiguous block of `contiguous_block_shape`, placed by `position` (see
    `block_visible`). Both show the encoder `visible_count(grid, mask_ratio)` positions.
    """
    if layout == "block":
        visible_count(grid, mask_ratio)  # refuses a ratio that hides nothing
        return block_visible(batch, grid, contiguous_block_shape(grid, mask_ratio), position,
                             generator)
    if layout == "random":
        return random_visible(batch, grid_size(grid), visible_count(grid, mask_ratio), generator)
    raise ValueError(f"visible layout {layout!r}; known: block, random")
