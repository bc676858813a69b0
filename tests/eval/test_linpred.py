"""Linear predictability of neighbouring features: exact on a known linear recurrence (R^2 = 1,
the map recovered, a fill's own step maps matched), near 0 on i.i.d. noise, the baselines
where they must be 1, pairs counted only where both ends are real, the penalty chosen on
training data only, and the metrics of real runs (images, text blocks, sentence level)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.eval import linpred
from bench.eval.linpred import PairSums, fit_all, linpred_metrics, summarise
from bench.models.vit import TransformerEncoder
from tests.helpers import tiny_config

CPU = torch.device("cpu")
D, H, W = 6, 8, 8


def rotations(*angles: float) -> torch.Tensor:
    """A block-diagonal orthogonal map (2-D rotations): its powers stay bounded, and two such
    maps commute, so z(r, c) = z0 Tx^c Ty^r is consistent along both axes."""
    blocks = [torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
              for a in angles]
    return torch.block_diag(*blocks).double()


TX, TY = rotations(0.3, 0.7, 1.1), rotations(0.5, 0.2, 0.9)


def recurrence_maps(n: int, seed: int) -> torch.Tensor:
    """`[n, H, W, D]` feature maps z(r, c) = z0 @ TX^c @ TY^r with a random z0 per map: one
    step right is exactly z @ TX, one step down z @ TY (row vectors)."""
    z0 = torch.randn(n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    cols = torch.stack([torch.linalg.matrix_power(TX, c) for c in range(W)])
    rows = torch.stack([torch.linalg.matrix_power(TY, r) for r in range(H)])
    return torch.einsum("nd,cde,ref->nrcf", z0, cols, rows)


def sums_of(*maps: torch.Tensor, valid=None) -> list[PairSums]:
    out = []
    for m in maps:
        s = PairSums(("x", "y"), m.shape[1:3], m.shape[-1], CPU)
        s.add(m, valid)
        out.append(s)
    return out


def test_known_linear_recurrence_gives_r2_one_and_recovers_the_map():
    fit, val, test = sums_of(recurrence_maps(60, 0), recurrence_maps(20, 1),
                             recurrence_maps(40, 2))
    fits = fit_all(fit, val, test)
    assert set(fits) == {(a, d) for a in "xy" for d in (1, 2, 3, 4)}
    for (axis, d), f in fits.items():
        step = TX if axis == "x" else TY
        assert f.r2 == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(f.map, torch.linalg.matrix_power(step, d), atol=1e-4, rtol=0)
        assert f.identity_r2 < 0.9  # a rotation is not the identity
    metrics = summarise(fits, test, {"x": TX, "y": TY})
    for d in (1, 2, 3, 4):
        assert metrics[f"linpred_r2_d{d}"] == pytest.approx(1.0, abs=1e-6)
        assert metrics[f"linpred_heat_r2_d{d}"] == pytest.approx(1.0, abs=1e-6)
        assert metrics[f"linpred_heat_gap_d{d}"] < 1e-4
    # a wrong step map is told apart from the right one
    wrong = summarise(fits, test, {"x": TY, "y": TX})
    assert wrong["linpred_heat_r2_d1"] < 0.9 and wrong["linpred_heat_gap_d1"] > 0.1


def test_iid_noise_is_not_predictable():
    gen = torch.Generator().manual_seed(0)
    fit, val, test = sums_of(*(torch.randn(n, H, W, D, generator=gen) for n in (80, 20, 60)))
    metrics = summarise(fit_all(fit, val, test), test)
    for d in (1, 2, 3, 4):
        assert abs(metrics[f"linpred_r2_d{d}"]) < 0.02
        assert abs(metrics[f"linpred_mean_r2_d{d}"]) < 0.05
        assert metrics[f"linpred_identity_r2_d{d}"] == pytest.approx(-1.0, abs=0.1)


def test_baselines_score_one_where_they_hold():
    gen = torch.Generator().manual_seed(0)
    # constant along x: identity predicts x-neighbours exactly; only position: the mean does
    along_rows = torch.randn(50, H, 1, D, generator=gen).expand(50, H, W, D).contiguous()
    fits = fit_all(*(sums_of(along_rows[:30], along_rows[30:40], along_rows[40:])))
    assert all(f.identity_r2 == pytest.approx(1.0) for (a, _), f in fits.items() if a == "x")
    by_position = torch.randn(1, H, W, D, generator=gen).expand(50, H, W, D)
    noise = 1e-3 * torch.randn(50, H, W, D, generator=gen)
    fits = fit_all(*(sums_of(*(by_position + noise).split([30, 10, 10]))))
    assert all(f.mean_r2 > 0.99 for f in fits.values())


def test_pairs_count_only_where_both_ends_are_real():
    maps = recurrence_maps(10, 0)
    valid = torch.ones(10, H, W, dtype=torch.bool)
    valid[:, :, -3:] = False  # the last three columns are padding
    maps[:, :, -3:] = 1e6  # and hold garbage, which must not enter any sum
    (sums,) = sums_of(maps, valid=valid)
    assert sums.moments[("x", 1)].n == 10 * H * (W - 3 - 1)
    assert sums.moments[("x", 4)].n == 10 * H * (W - 3 - 4)
    assert sums.moments[("x", 1)].syy < 1e6


def test_penalty_is_chosen_on_training_data_only(monkeypatch):
    """The test pairs never reach the choice: swapping the test set changes the scores, not
    the chosen penalty; and the choice is the best validation R^2."""
    fit, val = sums_of(recurrence_maps(30, 0) + 0.3 * torch.randn(30, H, W, D).double(),
                       recurrence_maps(10, 1) + 0.3 * torch.randn(10, H, W, D).double())
    tests = sums_of(recurrence_maps(10, 2), torch.randn(10, H, W, D).double())
    chosen = [fit_all(fit, val, t)[("x", 1)].penalty for t in tests]
    assert chosen[0] == chosen[1]
    m = fit.moments[("x", 1)]
    scores = {p: val.moments[("x", 1)].r2(*m.ridge(p)) for p in linpred.PENALTIES}
    assert chosen[0] == max(scores, key=scores.get)


def test_linpred_metrics_of_an_encoder_and_the_raw_input(digits):
    cfg = tiny_config(eval_train_limit=40, eval_test_limit=20)
    torch.manual_seed(0)
    encoder = TransformerEncoder(digits.spec, 32, 2, 2)
    for features in (encoder, None):
        metrics = linpred_metrics(cfg, digits, features, CPU)
        assert {f"linpred_{k}_d{d}" for k in ("r2", "identity_r2", "mean_r2")
                for d in (1, 2, 3, 4)} == set(metrics)
        assert all(math.isfinite(v) and v <= 1.0 + 1e-9 for v in metrics.values())
    # raw-input on digits: neighbouring patches of smooth strokes are predictable
    assert metrics["linpred_r2_d1"] > 0.3
    steps = {"x": torch.eye(32), "y": torch.eye(32)}  # (I + 0): the identity baseline again
    with_steps = linpred_metrics(cfg, digits, encoder, CPU, steps)
    assert with_steps["linpred_heat_r2_d2"] == pytest.approx(with_steps["linpred_identity_r2_d2"],
                                                             abs=1e-6)


def test_linpred_on_text_blocks_and_sentences(tmp_path, monkeypatch):
    from bench.data import load_dataset

    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(24):
        (texts / f"{i}.txt").write_text(" ".join(f"The owl {i + k} flew far. It sat down {k}."
                                                 for k in range(6)))
    cfg = tiny_config(eval_train_limit=200, eval_test_limit=200)
    blocks = load_dataset(f"text-dir:{texts}", vocab_size=60, block_length=12)
    sentences = load_dataset(f"text-dir:{texts}", vocab_size=60, granularity="sentence",
                             sentences=3, sentence_length=8)
    for data in (blocks, sentences):
        torch.manual_seed(0)
        encoder = TransformerEncoder(data.spec, 32, 1, 2)
        for features in (encoder, None):  # None: token one-hots / bag of words over slots
            steps = None if features is None else {"x": torch.eye(32)}
            metrics = linpred_metrics(cfg, data, features, CPU, steps)
            assert "linpred_r2_d1" in metrics and "linpred_identity_r2_d1" in metrics
            # the sentence level never compares a fill's steps (they act on other vectors)
            assert ("linpred_heat_r2_d1" in metrics) == (data is blocks and features is not None)
