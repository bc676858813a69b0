"""Fill diagnostics: distance to the visible part, and the held-out loss split by it."""

from __future__ import annotations

import pytest
import torch

from bench.core.spec import DataSpec
from bench.data.images import EvalSplit
from bench.eval.diagnostics import fill_diagnostics, recon_loss_by_distance, visible_distance
from bench.eval.pretext import reconstruction_loss
from bench.models.encoders import build_encoder
from bench.models.pretrainer import MaskedPretrainer
from bench.ops.masking import Visible, random_visible
from methods.base import build_method

SPEC = DataSpec("image", (8, 8), patch_size=4, in_chans=1)


def test_distance_to_a_corner_block_is_chebyshev():
    """Steps along the farther axis: max(rows beyond the block, columns beyond it)."""
    rows = torch.tensor([0, 0, 1, 2, 3]).view(5, 1)  # a 2 x 3 block at the top left of 5 x 6
    cols = torch.tensor([0, 0, 0, 1, 2, 3]).view(1, 6)
    top_left = Visible(torch.tensor([[0, 1, 2, 6, 7, 8]]), torch.tensor([[0, 0]]), (2, 3))
    assert torch.equal(visible_distance(top_left, (5, 6))[0].view(5, 6), torch.maximum(rows, cols))
    bottom_right = Visible(torch.tensor([[21, 22, 23, 27, 28, 29]]), torch.tensor([[3, 3]]), (2, 3))
    assert torch.equal(visible_distance(bottom_right, (5, 6))[0].view(5, 6),
                       torch.maximum(rows.flip(0), cols.flip(1)))


def test_distance_to_a_random_subset_equals_brute_force():
    v = random_visible(3, 35, 6, torch.Generator().manual_seed(1))
    d = visible_distance(v, (5, 7))
    for b in range(3):
        seen = [divmod(i, 7) for i in v.index[b].tolist()]
        for p in range(35):
            r, c = divmod(p, 7)
            assert d[b, p] == min(max(abs(r - vr), abs(c - vc)) for vr, vc in seen)
    text = random_visible(2, 12, 3, torch.Generator().manual_seed(2))
    d1 = visible_distance(text, (12,))
    for b in range(2):
        for t in range(12):
            assert d1[b, t] == min(abs(t - i) for i in text.index[b].tolist())


class _Images:
    """The two members of the data protocol the diagnostics read: a test split, and the
    identity as eval_batch (the inputs are already normalised)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def eval_split(self, split: str, limit: int | None = None) -> EvalSplit:
        x = self.x[:limit]
        return EvalSplit(x, torch.zeros(len(x), dtype=torch.long))

    def eval_batch(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("method", ["qbheat", "mae"])
def test_loss_by_distance_is_the_per_bin_mean_and_sums_to_recon_loss(method):
    torch.manual_seed(0)
    encoder = build_encoder("vit-micro", SPEC)
    fill = build_method(method, {}, 32, "image", "token", encoder_dim=encoder.dim)
    model = MaskedPretrainer(SPEC, encoder, fill, 32, 1, 2)
    data = _Images(torch.randn(10, 1, 32, 32))
    device = torch.device("cpu")
    split = data.eval_split("test")
    by_distance = recon_loss_by_distance(model, iter([split.x[:6], split.x[6:]]), device, 3)
    # Brute force: the same seeded masks, every scored position put in its bin by a loop.
    gen = torch.Generator().manual_seed(3)
    sums, counts = {}, {}
    with torch.no_grad():
        for x in (split.x[:6], split.x[6:]):
            out = model.eval()(x, gen)
            loss = model.position_loss(x, out.pred)
            for b in range(len(x)):
                seen = [divmod(i, 8) for i in out.visible.index[b].tolist()]
                for p in (~out.visible.mask(64)[b]).nonzero().flatten().tolist():
                    r, c = divmod(p, 8)
                    d = min(3, min(max(abs(r - vr), abs(c - vc)) for vr, vc in seen))
                    sums[d] = sums.get(d, 0.0) + loss[b, p].item()
                    counts[d] = counts.get(d, 0) + 1
    names = {1: "recon_loss_d1", 2: "recon_loss_d2", 3: "recon_loss_d3plus"}
    assert set(by_distance) == {names[d] for d in counts}
    for d, n in counts.items():
        assert by_distance[names[d]] == pytest.approx(sums[d] / n, rel=1e-5)
    if method == "qbheat":  # a 4x4 corner block on 8x8: hidden positions 1..4 steps away
        assert counts == {1: 90, 2: 110, 3: 280}  # 10 images x (9, 11, 13 + 15)
    # Each image has the same number of hidden positions: the bins, weighted by their counts,
    # give the recon_loss a run reports (the same seeded masks).
    total = sum(by_distance[names[d]] * n for d, n in counts.items()) / sum(counts.values())
    assert total == pytest.approx(reconstruction_loss(model, data, split, 6, device, 3), rel=1e-5)
    metrics = fill_diagnostics(model, data, None, 6, device, 3)
    assert {k: v for k, v in metrics.items() if k.startswith("recon")} == by_distance
    assert any(k.startswith("heat_") for k in metrics) == (method == "qbheat")


def test_bigger_grid_blocks_and_distances_follow_the_patch_size(digits):
    """digits at 2-px patches: a 16x16 grid, QB-Heat's quarter block 8x8 (64 visible, as the
    random subset), hidden positions 1..8 steps away, and the d≥5 bin (part of d≥3) reported."""
    from bench.data.geometry import with_patch_size

    data = with_patch_size(digits, 2)
    spec = data.spec
    assert spec.grid == (16, 16) and spec.patch_size == 2
    torch.manual_seed(0)
    encoder = build_encoder("vit-micro", spec)
    fill = build_method("qbheat", {}, 32, "image", "token", encoder_dim=encoder.dim)
    model = MaskedPretrainer(spec, encoder, fill, 32, 1, 2)
    visible = fill.choose_visible(2, spec.grid, torch.Generator().manual_seed(0))
    assert visible.shape == (8, 8) and visible.count == 64
    assert int(visible_distance(visible, spec.grid).max()) == 8
    device = torch.device("cpu")
    x = data.eval_batch(data.test_x[:4])
    got = recon_loss_by_distance(model, iter([x]), device, 1)
    assert set(got) == {"recon_loss_d1", "recon_loss_d2", "recon_loss_d3plus", "recon_loss_d5plus"}
    # Brute force for d≥5 on the same seeded masks.
    with torch.no_grad():
        out = model.eval()(x, torch.Generator().manual_seed(1))
        loss = model.position_loss(x, out.pred)
        far = visible_distance(out.visible, spec.grid) >= 5
    assert got["recon_loss_d5plus"] == pytest.approx(loss[far].mean().item(), rel=1e-5)
    # On 8x8 nothing is 5 away: no such bin.
    assert "recon_loss_d5plus" not in recon_loss_by_distance(
        MaskedPretrainer(SPEC, build_encoder("vit-micro", SPEC),
                         build_method("qbheat", {}, 32, "image", "token", encoder_dim=128),
                         32, 1, 2), iter([torch.randn(2, 1, 32, 32)]), device, 1)
