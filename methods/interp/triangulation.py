"""Linear interpolation of scattered visible positions on a 2-D grid (interp's default rule):
barycentric weights over a Delaunay triangulation of the visible positions inside their convex
hull, and outside it the value at the nearest point of the hull (linear along the hull edge
that point lies on). Both are linear in the features, so a mask gives one weight matrix.

Inside the hull a field affine in (row, column) is reproduced exactly (barycentric weights
are the affine functions of the triangle); outside, the fill is constant along each normal of
the hull, as beyond the ends of a line in 1-D. Visible points all on one line (or fewer than
three): the hull is that segment, and the same two rules apply to it.

Computed on the host with numpy and scipy's Qhull (which releases the GIL, so the samples of a
batch are triangulated on a few threads), per mask, outside any compiled graph: the method
calls it when it chooses the visible positions (methods/interp/method.py).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

VISIBLE, INSIDE, OUTSIDE = 0, 1, 2  # what decided each position (the rule codes)
_EPS = 1e-9
_CHUNK = 64  # samples per vectorised block (bounds the [chunk, T, P] temporaries)
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="delaunay")
    return _POOL


def _triangulate(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(triangles [T, 3], hull edges [E, 2]) as indices into `points [K, 2]`. Collinear points
    or fewer than three: no triangles, and the segment's consecutive pairs as the hull."""
    from scipy.spatial import Delaunay, QhullError

    if len(points) >= 3:
        try:
            tri = Delaunay(points)
            return tri.simplices.astype(np.int64), tri.convex_hull.astype(np.int64)
        except QhullError:
            pass  # all on one line: Qhull finds no initial simplex
    direction = points[-1] - points[0]
    order = np.argsort(points @ direction, kind="stable")
    edges = np.stack([order[:-1], order[1:]], 1) if len(points) > 1 else np.zeros((1, 2), int)
    return np.zeros((0, 3), np.int64), edges.astype(np.int64)


def _pad(parts: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack index arrays of different lengths (rows repeated from the first, or zeros) and a
    mask of the real rows."""
    longest = max(1, max(len(p) for p in parts))
    out = np.zeros((len(parts), longest, width), np.int64)
    real = np.zeros((len(parts), longest), bool)
    for i, p in enumerate(parts):
        out[i, : len(p)] = p
        real[i, : len(p)] = True
    return out, real


def _chunk_weights(points: np.ndarray, queries: np.ndarray, tris: list[np.ndarray],
                   edges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Weights `[B, P, K]` and rule codes `[B, P]` of samples with visible `points [B, K, 2]`."""
    b, k, _ = points.shape
    p = len(queries)
    rows = np.arange(b)[:, None]
    weights = np.zeros((b, p, k))
    code = np.full((b, p), OUTSIDE, np.int8)
    # Inside: the first triangle whose barycentric coordinates are all >= 0.
    simplex, real = _pad(tris, 3)
    corner = points[rows[..., None], simplex]  # [B, T, 3, 2]
    v0, v1 = corner[:, :, 1] - corner[:, :, 0], corner[:, :, 2] - corner[:, :, 0]
    den = v0[..., 0] * v1[..., 1] - v0[..., 1] * v1[..., 0]  # twice the signed area
    real &= np.abs(den) > _EPS  # Qhull's flat triangles (if any) never hold a point
    d = queries[None, None] - corner[:, :, None, 0]  # [B, T, P, 2]
    safe = np.where(real, den, 1.0)[..., None]
    l1 = (d[..., 0] * v1[:, :, None, 1] - d[..., 1] * v1[:, :, None, 0]) / safe
    l2 = (v0[:, :, None, 0] * d[..., 1] - v0[:, :, None, 1] * d[..., 0]) / safe
    bary = np.stack([1 - l1 - l2, l1, l2], -1)  # [B, T, P, 3]
    holds = real[..., None] & (bary >= -_EPS).all(-1)  # [B, T, P]
    inside = holds.any(1)
    t = holds.argmax(1)  # [B, P]
    chosen = bary[rows, t, np.arange(p)[None]]  # [B, P, 3]
    ids = simplex[rows, t]  # [B, P, 3]
    for j in range(3):
        np.add.at(weights, (rows.repeat(p, 1), np.arange(p)[None].repeat(b, 0), ids[..., j]),
                  np.where(inside, chosen[..., j], 0.0))
    code[inside] = INSIDE
    # Outside: the nearest point of the nearest hull edge (ties: the first edge).
    edge, real_e = _pad(edges, 2)
    a, c = points[rows, edge[..., 0]], points[rows, edge[..., 1]]  # [B, E, 2]
    ac = c - a
    length2 = (ac * ac).sum(-1)
    q = queries[None, None] - a[:, :, None]  # [B, E, P, 2]
    s = np.clip((q * ac[:, :, None]).sum(-1) / np.where(length2 > 0, length2, 1.0)[..., None],
                0.0, 1.0)
    gap = q - s[..., None] * ac[:, :, None]
    dist = np.where(real_e[..., None], (gap * gap).sum(-1), np.inf)  # [B, E, P]
    e = dist.argmin(1)  # [B, P]
    on_hull = dist.min(1) <= _EPS  # on a collinear set's segment: inside its hull
    outside = ~inside
    s_e = s[rows, e, np.arange(p)[None]]
    pb, pp = rows.repeat(p, 1), np.arange(p)[None].repeat(b, 0)
    np.add.at(weights, (pb, pp, edge[rows, e, 0]), np.where(outside, 1 - s_e, 0.0))
    np.add.at(weights, (pb, pp, edge[rows, e, 1]), np.where(outside, s_e, 0.0))
    code[outside & on_hull] = INSIDE
    return weights, code


def linear_weights(visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For `visible [B, h, w]` (bool, the same count K per sample, K >= 1): the weights
    `[B, h * w, K]` (float32) each position takes from the visible positions in flat-index
    order, and the rule that decided it, `[B, h * w]` (VISIBLE, INSIDE: barycentric in a
    Delaunay triangle, OUTSIDE: the nearest point of the hull). A visible position takes
    weight 1 from itself."""
    b, h, w = visible.shape
    flat = visible.reshape(b, h * w)
    counts = flat.sum(1)
    if b and (counts.min() != counts.max() or counts.min() < 1):
        raise ValueError("every sample needs the same number (>= 1) of visible positions")
    index = np.nonzero(flat)[1].reshape(b, -1)  # sorted flat positions, [B, K]
    points = np.stack([index // w, index % w], -1).astype(np.float64)
    queries = np.stack(np.divmod(np.arange(h * w), w), -1).astype(np.float64)
    found = list(_pool().map(_triangulate, points)) if b > 1 else [_triangulate(points[0])]
    weights = np.zeros((b, h * w, index.shape[1]), np.float32)
    code = np.zeros((b, h * w), np.int8)
    for start in range(0, b, _CHUNK):
        part = slice(start, start + _CHUNK)
        wts, cd = _chunk_weights(points[part], queries, [t for t, _ in found[part]],
                                 [e for _, e in found[part]])
        weights[part], code[part] = wts, cd
    rows = np.arange(b)[:, None]
    weights[rows, index] = 0.0
    weights[rows, index, np.arange(index.shape[1])[None]] = 1.0
    code[rows, index] = VISIBLE
    return weights, code
