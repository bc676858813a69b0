"""Linear predictability of neighbouring features: exact on a known linear recurrence (R^2 = 1
within the bound the ridge penalty and float64 rounding give, the map recovered, its powers
composing, a fill's own step maps matched), near 0 on i.i.d. noise, the baselines where they
must be 1 (the content baseline on features made of position and content only), composition
failing where the d-step maps are not powers of one map, the content sums assembled by blocks
equal to the explicit regression's, pairs counted only where both ends are real, the penalty
chosen on training data only, and the metrics of real runs (images, text blocks, sentences)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.eval import linpred
from bench.eval.linpred import Moments, PairSums, fit_all, linpred_metrics, summarise
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


U64 = torch.finfo(torch.float64).eps / 2  # float64's unit roundoff


def ridge_error(fitted: Moments, penalty: float) -> float:
    """Bound on ||M - M*||_2 / ||M*||_2 for a map M* that is exact on the pairs: ridge gives
    M - M* = -(C + l s I)^-1 l s M* (C the inputs' covariance, s = tr(C) / D, l the penalty;
    the intercept absorbs the means), whose norm is at most l s / sigma_min(C) = l x the ratio
    of C's mean to its smallest eigenvalue."""
    mx = fitted.sx / fitted.n
    cov = fitted.sxx / fitted.n - torch.outer(mx, mx)
    return penalty * (cov.diagonal().mean() / torch.linalg.eigvalsh(cov)[0]).item()


def r2_deficit_bound(test: Moments, fitted: Moments, relative_error: float,
                     m: torch.Tensor, b: torch.Tensor) -> float:
    """Bound on 1 - R^2 on `test` of a predictor z M + b whose error is (z - mean_fit) E with
    ||E||_2 <= relative_error (M* orthogonal: ||M*||_2 = 1, so SST = sum ||z - mean_test||^2):
    relative_error^2 x sum ||z - mean_fit||^2 / sum ||z - mean_test||^2, plus the rounding of
    SSE from the float64 moments (each of its terms a sum of n + D^2 products, each within
    (n + D^2) u of exact: Higham's gamma), relative to SST."""
    mx, mt = fitted.sx / fitted.n, test.sx / test.n
    around_test = test.sxx.trace() - test.n * mt @ mt
    around_fit = around_test + test.n * (mt - mx) @ (mt - mx)
    terms = (test.syy + 2 * (m * test.sxy).abs().sum() + (m * (test.sxx @ m)).abs().sum()
             + 2 * (b @ test.sy).abs() + 2 * (b @ (test.sx @ m)).abs() + test.n * b @ b)
    rounding = (test.n + len(m) ** 2) * U64 * terms / test.sst()
    return (relative_error**2 * around_fit / around_test + rounding).item()


def test_known_linear_recurrence_gives_r2_one_and_recovers_the_map():
    """Tolerances from the numerics, not from one machine: the bias of the chosen ridge
    penalty (x the inputs' condition) and float64 rounding (`r2_deficit_bound`); the moments
    of float64 features are summed in float64 (float32 products left 1e-6 of noise, which
    decided the penalty on some CPUs)."""
    fit, val, test = sums_of(recurrence_maps(60, 0), recurrence_maps(20, 1),
                             recurrence_maps(40, 2))
    fits = fit_all(fit, val, test)
    assert set(fits) == {(a, d) for a in "xy" for d in (1, 2, 3, 4)}
    bounds = {}
    for (axis, d), f in fits.items():
        step = torch.linalg.matrix_power(TX if axis == "x" else TY, d)
        fitted = fit.moments[(axis, d)] + val.moments[(axis, d)]
        error = ridge_error(fitted, f.penalty)
        deficit = r2_deficit_bound(test.moments[(axis, d)], fitted, error, f.map, f.intercept)
        assert 0 <= 1 - f.r2 <= deficit < 1e-9  # the bound itself is small: l = 1e-6 chosen
        assert torch.linalg.matrix_norm(f.map - step, 2) <= error + 1e-12
        assert f.identity_r2 < 0.9  # a rotation is not the identity
        bounds[(axis, d)] = deficit, error
    metrics = summarise(fits, test, {"x": TX, "y": TY})
    for d in (1, 2, 3, 4):
        worst, error = max(bounds[(a, d)] for a in "xy")
        assert 1 - metrics[f"linpred_r2_d{d}"] <= worst
        assert 1 - metrics[f"linpred_heat_r2_d{d}"] <= worst
        assert metrics[f"linpred_heat_gap_d{d}"] <= error * math.sqrt(D)  # ||.||_F <= sqrt(D) ||.||_2
        # the d = 1 map's powers: d steps of relative error e stay within (1 + e)^d - 1
        one = max(bounds[(a, 1)][1] for a in "xy")
        composed = max(r2_deficit_bound(test.moments[(a, d)], fit.moments[(a, 1)]
                                        + val.moments[(a, 1)], (1 + one) ** d - 1,
                                        *linpred.composed(fits[(a, 1)], d)) for a in "xy")
        assert 1 - metrics[f"linpred_composed_r2_d{d}"] <= composed < 1e-9
        # position and the input's mean token (no neighbour) explain little of a rotation
        assert metrics[f"linpred_content_r2_d{d}"] < 0.5
    # a wrong step map is told apart from the right one
    wrong = summarise(fits, test, {"x": TY, "y": TX})
    assert wrong["linpred_heat_r2_d1"] < 0.9 and wrong["linpred_heat_gap_d1"] > 0.1


