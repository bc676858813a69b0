"""QB-Heat: exact maths of every reading of the extrapolation against explicit loops, the
commutator penalty and the operator diagnostics on known operators, and the plugin."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import bench.models.cnn  # noqa: F401  (registers the CNN encoder presets)
from bench.core.errors import ConfigError, IncompatibleError
from bench.core.spec import DataSpec
from bench.models.encoders import build_encoder
from bench.models.pretrainer import MaskedPretrainer
from bench.ops.masking import block_visible, grid_size
from bench.plan.sweep import resolve_run
from methods import method_cards
from methods.base import build_method
from methods.qbheat import QBHeatOptions
from methods.qbheat.method import (
    QBHeat,
    operator_diagnostics,
    propagate,
    propagate_1d,
    propagate_from_nearest,
    standardise,
)
from tests.helpers import tiny_config

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
        method_cards().get("qbheat").options({"param": bad})


def test_bad_order_is_a_config_error():
    with pytest.raises(ConfigError, match="avg, xy, yx|xy, yx, avg"):
        method_cards().get("qbheat").options({"order": "zz"})


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


@pytest.mark.parametrize("at", ["encoder", "decoder"])
@pytest.mark.parametrize("encoder", ["vit-micro", "cnn-resnet-micro"])
def test_pretraining_step_with_token_and_dense_encoders(encoder, at):
    spec = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
    enc = build_encoder(encoder, spec)
    method = build_method("qbheat", {"at": at}, 32, "image", enc.kind, encoder_dim=enc.dim)
    assert isinstance(method, QBHeat) and enc.kind in method.encoder_kinds
    assert method.dim == (enc.dim if at == "encoder" else 32) and enc.dim != 32
    model = MaskedPretrainer(spec, enc, method, 32, 1, 2)
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    out = model(x, torch.Generator().manual_seed(0))
    assert out.visible.shape == (4, 4) and torch.isfinite(out.loss)
    out.loss.backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Every reading (order x step x norm) against a loop that applies the stated rule position by
# position, in the paper's column-vector form (A z), with the normalisation written out.


def _n(z: torch.Tensor) -> torch.Tensor:
    """FINOLA's standardisation written out: biased variance over the D channels, eps 1e-6."""
    centred = z - z.mean()
    return centred / torch.sqrt((centred**2).mean() + 1e-6)


