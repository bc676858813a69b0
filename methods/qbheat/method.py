"""QB-Heat (Chen et al., 2022, arXiv 2211.13228): the encoder sees one contiguous block and
the rest of the grid is extrapolated from it by the discretised steady heat (Laplace) system.
(`visible=random`: a random subset instead, each hidden position propagated from its nearest
visible one by the same steps: the heat fill in the mask-shape x fill factorial.)

With column vectors the paper's unit steps are z(x+1, y) = (I + A) z(x, y) and
z(x, y+1) = (I + B) z(x, y) (x: column index, y: row index). Features here are ROW vectors
`[..., D]`, so one step to the right is `z @ (I + A).T` and one step to the left inverts the
forward difference to first order, `z @ (I - A).T` (likewise B downwards / upwards). This is
the paper's rule transposed, the same convention as `nn.Linear` (`x @ W.T`).

Defaults are the paper's reading: a corner quarter block (`position=quadrant`), propagation of
the encoder's features (`at=encoder`, then the shared projection into the decoder), one step
per token, no normalisation. The readings it leaves open are options (README, "QB-Heat: what
the paper states"): `step=block` (one step per block extent), `norm=true` (FINOLA's
standardisation before the linear map), `order`, `param`, and `commute` (a penalty on
||AB - BA||_F^2: the system has a solution for an arbitrary block only where A, B commute).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.errors import ConfigError
from bench.ops.masking import (
    Visible,
    contiguous_block_shape,
    grid_coords,
    grid_size,
    nearest_visible,
    scatter_tokens,
)
from methods.base import FillRule, MaskingMethod, register_method
from methods.qbheat import CARD, Order, QBHeatOptions, Step, parse_param

NORM_EPS = 1e-6  # FINOLA's normalisation: eps inside the square root


def standardise(z: Tensor) -> Tensor:
    """FINOLA's "normalization before the linear model": each feature vector minus its mean
    over the D channels, divided by sqrt(biased variance + 1e-6); no affine parameters."""
    return F.layer_norm(z, z.shape[-1:], eps=NORM_EPS)


def _increment(z: Tensor, A: Tensor, norm: bool) -> Tensor:
    """What one step adds (right/down) or subtracts (left/up): z @ A.T, or n(z) @ A.T."""
    return (standardise(z) if norm else z) @ A.T


def _starts(start: int | Tensor, n: int, room: int, device: torch.device) -> Tensor:
    """Per-sample offsets `[n]` from an int (checked against `room`) or an `[n]` tensor."""
    if isinstance(start, Tensor):
        return start.to(device=device, dtype=torch.long).reshape(n)
    if not 0 <= start <= room:
        raise ValueError(f"start {start} puts the span outside the grid (valid: 0..{room})")
    return torch.full((n,), start, dtype=torch.long, device=device)


def _extend_token(span: Tensor, A: Tensor, length: int, start: Tensor, norm: bool) -> Tensor:
    """`step="token"`: one step per token, chained from the span's nearest edge token.

    Vectorised over per-sample starts with exactly the products each line needs: a line has
    `room = length - S` positions to fill, so loop step j is its left step j + 1 while
    j < start and its right step j - start + 1 after (the chain restarts from the right edge
    at j == start). Both directions share one product (z -+ z @ A.T, or with `norm`
    z -+ n(z) @ A.T), so each step is one GEMM over all lines whatever their side, and one
    indexing op places the steps. (Precomputed powers of I + A and I - A would need both
    sides for every line: twice the GEMM work for static shapes.)
    """
    n, s = span.shape[:2]
    room = length - s
    at = start.view(n, *[1] * (span.dim() - 2))  # broadcasts over lines and features
    signs = torch.where(at > torch.arange(room, device=span.device), -1.0, 1.0).to(span.dtype)
    z, right_edge, steps = span[:, 0], span[:, -1], []
    for j in range(room):
        z = torch.where(at == j, right_edge, z)
        z = torch.addcmul(z, signs[..., j : j + 1], _increment(z, A, norm))
        steps.append(z.unsqueeze(1))
    candidates = torch.cat([*steps, span], dim=1)  # [N, room + S, *lines, D]
    t = torch.arange(length, device=span.device)
    start = start.unsqueeze(1)
    index = torch.where(
        t < start, start - 1 - t, torch.where(t < start + s, room + t - start, t - s)
    )
    return candidates[torch.arange(n, device=span.device).unsqueeze(1), index]


def _extend_block(span: Tensor, A: Tensor, length: int, start: Tensor, norm: bool) -> Tensor:
    """`step="block"`: one step per span extent S. Position t >= s + S takes span token
    s + (t - s) mod S after (t - s) // S right steps; t < s takes span token s + (t - s) mod S
    (non-negative mod) after ceil((s - t) / S) left steps.

    So chunk m on either side is m steps applied to the whole span at once: both sides are
    built to the most chunks any start needs, ceil((length - S) / S), laid out as one line
    [left chunks, span, right chunks], and each sample reads its window from it.
    """
    n, s = span.shape[:2]
    chunks = -(-(length - s) // s)
    left, right = [span], [span]
    if chunks:  # the first step on either side starts from the span: its increment once
        first = _increment(span, A, norm)
        left.append(span - first)
        right.append(span + first)
    for _ in range(chunks - 1):
        left.append(left[-1] - _increment(left[-1], A, norm))
        right.append(right[-1] + _increment(right[-1], A, norm))
    candidates = torch.cat([*left[:0:-1], span, *right[1:]], dim=1)  # [N, (2c + 1) S, ...]
    index = chunks * s + torch.arange(length, device=span.device) - start.unsqueeze(1)
    return candidates[torch.arange(n, device=span.device).unsqueeze(1), index]


def _extend(span: Tensor, A: Tensor, length: int, start: Tensor, step: Step, norm: bool) -> Tensor:
    """The 1-D rule along dim 1 of `span [N, S, *lines, D]` placed at `start [N]` ->
    `[N, length, *lines, D]`; every index of the middle dims is a line of its own."""
    if length < span.shape[1]:
        raise ValueError(f"span of {span.shape[1]} does not fit length {length}")
    if step == "token":
        return _extend_token(span, A, length, start, norm)
    if step == "block":
        return _extend_block(span, A, length, start, norm)
    raise ValueError(f"step {step!r}; known: block, token")


def propagate_1d(
    span: Tensor,
    A: Tensor,
    length: int,
    start: int | Tensor,
    step: Step = "token",
    norm: bool = False,
) -> Tensor:
    """Extend `span [N, S, D]` placed at `start` (int or `[N]`) to `[N, length, D]`.

    `step="token"`: right of the span z(t+1) = z(t) @ (I + A).T, left of it
    z(t-1) = z(t) @ (I - A).T. `step="block"`: the same steps, one per span extent S (see
    `_extend_block`). `norm=True` (FINOLA): a right step is z + n(z) @ A.T and a left step
    z - n(z) @ A.T, n = `standardise`. The span itself is copied unchanged.
    """
    starts = _starts(start, span.shape[0], length - span.shape[1], span.device)
    return _extend(span, A, length, starts, step, norm)


def propagate(
    block: Tensor,
    A: Tensor,
    B: Tensor,
    grid: tuple[int, int],
    origin: tuple[int, int] | Tensor,
    order: Order = "xy",
    step: Step = "token",
    norm: bool = False,
) -> Tensor:
    """Extrapolate `block [N, hb, wb, D]` at `origin` (top, left) to the grid: `[N, h, w, D]`.

    `order="xy"`: first along x within the block's rows with A (right: I + A, left: I - A),
    then along y over the full width with B (down: I + B, up: I - B); `"yx"` swaps the axes;
    `"avg"` is the mean of both. `step` and `norm` as in `propagate_1d` (along x a block step
    spans wb tokens, along y hb). The block comes out unchanged. `origin` may be ints or an
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

    def along(z: Tensor, op: Tensor, size: int, at: Tensor) -> Tensor:
        return _extend(z, op, size, at, step, norm)

    def xy() -> Tensor:  # rows of the block along x, then every column along y
        return along(along(block.transpose(1, 2), A, w, left).transpose(1, 2), B, h, top)

    def yx() -> Tensor:
        return along(along(block, B, h, top).transpose(1, 2), A, w, left).transpose(1, 2)

    if order == "xy":
        return xy()
    if order == "yx":
        return yx()
    if order == "avg":
        return (xy() + yx()) / 2
    raise ValueError(f"order {order!r}; known: avg, xy, yx")


