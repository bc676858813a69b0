"""What makes two runs comparable: the same visible count for every method, fills in float32
under bf16 autocast, and one stated weight-decay rule for every method and parameterisation."""

from __future__ import annotations

import pytest
import torch

import methods
from bench.core.config import RunConfig
from bench.core.spec import DataSpec
from bench.models.build import build_model
from bench.models.pretrainer import MaskedPretrainer
from bench.models.vit import TransformerEncoder
from bench.ops.masking import visible_count
from bench.runtime.optim import build_optimizer, no_decay_names
from methods.base import build_method
from tests.helpers import recorded_fill

RATIOS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9)
LAYOUTS = [("qbheat", {}), ("mae", {}), ("interp", {}), ("mae", {"visible": "block"}),
           ("interp", {"visible": "block"})]


@pytest.mark.parametrize("ratio", RATIOS)
def test_every_method_shows_the_encoder_the_same_number_of_tokens(ratio):
    """Grids 4..16 (square and not), and 1-D text grids: a random subset keeps exactly as many
    positions as QB-Heat's block has, so encoder compute and scored positions match."""
    grids = [(g, g) for g in range(4, 17)] + [(4, 9), (7, 12)] + [(g,) for g in range(4, 17)]
    gen = torch.Generator().manual_seed(0)
    for grid in grids:
        modality = "image" if len(grid) == 2 else "text"
        counts = {}
        for name, options in LAYOUTS:
            method = build_method(name, {"mask_ratio": ratio, **options}, 8, modality, "token")
            visible = method.choose_visible(3, grid, gen)
            n = grid[0] * (grid[1] if len(grid) == 2 else 1)
            assert visible.mask(n).sum(1).eq(visible.count).all()  # distinct positions
            counts[name, tuple(options.items())] = visible.count
        assert set(counts.values()) == {visible_count(grid, ratio)}, (grid, ratio, counts)


def test_visible_count_is_the_block_area_and_matches_mae_where_exact():
    assert visible_count((8, 8), 0.75) == 16 and visible_count((14, 14), 0.75) == 49
    assert visible_count((7, 7), 0.75) == 16  # the 4x4 block (MAE alone kept 12)
    assert visible_count((8, 8), 0.9) == 9 and visible_count((14, 14), 0.9) == 16
    assert visible_count((64,), 0.75) == 16
    with pytest.raises(ValueError, match="hides nothing"):
        visible_count((2, 2), 0.1)


SPECS = {"image": DataSpec("image", (8, 8), patch_size=4, in_chans=1),
         "text": DataSpec("text", (16,), vocab_size=40)}
CASES = [(n, m, {}) for n in methods.METHODS.names()
         for m in sorted(methods.METHODS.get(n).modalities)]
CASES.append(("qbheat", "image", {"at": "decoder"}))  # both fill sites


@pytest.mark.parametrize("name,modality,options", CASES)
def test_fill_runs_in_float32_under_bf16_autocast(name, modality, options):
    """Under bf16 autocast the encoder and decoder round, the fill does not: what the pretrainer
    fills equals the method's float32 fill of the same latent within 1e-5 relative (QB-Heat's
    operators are made non-zero so that its propagation is exercised), at either fill site."""
    spec = SPECS[modality]
    torch.manual_seed(0)
    method = build_method(name, options, 16, modality, "token", encoder_dim=32)
    with torch.no_grad():
        for p in method.parameters():
            p.normal_(std=0.05)
    model = MaskedPretrainer(spec, TransformerEncoder(spec, 32, 1, 2), method, 16, 1, 2)
    x = torch.randn(4, 1, 32, 32) if modality == "image" else torch.randint(4, 40, (4, 16))
    with recorded_fill(method) as calls, torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, torch.Generator().manual_seed(0))
    ((latent, visible, _, out),) = calls
    expected = method.fill(latent.float(), visible, spec.grid)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=0)


def test_regularizer_runs_in_float32_under_bf16_autocast():
    """QB-Heat's commutator penalty under bf16 autocast is the float32 one, as the fill is."""
    torch.manual_seed(0)
    method = build_method("qbheat", {"commute": 1.0}, 16, "image", "token", encoder_dim=32)
    with torch.no_grad():
        for p in method.parameters():
            p.normal_(std=0.05)
    model = MaskedPretrainer(SPECS["image"], TransformerEncoder(SPECS["image"], 32, 1, 2),
                             method, 16, 1, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 1, 32, 32), torch.Generator().manual_seed(0))
    assert out.penalty.dtype == torch.float32
    torch.testing.assert_close(out.penalty, method.regularizer(), rtol=1e-6, atol=0)


def _method_no_decay(method: str, **options) -> set[str]:
    cfg = RunConfig(method=method, options=options, decoder_dim=32, decoder_depth=1,
                    decoder_heads=2)
    model = build_model(cfg, SPECS["image"])
    names = no_decay_names(model)
    params = dict(model.named_parameters())
    shared = {n for n in names if not n.startswith("method.")}
    assert all(params[n].ndim == 1 for n in shared)  # biases and norm weights only
    # The optimizer applies exactly this set: weight decay 0 on these, cfg's on the rest.
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, torch.device("cpu"))
    by_id = {id(p): n for n, p in params.items()}
    undecayed = {by_id[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decayed = {by_id[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert undecayed == names and decayed == set(params) - names
    return names - shared


@pytest.mark.parametrize("method,options,expected", [
    ("mae", {}, {"method.mask_token"}),
    ("interp", {}, set()),
    ("qbheat", {"param": "full"}, {"method.A.weight", "method.B.weight"}),
    ("qbheat", {"param": "diag"}, {"method.A.weight", "method.B.weight"}),
    ("qbheat", {"param": "lowrank:4"}, {"method.A.u", "method.A.v", "method.B.u", "method.B.v"}),
])
def test_no_decay_set_of_each_method_and_parameterisation(method, options, expected):
    """Every parameter a method owns for its fill is exempt from weight decay whatever its
    shape (a full or low-rank operator was decayed and a diagonal one was not); the shared
    network follows one rule (1-D parameters only)."""
    assert _method_no_decay(method, **options) == expected
