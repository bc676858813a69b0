"""QB-Heat: exact maths of the extrapolation against an explicit loop, and the plugin."""

from __future__ import annotations

import pytest
import torch

import bench.models.cnn  # noqa: F401  (registers the CNN encoder presets)
from bench.errors import ConfigError
from bench.masking import block_visible, grid_size
from bench.models.encoders import build_encoder
from bench.models.pretrainer import MaskedPretrainer
from bench.spec import DataSpec
from methods.base import build_method, resolve_options
from methods.qbheat import QBHeat, propagate, propagate_1d

D = 5


def _operators(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.randn(D, D, generator=g, dtype=torch.float64) for _ in range(2))


def _steps(A: torch.Tensor, k: int) -> torch.Tensor:
    """Row-vector operator of k signed unit steps: ((I + A)^T)^k forwards, ((I - A)^T)^|k| back."""
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return torch.linalg.matrix_power((eye + A if k > 0 else eye - A).T, abs(k))


def _reference(block, A, B, grid, origin, order):
    """Position by position: nearest block feature times the powers for its offsets."""
    n, hb, wb, _ = block.shape
    top, left = origin
    out = torch.empty(n, *grid, block.shape[-1], dtype=block.dtype)
    for r in range(grid[0]):
        for c in range(grid[1]):
            r0, c0 = min(max(r, top), top + hb - 1), min(max(c, left), left + wb - 1)
            z = block[:, r0 - top, c0 - left]
            sx, sy = _steps(A, c - c0), _steps(B, r - r0)
            xy, yx = z @ sx @ sy, z @ sy @ sx
            out[:, r, c] = {"xy": xy, "yx": yx, "avg": (xy + yx) / 2}[order]
    return out


ORIGINS = [(0, 0), (3, 3), (0, 3), (3, 0), (1, 2)]  # corners of the 5 x 6 grid and inside


@pytest.mark.parametrize("order", ["xy", "yx", "avg"])
@pytest.mark.parametrize("origin", ORIGINS)
def test_propagate_matches_explicit_powers(order, origin):
    A, B = _operators()
    block = torch.randn(2, 2, 3, D, dtype=torch.float64)
    out = propagate(block, A, B, (5, 6), origin, order)
    torch.testing.assert_close(out, _reference(block, A, B, (5, 6), origin, order))
    top, left = origin
    assert torch.equal(out[:, top : top + 2, left : left + 3], block)


def test_per_sample_origins_equal_per_sample_calls():
    A, B = _operators(1)
    block = torch.randn(len(ORIGINS), 2, 3, D, dtype=torch.float64)
    for order in ("xy", "yx", "avg"):
        batched = propagate(block, A, B, (5, 6), torch.tensor(ORIGINS), order)
        for i, origin in enumerate(ORIGINS):
            single = propagate(block[i : i + 1], A, B, (5, 6), origin, order)
            torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-12)


def test_zero_operators_copy_the_nearest_edge():
    zero = torch.zeros(D, D)
    block = torch.randn(3, 2, 2, D)
    out = propagate(block, zero, zero, (4, 5), torch.tensor([[0, 0], [2, 3], [1, 1]]))
    rows = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1]])  # clamp(r - top, 0, 1)
    cols = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 1, 1, 1]])
    for i in range(3):
        assert torch.equal(out[i], block[i][rows[i]][:, cols[i]])


@pytest.mark.parametrize("start", [0, 2, 4])
def test_propagate_1d_matches_explicit_powers(start):
    A, _ = _operators(2)
    span = torch.randn(3, 3, D, dtype=torch.float64)
    out = propagate_1d(span, A, 7, start)
    for t in range(7):
        t0 = min(max(t, start), start + 2)
        torch.testing.assert_close(out[:, t], span[:, t0 - start] @ _steps(A, t - t0))
    assert torch.equal(out[:, start : start + 3], span)


def test_propagate_1d_per_sample_and_equals_one_row_grid():
    A, B = _operators(3)
    span = torch.randn(3, 3, D, dtype=torch.float64)
    starts = torch.tensor([0, 4, 2])
    batched = propagate_1d(span, A, 7, starts)
    for i, s in enumerate(starts.tolist()):
        torch.testing.assert_close(batched[i : i + 1], propagate_1d(span[i : i + 1], A, 7, s))
    for order in ("xy", "yx", "avg"):
        origin = torch.stack([torch.zeros_like(starts), starts], dim=1)
        grid = propagate(span.unsqueeze(1), A, B, (1, 7), origin, order)
        torch.testing.assert_close(grid[:, 0], batched)


