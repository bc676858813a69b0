"""QB-Heat (Chen et al., 2022, arXiv 2211.13228): the encoder sees one contiguous block and
the rest of the grid is extrapolated from it by the discretised steady heat (Laplace) system.

With column vectors the paper's unit steps are z(x+1, y) = (I + A) z(x, y) and
z(x, y+1) = (I + B) z(x, y) (x: column index, y: row index). Features here are ROW vectors
`[..., D]`, so one step to the right is `z @ (I + A).T` and one step to the left inverts the
forward difference to first order, `z @ (I - A).T` (likewise B downwards / upwards). This is
the paper's rule transposed, the same convention as `nn.Linear` (`x @ W.T`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bench.errors import ConfigError
from bench.masking import Visible, contiguous_block_shape, grid_size
from methods.base import MaskingMethod, MethodOptions, register_method

Order = Literal["xy", "yx", "avg"]


def _starts(start: int | Tensor, n: int, room: int, device: torch.device) -> Tensor:
    """Per-sample offsets `[n]` from an int (checked against `room`) or an `[n]` tensor."""
    if isinstance(start, Tensor):
        return start.to(device=device, dtype=torch.long).reshape(n)
    if not 0 <= start <= room:
        raise ValueError(f"start {start} puts the span outside the grid (valid: 0..{room})")
    return torch.full((n,), start, dtype=torch.long, device=device)


def _extend(span: Tensor, A: Tensor, length: int, start: Tensor) -> Tensor:
    """The 1-D rule along dim 1 of `span [N, S, *lines, D]` placed at `start [N]` ->
    `[N, length, *lines, D]`; every index of the middle dims is a line of its own.

    Vectorised over per-sample starts with exactly the products each line needs: a line has
    `room = length - S` positions to fill, so loop step j is its left step j + 1 while
    j < start and its right step j - start + 1 after (the chain restarts from the right edge
    at j == start). Both directions share one product, z @ (I -+ A).T = z -+ z @ A.T, so
    each step is one GEMM over all lines whatever their side, and one indexing op places the
    steps. (Precomputed powers of I + A and I - A would need both sides for every line:
    twice the GEMM work for static shapes.)
    """
    n, s = span.shape[:2]
    room = length - s
    if room < 0:
        raise ValueError(f"span of {s} does not fit length {length}")
    at = start.view(n, *[1] * (span.dim() - 2))  # broadcasts over lines and features
    signs = torch.where(at > torch.arange(room, device=span.device), -1.0, 1.0).to(span.dtype)
    z, right_edge, steps = span[:, 0], span[:, -1], []
    for j in range(room):
        z = torch.where(at == j, right_edge, z)
        z = torch.addcmul(z, signs[..., j : j + 1], z @ A.T)
        steps.append(z.unsqueeze(1))
    candidates = torch.cat([*steps, span], dim=1)  # [N, room + S, *lines, D]
    t = torch.arange(length, device=span.device)
    start = start.unsqueeze(1)
    index = torch.where(
        t < start, start - 1 - t, torch.where(t < start + s, room + t - start, t - s)
    )
    return candidates[torch.arange(n, device=span.device).unsqueeze(1), index]


def propagate_1d(span: Tensor, A: Tensor, length: int, start: int | Tensor) -> Tensor:
    """Extend `span [N, S, D]` placed at `start` (int or `[N]`) to `[N, length, D]`: right of
    the span z(t+1) = z(t) @ (I + A).T, left of it z(t-1) = z(t) @ (I - A).T; the span
    itself is copied unchanged."""
    return _extend(
        span, A, length, _starts(start, span.shape[0], length - span.shape[1], span.device)
    )


def propagate(
    block: Tensor,
    A: Tensor,
    B: Tensor,
    grid: tuple[int, int],
    origin: tuple[int, int] | Tensor,
    order: Order = "xy",
) -> Tensor:
    """Extrapolate `block [N, hb, wb, D]` at `origin` (top, left) to the grid: `[N, h, w, D]`.

    `order="xy"`: first along x within the block's rows with A (right: I + A, left: I - A),
    then along y over the full width with B (down: I + B, up: I - B); `"yx"` swaps the axes;
    `"avg"` is the mean of both. The block comes out unchanged. `origin` may be ints or an
    `[N, 2]` tensor of per-sample origins.
    """
    n, hb, wb, _ = block.shape
    h, w = grid
    if isinstance(origin, Tensor):
        top_in, left_in = origin[:, 0], origin[:, 1]
    else:
        top_in, left_in = origin
    top = _starts(top_in, n, h - hb, block.device)
    left = _starts(left_in, n, w - wb, block.device)

    def xy() -> Tensor:  # rows of the block along x, then every column along y
        return _extend(_extend(block.transpose(1, 2), A, w, left).transpose(1, 2), B, h, top)

    def yx() -> Tensor:
        return _extend(_extend(block, B, h, top).transpose(1, 2), A, w, left).transpose(1, 2)

    if order == "xy":
        return xy()
    if order == "yx":
        return yx()
    if order == "avg":
        return (xy() + yx()) / 2
    raise ValueError(f"order {order!r}; known: avg, xy, yx")


def parse_param(text: str) -> tuple[str, int | None]:
    """`"full"` | `"diag"` | `"lowrank:R"` -> (kind, rank); anything else raises ValueError."""
    if text in ("full", "diag"):
        return text, None
    kind, _, rank = text.partition(":")
    if kind == "lowrank" and rank.isdigit() and int(rank) > 0:
        return kind, int(rank)
    raise ValueError(f"param={text!r}: expected full, diag or lowrank:R with R a positive integer")


class GridOperator(nn.Module):
    """One learned D x D operator (A or B) under a parameterisation.

    It starts at exactly zero, so I + A = I: at init the fill copies the nearest block edge
    (bounded for any grid size, the powers all being I) and training grows A from there; A
    enters linearly, so zero is not a saddle. For `lowrank` (A = U V^T) V is zero and U is
    random with std 1/sqrt(R), as in LoRA, so V gets gradient at once and an Adam step on V
    moves A about as much as one on a full matrix would.
    """

    def __init__(self, dim: int, kind: str, rank: int | None):
        super().__init__()
        self.kind = kind
        if kind == "full":
            self.weight = nn.Parameter(torch.zeros(dim, dim))
        elif kind == "diag":
            self.weight = nn.Parameter(torch.zeros(dim))
        else:
            self.u = nn.Parameter(torch.randn(dim, rank) / rank**0.5)
            self.v = nn.Parameter(torch.zeros(dim, rank))

    def forward(self) -> Tensor:
        if self.kind == "full":
            return self.weight
        if self.kind == "diag":
            return torch.diag(self.weight)
        return self.u @ self.v.T


@dataclass
class QBHeatOptions(MethodOptions):
    position: Literal["random", "center", "quadrant"] = "random"
    order: Order = "xy"
    param: str = "full"  # full | diag | lowrank:R

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_param(self.param)


@register_method("qbheat")
class QBHeat(MaskingMethod):
    """One contiguous block; hidden positions extrapolated by learned heat operators A, B."""

    modalities = frozenset({"image", "text"})
    encoder_kinds = frozenset({"token", "dense"})
    Options = QBHeatOptions

    def __init__(self, options: QBHeatOptions, dim: int, modality: str):
        super().__init__(options, dim, modality)
        kind, rank = parse_param(options.param)
        if rank is not None and rank >= dim:
            raise ConfigError(f"qbheat.param={options.param}: rank must be below the width {dim}")
        self.A = GridOperator(dim, kind, rank)
        # Text is 1-D: only the x operator exists (no unused parameters).
        self.B = GridOperator(dim, kind, rank) if modality == "image" else None

    def layout(self) -> tuple[str, str]:
        return "block", self.options.position

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        if visible.origin is None or visible.shape is None:
            raise ValueError("qbheat extrapolates from one contiguous block; got no block geometry")
        b, _, d = latent.shape
        block = latent.reshape(b, *visible.shape, d)
        A = self.A().to(latent.dtype)
        if len(grid) == 1:
            out = propagate_1d(block, A, grid[0], visible.origin[:, 0])
        else:
            B = self.B().to(latent.dtype)
            out = propagate(block, A, B, grid, visible.origin, self.options.order)
        return out.reshape(b, grid_size(grid), d)

    def describe(self, grid: tuple[int, ...]) -> str:
        o = self.options
        shape = contiguous_block_shape(grid, o.mask_ratio)
        part = f"{shape[0]}-token span" if len(shape) == 1 else f"{shape[0]}x{shape[1]} block"
        return (
            f"one contiguous {part} ({o.position}); the rest extrapolated from it by "
            f"learned heat operators (order {o.order}, {o.param})"
        )
