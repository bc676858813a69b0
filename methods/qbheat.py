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
from bench.masking import (
    Visible,
    contiguous_block_shape,
    gather_tokens,
    grid_size,
    visible_for_ratio,
)
from methods.base import MaskingMethod, MethodOptions, register_method

Order = Literal["xy", "yx", "avg"]


def matrix_powers(step: Tensor, count: int) -> Tensor:
    """`[count + 1, D, D]`: step^0 .. step^count by doubling, so ~log2(count) batched matmuls
    instead of `count` sequential ones."""
    powers = torch.stack([torch.eye(step.shape[0], dtype=step.dtype, device=step.device), step])
    while powers.shape[0] <= count:
        # step^1..step^m times step^m gives step^(m+1)..step^(2m).
        powers = torch.cat([powers, powers[1:] @ powers[-1]])
    return powers[: count + 1]


def _starts(start: int | Tensor, n: int, room: int, device: torch.device) -> Tensor:
    """Per-sample offsets `[n]` from an int (checked against `room`) or an `[n]` tensor."""
    if isinstance(start, Tensor):
        return start.to(device=device, dtype=torch.long).reshape(n)
    if not 0 <= start <= room:
        raise ValueError(f"start {start} puts the span outside the grid (valid: 0..{room})")
    return torch.full((n,), start, dtype=torch.long, device=device)


def propagate_1d(span: Tensor, A: Tensor, length: int, start: int | Tensor) -> Tensor:
    """Extend `span [N, S, D]` placed at `start` to `[N, length, D]`.

    Right of the span z(t+1) = z(t) @ (I + A).T, left of it z(t-1) = z(t) @ (I - A).T; the
    span itself is copied unchanged. Vectorised over per-sample starts: each edge row meets
    all `room` powers of its side in one GEMM (`[N, D] @ [D, room * D]`), then one gather
    picks every output position from [left powers | span | right powers] at t - start.
    That computes both sides in full for every sample (2x the products a single sample
    needs) in exchange for static shapes: no loop, sort or host sync on the start values.
    """
    n, s, d = span.shape
    room = length - s
    if room < 0:
        raise ValueError(f"span of {s} does not fit length {length}")
    start = _starts(start, n, room, span.device)
    eye = torch.eye(d, dtype=span.dtype, device=span.device)

    def extend(edge: Tensor, powers: Tensor) -> Tensor:
        return (edge @ powers.permute(1, 0, 2).reshape(d, room * d)).view(n, room, d)

    left = extend(span[:, 0], matrix_powers((eye - A).T, room)[1:].flip(0))  # k = room..1
    right = extend(span[:, -1], matrix_powers((eye + A).T, room)[1:])  # k = 1..room
    candidates = torch.cat([left, span, right], dim=1)  # [N, room + S + room, D]
    index = torch.arange(length, device=span.device) - start.unsqueeze(1) + room
    return gather_tokens(candidates, index)


def _extend(z: Tensor, A: Tensor, length: int, start: Tensor, axis: int) -> Tensor:
    """`propagate_1d` along `axis` (1: rows of the grid, i.e. y; 2: columns, i.e. x) of
    `z [N, a, b, D]`, every line of the other axis treated as one span."""
    moved = z.movedim(axis, 2)
    n, lines, s, d = moved.shape
    out = propagate_1d(moved.reshape(n * lines, s, d), A, length, start.repeat_interleave(lines))
    return out.reshape(n, lines, length, d).movedim(2, axis)


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

    def xy() -> Tensor:
        return _extend(_extend(block, A, w, left, axis=2), B, h, top, axis=1)

    def yx() -> Tensor:
        return _extend(_extend(block, B, h, top, axis=1), A, w, left, axis=2)

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

    def choose_visible(self, batch: int, grid: tuple[int, ...], generator) -> Visible:
        return visible_for_ratio(
            batch, grid, self.options.mask_ratio, "block", self.options.position, generator
        )

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