def propagate_from_nearest(
    latent: Tensor,
    index: Tensor,
    grid: tuple[int, ...],
    ops: tuple[Tensor, ...],
    order: Order = "xy",
    norm: bool = False,
) -> Tensor:
    """QB-Heat's unit steps from a random subset: `latent [N, K, D]` at the sorted flat
    positions `index [N, K]` -> `[N, prod(grid), D]`. Each position starts from its nearest
    visible one (Euclidean, ties: lowest flat index) and takes the unit steps between them:
    along x (the last axis) with `ops[-1]` (A: I + A forward, I - A backward), then along y
    with `ops[0]` (B) for `order="xy"`; `"yx"` the other way round; `"avg"` the mean of both;
    `norm` as in `propagate_1d`. Visible positions are unchanged.

    From one block this is `propagate` exactly (with token steps): the nearest block position
    is the clamped one, and xy-propagation from it takes the same steps. Each step is one GEMM
    over all positions (those with no step left stay), `sum(g - 1)` steps in all: static
    shapes, no data-dependent control flow."""
    n, k, d = latent.shape
    size = grid_size(grid)
    mask = torch.zeros(n, size, dtype=torch.bool, device=latent.device).scatter_(1, index, True)
    source = nearest_visible(mask, grid)  # [N, P] flat positions
    coords = grid_coords(grid, latent.device)  # [P, ndim]
    offset = coords[None] - coords[source]  # [N, P, ndim]: steps from the source
    start = scatter_tokens(latent.new_zeros(n, size, d), index, latent).gather(
        1, source.unsqueeze(-1).expand(-1, -1, d))

    def along(z: Tensor, axis: int) -> Tensor:
        op, steps = ops[axis], offset[..., axis]
        sign = steps.sign().to(z.dtype).unsqueeze(-1)
        for j in range(grid[axis] - 1):
            z = torch.where((steps.abs() > j).unsqueeze(-1), z + sign * _increment(z, op, norm), z)
        return z

    axes = list(range(len(grid)))[::-1]  # x (the last axis) first
    if order == "xy" or len(grid) == 1:
        out = _walk(start, axes, along)
    elif order == "yx":
        out = _walk(start, axes[::-1], along)
    elif order == "avg":
        out = (_walk(start, axes, along) + _walk(start, axes[::-1], along)) / 2
    else:
        raise ValueError(f"order {order!r}; known: avg, xy, yx")
    return scatter_tokens(out, index, latent)


