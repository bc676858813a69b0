"""Interpolation: hand-computed values, affine fields, edge cases, and the plugin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.core.errors import IncompatibleError
from bench.core.spec import DataSpec
from bench.models.encoders import build_encoder
from bench.models.pretrainer import MaskedPretrainer
from bench.ops.masking import Visible, gather_tokens, grid_size
from methods.base import build_method
from methods.interp.method import interpolate_1d, interpolate_2d
from methods.interp.triangulation import INSIDE, OUTSIDE, VISIBLE, linear_weights
from methods.qbheat.method import propagate, propagate_1d


def _mask(text: str) -> torch.Tensor:
    """'.x..x' -> bool tensor, x = visible; rows separated by spaces for 2-D."""
    rows = [[ch == "x" for ch in row] for row in text.split()]
    return torch.tensor(rows if len(rows) > 1 else rows[0])


def _line(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1)


def test_1d_hand_computed():
    z = _line([9, 2, 9, 9, 8, 9, 9])
    out = interpolate_1d(z, _mask(".x..x..")[None])
    assert out.view(-1).tolist() == [2, 2, 4, 6, 8, 8, 8]


@pytest.mark.parametrize(
    "mask, expected",
    [
        ("..x..", [3, 3, 3, 3, 3]),  # one visible: copied everywhere
        ("xxxxx", [1, 2, 3, 4, 5]),  # all visible: unchanged
        ("x....", [1, 1, 1, 1, 1]),  # visible only at the left end
        ("....x", [5, 5, 5, 5, 5]),  # visible only at the right end
        ("x...x", [1, 2, 3, 4, 5]),
    ],
)
def test_1d_edge_cases(mask, expected):
    assert interpolate_1d(_line([1, 2, 3, 4, 5]), _mask(mask)[None]).view(-1).tolist() == expected


def test_1d_affine_exact_between_visible_and_batched():
    g = torch.Generator().manual_seed(0)
    visible = torch.rand(6, 20, generator=g) < 0.3
    visible[:, [2, 17]] = True
    t = torch.arange(20, dtype=torch.float64)
    slope, offset = torch.randn(2, 6, 1, 3, dtype=torch.float64, generator=g)
    z = torch.where(visible[..., None], t[None, :, None] * slope + offset, 0.0)
    out = interpolate_1d(z, visible)
    torch.testing.assert_close(out[:, 2:18], (t[None, :, None] * slope + offset)[:, 2:18])
    for i in range(6):  # the batched call equals one call per sample
        torch.testing.assert_close(out[i : i + 1], interpolate_1d(z[i : i + 1], visible[i : i + 1]))


def test_2d_hand_computed():
    visible = _mask("xx.x .... x.x. .x..")
    values = torch.zeros(4, 4, dtype=torch.float64)
    for (r, c), v in {(0, 0): 0, (0, 1): 1, (0, 3): 6, (2, 0): 8, (2, 2): 2, (3, 1): 10}.items():
        values[r, c] = v
    out = interpolate_2d(values.view(1, 4, 4, 1), visible[None]).view(4, 4)
    expected = torch.tensor(
        [
            [0, 1, 3.5, 6],  # (0,2): row only, 1 + (6 - 1) / 2
            [4, 4, 2, 6],  # column only (0..8; 1..10); (1,2), (1,3): nearest at distance 1
            [8, 6, 2, 2],  # (2,1): mean of row 5 and column 7; (2,3): nearest
            [8, 10, 2, 2],  # (3,0), (3,2): ties at distance 1 -> lowest flat index
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected)


def test_nearest_fallback_ties_go_to_the_lowest_flat_index():
    visible = _mask("x.. ... ..x")
    values = torch.zeros(3, 3)
    values[0, 0], values[2, 2] = 1.0, 5.0
    out = interpolate_2d(values.view(1, 3, 3, 1), visible[None]).view(3, 3)
    # (0,2), (1,1), (2,0) are equidistant from both corners: they take flat index 0.
    assert torch.equal(out, torch.tensor([[1.0, 1, 1], [1, 1, 5], [1, 5, 5]]))


def _bracketed(visible: torch.Tensor) -> torch.Tensor:
    """Along the last dim: some visible position at-or-before AND at-or-after each position."""
    before = visible.cummax(-1).values
    after = visible.flip(-1).cummax(-1).values.flip(-1)
    return before & after


def test_2d_affine_exact_where_bracketed():
    g = torch.Generator().manual_seed(1)
    n, h, w = 8, 6, 7
    visible = torch.rand(n, h, w, generator=g) < 0.35
    visible[:, 0, 0] = True
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coef = torch.randn(n, 3, 1, 1, 4, dtype=torch.float64, generator=g)
    z = x[..., None] * coef[:, 0] + y[..., None] * coef[:, 1] + coef[:, 2]
    out = interpolate_2d(torch.where(visible[..., None], z, 0.0), visible)
    bracketed = _bracketed(visible) | _bracketed(visible.transpose(1, 2)).transpose(1, 2)
    assert bracketed.sum() > n * h * w // 2
    torch.testing.assert_close(out[bracketed], z[bracketed])
    assert torch.equal(out[visible], z[visible])


@pytest.mark.parametrize("mask", [".x..x..", "x......", "......x", "xxxxxxx", "...x..."])
def test_1d_equals_2d_on_one_row_or_column(mask):
    z = torch.randn(1, 7, 3)
    visible = _mask(mask)[None]
    expected = interpolate_1d(z, visible)
    one_row = interpolate_2d(z.view(1, 1, 7, 3), visible.view(1, 1, 7))
    one_col = interpolate_2d(z.view(1, 7, 1, 3), visible.view(1, 7, 1))
    torch.testing.assert_close(one_row[:, 0], expected)
    torch.testing.assert_close(one_col[:, :, 0], expected)


@pytest.mark.parametrize("modality, grid", [("image", (6, 8)), ("text", (16,))])
@pytest.mark.parametrize("layout", ["random", "block"])
def test_plugin_fill(modality, grid, layout):
    method = build_method("interp", {"visible": layout}, 8, modality, "token")
    assert method.extrapolates == (layout == "block")
    assert list(method.parameters()) == []
    visible = method.choose_visible(3, grid, torch.Generator().manual_seed(2))
    again = method.choose_visible(3, grid, torch.Generator().manual_seed(2))
    assert torch.equal(visible.index, again.index)
    assert visible.count == grid_size(grid) // 4
    latent = torch.randn(3, visible.count, 8, requires_grad=True)
    filled = method.fill(latent, visible, grid)
    assert filled.shape == (3, grid_size(grid), 8)
    assert torch.equal(gather_tokens(filled, visible.index), latent)
    filled.square().sum().backward()
    assert latent.grad.abs().sum() > 0


@pytest.mark.parametrize("modality, grid", [("image", (6, 8)), ("text", (16,))])
def test_block_interp_is_qbheat_with_zero_operators(modality, grid):
    """On a block nothing is bracketed: the fill copies the nearest edge, like I + A = I."""
    method = build_method("interp", {"visible": "block"}, 4, modality, "token")
    assert "EXTRAPOLATES" in method.describe(grid)
    visible = method.choose_visible(5, grid, torch.Generator().manual_seed(3))
    latent = torch.randn(5, visible.count, 4)
    block = latent.view(5, *visible.shape, 4)
    zero = torch.zeros(4, 4)
    if modality == "text":
        expected = propagate_1d(block, zero, grid[0], visible.origin[:, 0])
    else:
        expected = propagate(block, zero, zero, grid, visible.origin).flatten(1, 2)
    assert torch.equal(method.fill(latent, visible, grid), expected)


def test_a_random_subset_needs_a_token_or_masked_encoder():
    """A block suits any encoder; a random subset a token encoder or masked convolution."""
    build_method("interp", {"visible": "block"}, 8, "image", "dense")
    build_method("interp", {}, 8, "image", frozenset({"dense", "masked"}))
    with pytest.raises(IncompatibleError, match="masked-convolution or token"):
        build_method("interp", {}, 8, "image", "dense")


def test_gradient_reaches_encoder_and_inputs():
    spec = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
    method = build_method("interp", {}, 32, "image", "token")
    model = MaskedPretrainer(spec, build_encoder("vit-micro", spec), method, 32, 1, 2)
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    out = model(x, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert x.grad.abs().sum() > 0
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


# --- the default 2-D rule: a true linear interpolation (Delaunay, nearest hull point outside)


def _affine(n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """`[n, h, w, 3]`: a random field affine in (row, column) per sample and channel."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coef = torch.randn(n, 3, 1, 1, 3, dtype=torch.float64, generator=g)
    return x[..., None] * coef[:, 0] + y[..., None] * coef[:, 1] + coef[:, 2]