def test_span_filling_the_whole_length_and_bad_start():
    A, _ = _operators()
    span = torch.randn(2, 4, D, dtype=torch.float64)
    assert torch.equal(propagate_1d(span, A, 4, 0), span)
    with pytest.raises(ValueError, match="outside the grid"):
        propagate_1d(span, A, 6, 3)


@pytest.mark.parametrize(
    "param, image_count", [("full", 2 * 16 * 16), ("diag", 2 * 16), ("lowrank:3", 4 * 16 * 3)]
)
def test_parameter_counts(param, image_count):
    image = build_method("qbheat", {"param": param}, 16, "image", "token")
    text = build_method("qbheat", {"param": param}, 16, "text", "token")
    assert sum(p.numel() for p in image.parameters()) == image_count
    assert sum(p.numel() for p in text.parameters()) == image_count // 2


@pytest.mark.parametrize("bad", ["lowrank", "lowrank:0", "lowrank:x", "Full", "diag:2", ""])
def test_bad_param_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="full, diag or lowrank:R"):
        resolve_options("qbheat", {"param": bad})


def test_bad_order_is_a_config_error():
    with pytest.raises(ConfigError, match="avg, xy, yx|xy, yx, avg"):
        resolve_options("qbheat", {"order": "zz"})


def test_rank_must_be_below_width():
    with pytest.raises(ConfigError, match="rank"):
        build_method("qbheat", {"param": "lowrank:16"}, 16, "image", "token")


@pytest.mark.parametrize("param", ["full", "diag", "lowrank:8"])
def test_stable_at_init_on_a_16x16_grid(param):
    """8 steps from an 8 x 8 block at D = 128: no power grows a feature, the fill is finite."""
    method = build_method("qbheat", {"param": param, "position": "quadrant"}, 128, "image", "token")
    eye = torch.eye(128)
    with torch.no_grad():
        for op in (method.A(), method.B()):
            for step in ((eye + op).T, (eye - op).T):
                powers = torch.stack([torch.linalg.matrix_power(step, k) for k in range(1, 9)])
                assert torch.linalg.matrix_norm(powers, ord=2).max() <= 1 + 1e-5
        visible = method.choose_visible(4, (16, 16), torch.Generator().manual_seed(0))
        assert visible.shape == (8, 8)
        latent = torch.randn(4, 64, 128)
        filled = method.fill(latent, visible, (16, 16))
    assert torch.isfinite(filled).all()
    assert filled.norm(dim=-1).max() <= latent.norm(dim=-1).max() * (1 + 1e-5)


@pytest.mark.parametrize("modality, grid", [("image", (6, 8)), ("text", (12,))])
@pytest.mark.parametrize("param", ["full", "diag", "lowrank:2"])
def test_plugin_fill(modality, grid, param):
    method = build_method("qbheat", {"param": param, "order": "avg"}, 8, modality, "token")
    visible = method.choose_visible(3, grid, torch.Generator().manual_seed(5))
    again = method.choose_visible(3, grid, torch.Generator().manual_seed(5))
    assert torch.equal(visible.index, again.index) and torch.equal(visible.origin, again.origin)
    assert visible.count == grid_size(grid) // 4
    latent = torch.randn(3, visible.count, 8, requires_grad=True)
    filled = method.fill(latent, visible, grid)
    assert filled.shape == (3, grid_size(grid), 8)
    assert torch.equal(filled.gather(1, visible.index[..., None].expand(-1, -1, 8)), latent)
    filled.square().sum().backward()
    assert latent.grad.abs().sum() > 0
    # Every operator can learn from the first step (lowrank: V, as U V^T starts at zero).
    learnable = [p for n, p in method.named_parameters() if not n.endswith(".u")]
    assert learnable and all(p.grad.abs().sum() > 0 for p in learnable)


def test_fill_needs_block_geometry():
    method = build_method("qbheat", {}, 8, "image", "token")
    visible = block_visible(2, (4, 4), (2, 2), "center", torch.Generator())
    visible.origin = None
    with pytest.raises(ValueError, match="contiguous block"):
        method.fill(torch.randn(2, 4, 8), visible, (4, 4))


@pytest.mark.parametrize("encoder", ["vit-micro", "cnn-resnet-micro"])
def test_pretraining_step_with_token_and_dense_encoders(encoder):
    spec = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
    enc = build_encoder(encoder, spec)
    method = build_method("qbheat", {}, 32, "image", enc.kind)
    assert isinstance(method, QBHeat) and enc.kind in method.encoder_kinds
    model = MaskedPretrainer(spec, enc, method, 32, 1, 2)
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    out = model(x, torch.Generator().manual_seed(0))
    assert out.visible.shape == (4, 4) and torch.isfinite(out.loss)
    out.loss.backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
