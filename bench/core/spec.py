"""Plain data types every layer shares, importing no torch: what a model needs to know about
the data (`DataSpec`), the size of a token grid and how many of its positions a mask ratio
leaves visible (planning checks it without torch; bench.ops.masking draws the masks)."""

from __future__ import annotations

from dataclasses import dataclass


def grid_size(grid: tuple[int, ...]) -> int:
    """Positions on a token grid: h * w for images, L for text."""
    n = 1
    for g in grid:
        n *= g
    return n


def contiguous_block_shape(grid: tuple[int, ...], mask_ratio: float) -> tuple[int, ...]:
    """Block whose area is about (1 - ratio) of the grid, same aspect: each side
    `round(g * (1 - ratio) ** (1 / ndim))`, at least 1. 0.75 on (8, 8) -> (4, 4)."""
    scale = (1 - mask_ratio) ** (1 / len(grid))
    return tuple(min(g, max(1, round(g * scale))) for g in grid)


def visible_count(grid: tuple[int, ...], mask_ratio: float) -> int:
    """How many positions the encoder sees at `mask_ratio`: the area of the contiguous block
    (`contiguous_block_shape`), for EVERY layout, so a random subset and a block show the encoder
    exactly as many tokens (same encoder compute, same number of scored positions). Where the
    ratio divides the grid evenly this is MAE's floor(n * (1 - ratio)) (8x8 or 14x14 at 0.75:
    16 and 49); elsewhere the block's rounding decides (7x7 at 0.75: 16 of 49)."""
    n = grid_size(grid)
    keep = grid_size(contiguous_block_shape(grid, mask_ratio))
    if keep >= n:
        raise ValueError(f"mask_ratio {mask_ratio} hides nothing on a {grid} grid")
    return keep


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data: modality, token grid and target size."""

    modality: str  # "image" | "text"
    grid: tuple[int, ...]  # (h, w) token grid for images, (L,) for text
    patch_size: int = 1
    in_chans: int = 1
    vocab_size: int = 0
    pad_id: int = 0

    @property
    def num_tokens(self) -> int:
        return grid_size(self.grid)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.grid[0] * self.patch_size, self.grid[1] * self.patch_size)