def _line(values, A, length, s, step, norm):
    """`values` (S vectors at s..s+S-1) -> `length` vectors, one position at a time."""
    size, out = len(values), []
    for t in range(length):
        if s <= t < s + size:
            out.append(values[t - s])
            continue
        if step == "token":
            z, k, sign = (values[-1], t - (s + size - 1), 1) if t >= s else (values[0], s - t, -1)
        else:
            z = values[(t - s) % size]  # Python's % is the non-negative mod
            k, sign = ((t - s) // size, 1) if t >= s else (math.ceil((s - t) / size), -1)
        for _ in range(k):
            z = z + sign * (A @ (_n(z) if norm else z))
        out.append(z)
    return out


def _reference_2d(block, A, B, grid, origin, order, step, norm):
    """One sample's fill `[h, w, D]`: along x within the block's rows then along y over the
    full width (xy), the other way round (yx), or their mean."""
    (h, w), (hb, wb), (top, left) = grid, block.shape[:2], origin

    def xy():
        rows = [_line(list(block[r]), A, w, left, step, norm) for r in range(hb)]
        cols = [_line([rows[r][x] for r in range(hb)], B, h, top, step, norm) for x in range(w)]
        return torch.stack([torch.stack([cols[x][y] for x in range(w)]) for y in range(h)])

    def yx():
        cols = [_line(list(block[:, c]), B, h, top, step, norm) for c in range(wb)]
        rows = [_line([cols[c][y] for c in range(wb)], A, w, left, step, norm) for y in range(h)]
        return torch.stack([torch.stack(rows[y]) for y in range(h)])

    return {"xy": xy, "yx": yx, "avg": lambda: (xy() + yx()) / 2}[order]()


GRID = (7, 8)  # a 2 x 3 block: up to 3 block steps along y and 2 along x, both sides
BLOCK_ORIGINS = [(0, 0), (5, 5), (0, 5), (5, 0), (2, 3), (3, 1)]
READINGS = list(itertools.product(("xy", "yx", "avg"), ("token", "block"), (False, True)))


@pytest.mark.parametrize("order, step, norm", READINGS)
def test_every_reading_matches_an_explicit_loop(order, step, norm):
    A, B = _operators(4)
    g = torch.Generator().manual_seed(1)
    block = torch.randn(len(BLOCK_ORIGINS), 2, 3, D, generator=g, dtype=torch.float64)
    out = propagate(block, A, B, GRID, torch.tensor(BLOCK_ORIGINS), order, step, norm)
    for i, (top, left) in enumerate(BLOCK_ORIGINS):
        expected = _reference_2d(block[i], A, B, GRID, (top, left), order, step, norm)
        torch.testing.assert_close(out[i], expected)
        assert torch.equal(out[i, top : top + 2, left : left + 3], block[i])
    # An int origin gives what the same origin gives inside a per-sample batch.
    single = propagate(block[4:5], A, B, GRID, BLOCK_ORIGINS[4], order, step, norm)
    torch.testing.assert_close(single[0], out[4], rtol=0, atol=1e-12)


@pytest.mark.parametrize("step, norm", list(itertools.product(("token", "block"), (False, True))))
def test_propagate_1d_every_reading_matches_an_explicit_loop(step, norm):
    A, B = _operators(2)
    span = torch.randn(5, 3, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    starts = torch.tensor([0, 8, 4, 1, 6])  # length 11: 8 positions to fill on each line
    out = propagate_1d(span, A, 11, starts, step, norm)
    for i, s in enumerate(starts.tolist()):
        torch.testing.assert_close(out[i], torch.stack(_line(list(span[i]), A, 11, s, step, norm)))
    origin = torch.stack([torch.zeros_like(starts), starts], dim=1)
    row = propagate(span.unsqueeze(1), A, B, (1, 11), origin, "xy", step, norm)
    torch.testing.assert_close(row[:, 0], out)  # a one-row grid is the 1-D rule


def test_block_step_without_norm_is_the_power_of_a_whole_span():
    """Block step, no norm: the k-th span to the right is the span times ((I + A)^T)^k."""
    A, _ = _operators(5)
    span = torch.randn(2, 3, D, dtype=torch.float64)
    out = propagate_1d(span, A, 12, 2, step="block")
    for k in (1, 2):
        torch.testing.assert_close(out[:, 2 + 3 * k : 5 + 3 * k], span @ _steps(A, k))
    torch.testing.assert_close(out[:, :2], span[:, 1:] @ _steps(A, -1))  # t = 0, 1: one left step


def test_standardise_is_finolas_normalisation():
    z = torch.randn(3, 7, dtype=torch.float64) * 5 + 2
    mean = z.mean(-1, keepdim=True)
    var = ((z - mean) ** 2).mean(-1, keepdim=True)  # biased
    torch.testing.assert_close(standardise(z), (z - mean) / torch.sqrt(var + 1e-6))
    assert torch.equal(standardise(torch.full((1, 4), 3.0)), torch.zeros(1, 4))  # no affine, no NaN


def test_unknown_step_is_refused():
    A, B = _operators()
    with pytest.raises(ValueError, match="block, token"):
        propagate(torch.randn(1, 2, 2, D, dtype=torch.float64), A, B, (4, 4), (0, 0), step="tile")
    with pytest.raises(ConfigError, match="token"):
        method_cards().get("qbheat").options({"step": "tile"})


# ---------------------------------------------------------------------------------------------
# Options, where the fill acts, the commutator penalty, diagnostics


def test_defaults_are_the_papers_reading():
    o = QBHeatOptions()
    assert (o.position, o.at, o.order, o.step, o.norm, o.param, o.commute, o.mask_ratio) == (
        "quadrant", "encoder", "xy", "token", False, "full", 0.0, 0.75)


@pytest.mark.parametrize("raw, match", [
    ({"at": "middle"}, "encoder"), ({"norm": "maybe"}, "bool"), ({"commute": -1}, "commute"),
    ({"commute": "nan"}, "commute"), ({"position": "corner"}, "quadrant"),
])
def test_bad_reading_options_are_config_errors(raw, match):
    with pytest.raises(ConfigError, match=match):
        method_cards().get("qbheat").options(raw)


def _random_operators(method: QBHeat, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for op in (method.A, method.B):
            op.weight.copy_(0.1 * torch.randn(op.weight.shape, generator=g))


@pytest.mark.parametrize("at", ["encoder", "decoder"])
def test_fill_acts_where_at_says(at):
    """at=encoder: the decoder gets proj(fill(encoder features)); at=decoder:
    fill(proj(encoder features)). The method works at that site's width."""
    spec = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
    torch.manual_seed(0)
    encoder = build_encoder("vit-micro", spec)
    method = build_method("qbheat", {"at": at}, 32, "image", "token", encoder_dim=encoder.dim)
    assert method.fill_site(method.options) == at and method.dim == {"encoder": 128, "decoder": 32}[at]
    _random_operators(method)
    model = MaskedPretrainer(spec, encoder, method, 32, 1, 2).eval()
    x = torch.randn(2, 1, 32, 32)
    visible = method.choose_visible(2, spec.grid, torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = encoder.forward_visible(x, visible)
        if at == "encoder":
            filled = model.proj(method.fill(features, visible, spec.grid))
        else:
            filled = method.fill(model.proj(features), visible, spec.grid)
        torch.testing.assert_close(model(x, None, visible).pred, model.decoder(filled))


def test_method_built_at_the_wrong_width_is_refused():
    spec = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
    method = build_method("qbheat", {"at": "encoder"}, 32, "image", "token")  # no encoder_dim
    with pytest.raises(IncompatibleError, match="fills at the encoder \\(width 128\\)"):
        MaskedPretrainer(spec, build_encoder("vit-micro", spec), method, 32, 1, 2)


def test_commute_penalty_value_gradient_and_loss():
    lam = 0.7
    method = build_method("qbheat", {"commute": lam}, 4, "image", "token").double()
    _random_operators(method, seed=3)
    A, B = method.A.weight.detach().clone(), method.B.weight.detach().clone()
    C = A @ B - B @ A
    penalty = method.regularizer()
    torch.testing.assert_close(penalty, lam * C.square().sum())
    penalty.backward()
    # d||C||^2 = 2 <C, dA B - B dA> + 2 <C, A dB - dB A>
    torch.testing.assert_close(method.A.weight.grad, 2 * lam * (C @ B.T - B.T @ C))
    torch.testing.assert_close(method.B.weight.grad, 2 * lam * (A.T @ C - C @ A.T))
    assert build_method("qbheat", {}, 4, "image", "token").regularizer() is None
    diag = build_method("qbheat", {"commute": lam, "param": "diag"}, 4, "image", "token")
    with torch.no_grad():
        diag.A.weight.normal_(), diag.B.weight.normal_()
    assert diag.regularizer().item() == 0.0  # diagonal operators always commute
    with pytest.raises(ConfigError, match="images only"):
        build_method("qbheat", {"commute": lam}, 4, "text", "token")


def test_pretrainer_adds_the_penalty_to_the_objective_only():
    spec = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
    torch.manual_seed(0)
    method = build_method("qbheat", {"commute": 2.0, "at": "decoder"}, 16, "image", "token")
    _random_operators(method)
    model = MaskedPretrainer(spec, build_encoder("vit-micro", spec), method, 16, 1, 2)
    out = model(torch.randn(2, 1, 32, 32), torch.Generator().manual_seed(0))
    assert out.penalty.item() > 0
    torch.testing.assert_close(out.penalty, method.regularizer())
    torch.testing.assert_close(out.objective, out.loss + out.penalty)


def test_operator_diagnostics_on_known_operators():
    a, b = [0.1, -0.2, 0.3], [0.5, 0.0, -0.4]
    d = operator_diagnostics(torch.diag(torch.tensor(a)), torch.diag(torch.tensor(b)))
    assert d["heat_commutator"] == 0.0  # commuting diagonals
    assert d["heat_radius_right"] == pytest.approx(1.3) and d["heat_radius_left"] == pytest.approx(1.2)
    assert d["heat_radius_down"] == pytest.approx(1.5) and d["heat_radius_up"] == pytest.approx(1.4)
    assert d["heat_norm_A"] == pytest.approx(math.sqrt(0.14))
    assert d["heat_norm_B"] == pytest.approx(math.sqrt(0.41))
    # I + A a rotation by theta: radius 1; I - A = 2I - R: eigenvalues 2 - exp(+-i theta).
    theta = 0.3
    rotation = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    d = operator_diagnostics(rotation - torch.eye(2))
    assert set(d) == {"heat_norm_A", "heat_radius_right", "heat_radius_left"}  # text: A only
    assert d["heat_radius_right"] == pytest.approx(1.0)
    assert d["heat_radius_left"] == pytest.approx(math.sqrt(5 - 4 * math.cos(theta)))
    # Matrix units E12, E21: AB - BA = E11 - E22, relative commutator sqrt(2).
    e12, e21 = torch.zeros(2, 2), torch.zeros(2, 2)
    e12[0, 1], e21[1, 0] = 1.0, 1.0
    assert operator_diagnostics(e12, e21)["heat_commutator"] == pytest.approx(math.sqrt(2))
    zero = operator_diagnostics(torch.zeros(3, 3), torch.zeros(3, 3))  # the operators at init
    assert zero["heat_commutator"] == 0.0 and zero["heat_radius_up"] == pytest.approx(1.0)


def test_method_diagnostics_name_the_operators_it_has():
    image = build_method("qbheat", {}, 8, "image", "token").diagnostics()
    text = build_method("qbheat", {}, 8, "text", "token").diagnostics()
    assert set(text) == {"heat_norm_A", "heat_radius_right", "heat_radius_left"}
    assert set(image) == set(text) | {"heat_norm_B", "heat_radius_down", "heat_radius_up",
                                      "heat_commutator"}
    assert image["heat_norm_A"] == 0.0 and image["heat_radius_right"] == pytest.approx(1.0)


# --- like with like: QB-Heat's steps from a random subset, and the quadrant by default


@pytest.mark.parametrize("grid, shape", [((8, 8), (4, 4)), ((7, 5), (3, 2))])
@pytest.mark.parametrize("order", ["xy", "yx", "avg"])
@pytest.mark.parametrize("norm", [False, True])
def test_steps_from_the_nearest_visible_are_the_block_fill_on_a_block(grid, shape, order, norm):
    """From one block, propagating each position from its nearest visible one is QB-Heat's
    own fill (token steps), bit for bit: the generalisation changes nothing where both apply."""
    g = torch.Generator().manual_seed(0)
    A, B = (0.1 * torch.randn(4, 4, dtype=torch.float64, generator=g) for _ in range(2))
    visible = block_visible(6, grid, shape, "random", g)
    latent = torch.randn(6, visible.count, 4, dtype=torch.float64, generator=g)
    block = propagate(latent.view(6, *shape, 4), A, B, grid, visible.origin, order, "token", norm)
    got = propagate_from_nearest(latent, visible.index, grid, (B, A), order, norm)
    assert torch.equal(got, block.flatten(1, 2))


def test_steps_from_a_random_subset():
    """Hand-checked on a 1 x 4 line visible at 0 and 3: position 1 is one right step from 0,
    position 2 one left step from 3 (nearest; ties go to the lower index)."""
    A = torch.tensor([[0.5]], dtype=torch.float64)
    latent = torch.tensor([[[2.0], [10.0]]], dtype=torch.float64)
    out = propagate_from_nearest(latent, torch.tensor([[0, 3]]), (1, 4), (torch.zeros(1, 1), A))
    assert out.view(-1).tolist() == [2.0, 3.0, 5.0, 10.0]


def test_qbheat_fills_a_random_subset_and_refuses_block_steps_there():
    method = build_method("qbheat", {"visible": "random"}, 8, "image", "token")
    visible = method.choose_visible(3, (8, 8), torch.Generator().manual_seed(0))
    assert visible.origin is None and visible.count == 16
    assert "random visible subset" in method.describe((8, 8))
    with pytest.raises(ConfigError, match="step=block"):
        build_method("qbheat", {"visible": "random", "step": "block"}, 8, "image", "token")
    with pytest.raises(IncompatibleError, match="visible=random"):  # no masked convolution
        resolve_run(tiny_config(method="qbheat", encoder="cnn-mobilenetv3", dataset="digits",
                                options={"visible": "random"}))
    # a CNN with masked convolution encodes the subset (bench/models/sparse.py)
    assert resolve_run(tiny_config(method="qbheat", encoder="cnn-resnet-micro", dataset="digits",
                                   options={"visible": "random"})).options["visible"] == "random"


@pytest.mark.parametrize("name", ["mae", "interp"])
def test_a_block_is_a_quadrant_by_default_for_every_method(name):
    """`visible=block` follows QB-Heat's placement: one of the 4 corners (before, a block could
    sit at any of the 25 origins of an 8 x 8 grid)."""
    method = build_method(name, {"visible": "block"}, 8, "image", "token")
    qbheat = build_method("qbheat", {}, 8, "image", "token")
    origins = {tuple(o) for m in (method, qbheat)
               for o in m.choose_visible(400, (8, 8), torch.Generator().manual_seed(1))
               .origin.tolist()}
    assert origins == {(0, 0), (0, 4), (4, 0), (4, 4)}
