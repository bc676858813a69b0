import itertools
import math

import pytest
import torch

from bench.ops.masking import (
    block_visible,
    contiguous_block_shape,
    gather_tokens,
    random_visible,
    scatter_tokens,
    visible_count,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_visible_exact_ratio_sorted_unique():
    v = random_visible(8, 64, visible_count((8, 8), 0.75), gen())
    assert v.index.shape == (8, 16)
    assert (v.index.diff(dim=1) > 0).all()  # sorted and unique
    assert v.mask(64).sum(1).eq(16).all()
    assert not torch.equal(v.index[0], v.index[1])  # per-sample masks


def test_random_visible_seeded():
    a = random_visible(4, 64, 16, gen(3)).index
    b = random_visible(4, 64, 16, gen(3)).index
    c = random_visible(4, 64, 16, gen(4)).index
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_block_shape_quarter_and_span():
    assert contiguous_block_shape((8, 8), 0.75) == (4, 4)
    assert contiguous_block_shape((64,), 0.75) == (16,)


@pytest.mark.parametrize("position", ["random", "center", "quadrant"])
def test_block_visible_is_contiguous(position):
    v = block_visible(16, (8, 8), (4, 4), position, gen())
    rows, cols = v.index // 8, v.index % 8
    assert (rows.view(16, 4, 4) == v.origin[:, 0].view(16, 1, 1) + torch.arange(4).view(1, 4, 1)).all()
    assert (cols.view(16, 4, 4) == v.origin[:, 1].view(16, 1, 1) + torch.arange(4).view(1, 1, 4)).all()
    if position == "center":
        assert v.origin.eq(2).all()
    if position == "quadrant":
        assert set(v.origin.flatten().tolist()) <= {0, 4}


def test_block_visible_random_covers_all_origins():
    v = block_visible(2000, (8, 8), (4, 4), "random", gen())
    assert set(map(tuple, v.origin.tolist())) == {(r, c) for r in range(5) for c in range(5)}


def test_gather_scatter_round_trip():
    x = torch.randn(3, 10, 4, generator=gen())
    idx = torch.tensor([[0, 2], [1, 9], [3, 4]])
    picked = gather_tokens(x, idx)
    assert torch.equal(picked[1, 1], x[1, 9])
    back = scatter_tokens(torch.zeros_like(x), idx, picked)
    assert torch.equal(gather_tokens(back, idx), picked)
    untouched = torch.ones(3, 10, dtype=torch.bool).scatter_(1, idx, False)
    assert back[untouched].eq(0).all()


@pytest.mark.parametrize("grid, shape", [((8, 8), (4, 4)), ((7, 7), (4, 4)), ((7, 12), (4, 6)),
                                         ((9,), (4,))])
def test_quadrant_is_a_corner_block_on_even_and_odd_grids(grid, shape):
    """Each axis at origin 0 or g - s, so the block touches a corner; all 2^ndim corners are
    drawn. On 8x8 that is exactly a quarter; on 7x7 the 4x4 corner blocks overlap by one row
    and one column, and the hidden part is the other 33 positions."""
    v = block_visible(256, grid, shape, "quadrant", gen())
    corners = {tuple(o) for o in v.origin.tolist()}
    room = [g - s for g, s in zip(grid, shape)]
    expected = {tuple(c * r for c, r in zip(bits, room)) for bits in
                itertools.product((0, 1), repeat=len(grid))}
    assert corners == expected
    n = math.prod(grid)
    assert v.count == math.prod(shape) and v.mask(n).sum(1).eq(v.count).all()
    if grid == (8, 8):
        assert corners == {(0, 0), (0, 4), (4, 0), (4, 4)}  # the four quarters
    if grid == (7, 7):
        assert corners == {(0, 0), (0, 3), (3, 0), (3, 3)} and n - v.count == 33