def _walk(z: Tensor, axes: list[int], along) -> Tensor:
    for axis in axes:
        z = along(z, axis)
    return z


def commutator(A: Tensor, B: Tensor) -> Tensor:
    """AB - BA: zero exactly where dz/dx = Az, dz/dy = Bz has a solution for any block
    (the mixed derivatives agree), and then the xy and yx fills are the same."""
    return A @ B - B @ A


def spectral_radius(M: Tensor) -> float:
    """Largest |eigenvalue| of a square matrix (a float64 CPU one, as `operator_diagnostics`
    makes them): the growth per step of its powers."""
    return torch.linalg.eigvals(M).abs().max().item()


def operator_diagnostics(A: Tensor, B: Tensor | None = None) -> dict[str, float]:
    """Named figures of learned heat operators: Frobenius norms, the spectral radius of each
    unit step (I + A right, I - A left, I + B down, I - B up: above 1, that direction grows
    without bound with the distance) and the relative commutator
    ||AB - BA||_F / (||A||_F ||B||_F) (0 when either operator is zero)."""
    A = A.detach().double().cpu()
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    out = {"heat_norm_A": torch.linalg.matrix_norm(A).item(),
           "heat_radius_right": spectral_radius(eye + A),
           "heat_radius_left": spectral_radius(eye - A)}
    if B is None:
        return out
    B = B.detach().double().cpu()
    norm_b = torch.linalg.matrix_norm(B).item()
    scale = out["heat_norm_A"] * norm_b
    relative = torch.linalg.matrix_norm(commutator(A, B)).item() / scale if scale > 0 else 0.0
    return {**out, "heat_norm_B": norm_b, "heat_radius_down": spectral_radius(eye + B),
            "heat_radius_up": spectral_radius(eye - B), "heat_commutator": relative}


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