def test_composition_fails_where_the_d_step_maps_are_not_powers_of_one_map():
    """Along x the features alternate between two independent vectors a, b per map (a b a b
    ...): z(x + 2) = z(x) exactly, but z(x + 1) is not predictable from z(x), so the fitted
    d = 1 map applied twice predicts nothing while the fitted d = 2 map is exact."""
    def alternating(n: int, seed: int) -> torch.Tensor:
        ab = torch.randn(n, 2, D, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(seed))
        return ab[:, torch.arange(W) % 2].unsqueeze(1).expand(n, H, W, D).contiguous()

    fit, val, test = sums_of(alternating(60, 0), alternating(20, 1), alternating(40, 2))
    fits = fit_all(fit, val, test)
    metrics = summarise(fits, test)
    assert fits[("x", 1)].r2 < 0.2 and fits[("x", 2)].r2 > 0.999
    composed = test.moments[("x", 2)].r2(*linpred.composed(fits[("x", 1)], 2))
    assert composed < 0.2
    # y: z(x, y + d) = z(x, y), the identity, which composes: the mean over axes shows both
    assert metrics["linpred_composed_r2_d2"] == pytest.approx((composed + 1.0) / 2, abs=1e-6)


def test_content_baseline_explains_features_made_of_position_and_content():
    """z = P[position] + v (one vector per input): the target position's one-hot and the
    input's mean token (P's mean + v) predict every target, with no neighbour."""
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1, H, W, D, generator=gen, dtype=torch.float64)

    def made(n: int) -> torch.Tensor:
        return table + torch.randn(n, 1, 1, D, generator=gen, dtype=torch.float64)

    fits = fit_all(*sums_of(made(60), made(20), made(40)))
    assert all(f.content_r2 > 0.999 for f in fits.values())
    assert all(f.mean_r2 < 0.9 for f in fits.values())  # position alone is not enough


def test_content_sums_by_blocks_equal_the_explicit_regression():
    """The content baseline's moments, assembled from per-input sums, are those of the
    regression on explicit rows [one-hot of the target position, the input's mean token]."""
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 3, 6, D, generator=gen, dtype=torch.float64)
    valid = torch.rand(5, 3, 6, generator=gen) > 0.3
    sums = PairSums(("x", "y"), (3, 6), D, CPU)
    sums.add(maps, valid)
    mean = (maps * valid.unsqueeze(-1)).sum((1, 2)) / valid.sum((1, 2)).unsqueeze(-1)
    for axis, d in sums.moments:
        src = (slice(None), slice(None), slice(None, -d)) if axis == "x" else (
            slice(None), slice(None, -d))
        dst = (slice(None), slice(None), slice(d, None)) if axis == "x" else (
            slice(None), slice(d, None))
        keep = valid[src] & valid[dst]
        where = torch.zeros(5, 3, 6, dtype=torch.bool)
        where[dst] = keep
        b, r, c = where.nonzero(as_tuple=True)
        rows = torch.cat([torch.nn.functional.one_hot(r * 6 + c, 18).double(), mean[b]], 1)
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        explicit = Moments(0, z(18 + D), z(D), z(18 + D, 18 + D), z(18 + D, D), z(()),
                           z(3, 6, D), z(3, 6))
        explicit.add(rows, maps[b, r, c])
        built = sums.content_moments((axis, d))
        for name in ("n", "sx", "sy", "sxx", "sxy", "syy"):
            torch.testing.assert_close(getattr(built, name), getattr(explicit, name),
                                       rtol=1e-12, atol=1e-12, check_dtype=False)


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
        assert {f"linpred_{k}_d{d}" for k in ("r2", "identity_r2", "mean_r2", "content_r2",
                                              "composed_r2")
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