def _random_masks(n: int, h: int, w: int, keep: int, g: torch.Generator) -> torch.Tensor:
    noise = torch.rand(n, h * w, generator=g)
    index = noise.argsort(1)[:, :keep]
    return torch.zeros(n, h * w, dtype=torch.bool).scatter_(1, index, True).view(n, h, w)


def _hull_distance_points(points: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
    """Every nearest point of the convex hull boundary of `points` to `q` (ties kept)."""
    from scipy.spatial import ConvexHull

    ring = points[ConvexHull(points).vertices]
    found = []
    for a, b in zip(ring, np.roll(ring, -1, 0)):
        t = np.clip(np.dot(q - a, b - a) / np.dot(b - a, b - a), 0, 1)
        found.append(a + t * (b - a))
    dist = [np.linalg.norm(q - f) for f in found]
    return [f for f, d in zip(found, dist) if d <= min(dist) + 1e-9]


@pytest.mark.parametrize("grid, keep", [((8, 8), 16), ((6, 7), 12), ((14, 14), 49)])
def test_linear_rule_exact_inside_the_hull_on_random_masks(grid, keep):
    """The default image fill reproduces an affine field exactly at every position inside the
    convex hull of the visible positions (the axes rule, the old default, copies the nearest
    token where a row and a column are not both bracketed, so it fails here)."""
    from scipy.spatial import Delaunay

    g = torch.Generator().manual_seed(sum(grid))
    h, w = grid
    n = 24
    visible = _random_masks(n, h, w, keep, g)
    z = _affine(n, h, w, g)
    method = build_method("interp", {}, 3, "image", "token")
    index = visible.view(n, -1).nonzero()[:, 1].view(n, keep)
    latent = gather_tokens(z.view(n, h * w, 3), index)
    filled = method.fill(latent, Visible(index), grid).view(n, h, w, 3)
    coords = np.stack(np.divmod(np.arange(h * w), w), -1).astype(float)
    checked = 0
    for i in range(n):
        points = coords[index[i].numpy()]
        inside = Delaunay(points).find_simplex(coords, tol=1e-9) >= 0
        checked += inside.sum() - keep
        torch.testing.assert_close(filled[i].view(-1, 3)[inside], z[i].view(-1, 3)[inside])
    assert checked > n * (h * w - keep) // 3  # most hidden positions lie inside the hull


def test_linear_rule_outside_the_hull_takes_the_nearest_hull_point():
    g = torch.Generator().manual_seed(4)
    n, h, w = 12, 8, 8
    visible = _random_masks(n, h, w, 10, g)
    z = _affine(n, h, w, g)
    weights, code = linear_weights(visible.numpy())
    filled = torch.from_numpy(weights).double() @ torch.stack(
        [z[i][visible[i]] for i in range(n)])
    coords = np.stack(np.divmod(np.arange(h * w), w), -1).astype(float)
    outside = 0
    for i in range(n):
        points = coords[visible[i].view(-1).numpy()]
        coef = np.linalg.lstsq(np.c_[coords, np.ones(h * w)], z[i].view(-1, 3).numpy(),
                               rcond=None)[0]
        for p in np.flatnonzero(code[i] == OUTSIDE):
            candidates = [np.r_[c, 1.0] @ coef for c in _hull_distance_points(points, coords[p])]
            assert any(np.allclose(filled[i, p].numpy(), c, atol=1e-5) for c in candidates)
            outside += 1
    assert outside > 0
    assert set(np.unique(code)) == {VISIBLE, INSIDE, OUTSIDE}


def test_linear_weights_are_a_partition_of_unity_and_batch_independent():
    g = torch.Generator().manual_seed(5)
    visible = _random_masks(9, 8, 8, 16, g).numpy()
    weights, _ = linear_weights(visible)
    assert np.allclose(weights.sum(-1), 1, atol=1e-6) and (weights >= -1e-6).all()
    for i in range(9):
        assert np.array_equal(linear_weights(visible[i : i + 1])[0][0], weights[i])


@pytest.mark.parametrize("mask", [".x..x..", "x......", "......x", "xxxxxxx", "...x..."])
def test_linear_rule_on_one_row_or_column_is_the_1d_rule(mask):
    """Visible points on one line (here the whole grid is a line): the hull is the segment,
    and the rule is the 1-D one."""
    z = torch.randn(1, 7, 3, dtype=torch.float64)
    visible = _mask(mask)[None]
    expected = interpolate_1d(z, visible)
    method = build_method("interp", {}, 3, "image", "token")
    index = visible.nonzero()[:, 1].view(1, -1)
    for grid in ((1, 7), (7, 1)):
        got = method.fill(gather_tokens(z, index), Visible(index), grid)
        torch.testing.assert_close(got, expected)


def test_axes_rule_is_kept_as_an_option():
    g = torch.Generator().manual_seed(6)
    visible = _random_masks(4, 6, 8, 12, g)
    z = torch.randn(4, 6, 8, 5, generator=g)
    method = build_method("interp", {"rule": "axes"}, 5, "image", "token")
    index = visible.view(4, -1).nonzero()[:, 1].view(4, -1)
    got = method.fill(gather_tokens(z.view(4, 48, 5), index), Visible(index), (6, 8))
    torch.testing.assert_close(got, interpolate_2d(z, visible).view(4, 48, 5))
    assert "row and/or column" in method.describe((6, 8))


def test_weights_come_with_the_mask_and_match_the_eager_fill():
    method = build_method("interp", {}, 4, "image", "token")
    visible = method.choose_visible(5, (8, 8), torch.Generator().manual_seed(0))
    assert visible.fill_weights is not None and visible.fill_weights.shape == (5, 64, 16)
    latent = torch.randn(5, 16, 4)
    bare = Visible(visible.index)
    torch.testing.assert_close(method.fill(latent, visible, (8, 8)),
                               method.fill(latent, bare, (8, 8)))


@pytest.mark.parametrize("options, names", [
    ({}, {"interp_share_inside", "interp_share_outside"}),
    ({"rule": "axes"}, {"interp_share_both_axes", "interp_share_one_axis",
                        "interp_share_nearest"}),
])
def test_rule_shares_are_diagnostics_the_card_declares(options, names):
    method = build_method("interp", options, 4, "image", "token")
    assert method.diagnostics() == {}  # no grid seen yet
    method.choose_visible(2, (8, 8), torch.Generator().manual_seed(0))
    shares = method.diagnostics()
    assert set(shares) == names and sum(shares.values()) == pytest.approx(1.0)
    assert names <= {d.name for d in method.card.diagnostics}
    assert shares == method.diagnostics()  # seeded: the same draws every time
    text = build_method("interp", options, 4, "text", "token")
    text.choose_visible(2, (16,), torch.Generator().manual_seed(0))
    assert set(text.diagnostics()) == {"interp_share_inside", "interp_share_outside"}