@register_method(CARD)
class QBHeat(MaskingMethod):
    """One contiguous block; hidden positions extrapolated by learned heat operators A, B."""

    def __init__(self, options: QBHeatOptions, dim: int, modality: str):
        super().__init__(options, dim, modality)
        kind, rank = parse_param(options.param)
        if rank is not None and rank >= dim:
            raise ConfigError(f"qbheat.param={options.param}: rank must be below the width {dim}")
        if options.commute and modality != "image":
            raise ConfigError("qbheat.commute needs both operators A and B: images only "
                              "(text has the one operator A)")
        self.A = GridOperator(dim, kind, rank)
        # Text is 1-D: only the x operator exists (no unused parameters).
        self.B = GridOperator(dim, kind, rank) if modality == "image" else None

    @classmethod
    def fill_site(cls, options: QBHeatOptions) -> str:
        return options.at

    def layout(self) -> tuple[str, str]:
        return self.options.visible, self.options.position

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        return self._propagate(latent, visible, grid, self.A(), None if self.B is None else self.B())

    def _propagate(self, latent: Tensor, visible: Visible, grid: tuple[int, ...], A: Tensor,
                   B: Tensor | None) -> Tensor:
        """The fill with operators `A`, `B` (B: images only)."""
        o = self.options
        if o.visible == "random":
            ops = (A,) if len(grid) == 1 else (B, A)
            return propagate_from_nearest(latent, visible.index, grid,
                                          tuple(op.to(latent.dtype) for op in ops), o.order,
                                          o.norm)
        if visible.origin is None or visible.shape is None:
            raise ValueError("qbheat extrapolates from one contiguous block; got no block geometry")
        b, _, d = latent.shape
        block = latent.reshape(b, *visible.shape, d)
        A = A.to(latent.dtype)
        if len(grid) == 1:
            out = propagate_1d(block, A, grid[0], visible.origin[:, 0], o.step, o.norm)
        else:
            out = propagate(block, A, B.to(latent.dtype), grid, visible.origin, o.order, o.step,
                            o.norm)
        return out.reshape(b, grid_size(grid), d)

    def ablated_fills(self) -> dict[str, FillRule]:
        """`copy`: the same propagation with A = B = 0, each hidden position a copy of its
        nearest block edge token: what the learned operators add to extrapolation itself."""
        zero = torch.zeros(self.dim, self.dim, device=self.A().device)

        def copy(latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
            return self._propagate(latent, visible, grid, zero, zero)

        return {"copy": copy}

    def regularizer(self) -> Tensor | None:
        """commute * ||AB - BA||_F^2: pulls the operators towards a pair the PDE allows."""
        if not self.options.commute:
            return None
        return self.options.commute * commutator(self.A(), self.B()).square().sum()

    def diagnostics(self) -> dict[str, float]:
        return operator_diagnostics(self.A(), None if self.B is None else self.B())

    def neighbour_maps(self) -> dict[str, Tensor] | None:
        """(I + A).T one column right, (I + B).T one row down (row vectors), when the fill is
        exactly those steps on the encoder's features: at=encoder, step=token, norm=false."""
        o = self.options
        if o.at != "encoder" or o.step != "token" or o.norm:
            return None
        eye = torch.eye(self.dim, device=self.A().device)
        steps = {"x": (eye + self.A()).T.detach()}
        if self.B is not None:
            steps["y"] = (eye + self.B()).T.detach()
        return steps

    def describe(self, grid: tuple[int, ...]) -> str:
        o = self.options
        if o.visible == "random":
            return (f"random visible subset ({1 - o.mask_ratio:.0%}); each hidden position "
                    f"propagated from its nearest visible one by the learned unit steps at the "
                    f"{o.at} ({'' if len(grid) == 1 else f'order {o.order}, '}{o.param}"
                    f"{', normalised' if o.norm else ''})")
        shape = contiguous_block_shape(grid, o.mask_ratio)
        part = f"{shape[0]}-token span" if len(shape) == 1 else f"{shape[0]}x{shape[1]} block"
        order = "" if len(grid) == 1 else f"order {o.order}, "
        return (
            f"one contiguous {part} ({o.position}); the rest extrapolated from it at the "
            f"{o.at} by learned heat operators ({order}one step per {o.step}"
            f"{', normalised' if o.norm else ''}, {o.param}"
            f"{f', commute {o.commute:g}' if o.commute else ''})"
        )
