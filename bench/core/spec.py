"""Plain data types every layer shares, importing no torch: what a model needs to know about
the data (`DataSpec`) and the size of a token grid."""

from __future__ import annotations

from dataclasses import dataclass


def grid_size(grid: tuple[int, ...]) -> int:
    """Positions on a token grid: h * w for images, L for text."""
    n = 1
    for g in grid:
        n *= g
    return n


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

