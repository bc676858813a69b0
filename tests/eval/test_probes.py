"""The linear probe's penalty is chosen on the training split, never the test split; probes
record per-example outcomes; the tran1 / fine-tune lrs scale with their batch; the same-document
next-sentence checks tell adjacency from topic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.core.outcomes import Outcome, encode, examples_key, read_outcomes, write_outcomes
from bench.data.protocol import EvalSplit
from bench.eval import probes
from bench.eval.probes import L2_GRID, ProbeRecipe, fit_linear_probe
from bench.eval.sentences import next_sentence_top1, same_document_scores
from bench.report.stats import example_variance, paired_difference


def _noisy_task(seed: int, n_train: int = 200, n_test: int = 2000, dims: int = 100):
    """Two classes told apart weakly by 10 of `dims` features: few training examples for as
    many features, so a weakly penalised probe fits the noise and a strong penalty wins."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, dims, generator=g)
    x[:, :10] += 0.3 * (2 * y[:, None] - 1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


FAST = ProbeRecipe(steps=50)


def test_l2_is_chosen_on_validation_and_beats_the_old_fixed_penalty():
    """The old recipe fitted every feature set at L2 = 1e-4; here a penalty from the grid is
    chosen on 20 % of the training split: large on this overfitting-prone task, and better on
    the test split than 1e-4."""
    xtr, ytr, xte, yte = _noisy_task(0)
    chosen = fit_linear_probe(xtr, ytr, xte, yte, seed=0, recipe=FAST)
    fixed = fit_linear_probe(xtr, ytr, xte, yte, seed=0, recipe=ProbeRecipe(steps=50, l2=1e-4))
    assert chosen.l2 in L2_GRID and chosen.l2 >= 1e-2
    assert set(chosen.validation_top1) == set(L2_GRID) and fixed.validation_top1 == {}
    assert chosen.top1 > fixed.top1 + 0.03  # 77.4 % against 72.6 %
    best = max(chosen.validation_top1.values())
    assert chosen.l2 == max(k for k, v in chosen.validation_top1.items() if v == best)


def test_the_test_split_is_scored_once_after_the_choice(monkeypatch):
    xtr, ytr, xte, yte = _noisy_task(1, n_train=120, dims=20)
    seen = []
    real = probes._predict

    def spy(head, x):
        seen.append(x.shape[0])
        return real(head, x)

    monkeypatch.setattr(probes, "_predict", spy)
    a = fit_linear_probe(xtr, ytr, xte, yte, seed=0, recipe=FAST)
    assert seen == [24] * len(L2_GRID) + [2000]  # 20 % of 120 per candidate, then the test
    # The choice never depends on the test split: other test features, the same penalty.
    b = fit_linear_probe(xtr, ytr, torch.randn_like(xte), yte, seed=0, recipe=FAST)
    assert a.l2 == b.l2 and a.validation_top1 == b.validation_top1


def test_outcomes_round_trip_compactly(tmp_path):
    rng = np.random.default_rng(0)
    correct = rng.random(5000) < 0.8
    fractions = np.array([1.0, 0.5, 0.0, 1 / 3])
    outcomes = {"linear_top1": Outcome(correct.astype(float), examples_key(np.arange(5000))),
                "next_sentence_top1": Outcome(fractions, "k")}
    assert len(encode(outcomes)) < 2500  # 5,000 bits packed (625 bytes) + the npz headers
    write_outcomes(tmp_path, outcomes)
    back = read_outcomes(tmp_path)
    assert np.array_equal(back["linear_top1"].scores, correct.astype(float))
    assert back["linear_top1"].key == examples_key(np.arange(5000))
    assert back["next_sentence_top1"].scores == pytest.approx(fractions, abs=1e-3)
    assert read_outcomes(tmp_path / "missing") == {}


def test_example_variance_of_bernoulli_outcomes():
    """One seed, correctness at rate p on N examples: the test set's variance of the accuracy
    is p(1 - p) / N; with identical seeds (no seed noise) the same."""
    rng = np.random.default_rng(1)
    x = (rng.random(4000) < 0.8).astype(float)
    p = x.mean()
    expected = p * (1 - p) / (len(x) - 1)
    assert example_variance(x[None]).var == pytest.approx(expected)
    assert example_variance(np.stack([x, x, x])).var == pytest.approx(expected)


def test_paired_ci_with_the_test_set_covers_the_population_difference():
    """Two rows with the same accuracy on the population of examples but right on different
    examples, scored on a fresh test set of 300 each time, 3 seeds with small seed noise: the
    seed-only 95 % CI misses the true difference 0 far more often than 5 %; with the test
    set's variance added it covers it about 95 % of the time."""
    rng = np.random.default_rng(2)
    population = 20000
    a_right = rng.random(population) < 0.75
    b_right = np.where(rng.random(population) < 0.5, a_right, rng.random(population) < 0.75)
    b_right[: population // 50] = True  # keep the population means equal after mixing
    gap = a_right.mean() - b_right.mean()
    covered_seed, covered_both, draws = 0, 0, 300
    for _ in range(draws):
        idx = rng.choice(population, 300, replace=False)
        flips = [rng.random((2, 300)) < 0.02 for _ in range(3)]  # seed noise: a few flips
        a = np.stack([np.where(f[0], ~a_right[idx], a_right[idx]) for f in flips]).astype(float)
        b = np.stack([np.where(f[1], ~b_right[idx], b_right[idx]) for f in flips]).astype(float)
        a_by, b_by = dict(enumerate(a.mean(1))), dict(enumerate(b.mean(1)))
        seed_only = paired_difference(a_by, b_by)
        both = paired_difference(a_by, b_by, test=example_variance(a - b))
        covered_seed += seed_only.ci_low <= gap <= seed_only.ci_high
        covered_both += both.ci_low <= gap <= both.ci_high
    assert covered_seed / draws < 0.6
    assert covered_both / draws >= 0.9


def test_same_document_checks_tell_adjacency_from_topic():
    """A topic detector (each sentence = its document's direction + noise) finds j + 1 among
    other documents' sentences always, but among its own document's only by chance; features
    that drift smoothly along a document find j + 1 among its own sentences too, in both
    directions alike (cosine is symmetric)."""
    g = torch.Generator().manual_seed(0)
    docs, per_doc, dim = 12, 20, 64
    document = torch.arange(docs).repeat_interleave(per_doc)
    topic = torch.randn(docs, dim, generator=g)[document] * 5
    noisy_topic = topic + torch.randn(docs * per_doc, dim, generator=g)
    assert next_sentence_top1(noisy_topic, document, seed=0) > 0.95
    chance = same_document_scores(noisy_topic, document, seed=0).mean().item()
    assert abs(chance - 0.1) < 0.06
    t = torch.arange(per_doc).repeat(docs).float()[:, None]
    drift = torch.cat([torch.cos(t / 3), torch.sin(t / 3)], 1) + 0.01 * torch.randn(
        docs * per_doc, 2, generator=g)
    forward = same_document_scores(drift, document, seed=0)
    backward = same_document_scores(drift, document, seed=0, reverse=True)
    assert forward.mean() > 0.6 and backward.mean() > 0.6  # j - 1 ties with j + 1 if drawn
    assert abs(forward.mean() - backward.mean()) < 0.15
    assert len(forward) == docs * (per_doc - 1)


def test_same_document_distractors_never_the_pair_itself():
    """Constant features tie everywhere: each anchor scores 1 / (1 + distractors) exactly, so
    no distractor was the target itself (which would tie too) or the anchor; a document of two
    sentences has no other sentence and gives no pair."""
    document = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    scores = same_document_scores(torch.ones(9, 4), document, seed=0, distractors=3)
    assert len(scores) == 2 + 3 and torch.allclose(scores, torch.full((5,), 0.25))
    x = torch.eye(9)  # orthogonal: the target scores 0 like every distractor -> a tie
    assert math.isclose(same_document_scores(x, document, seed=0, distractors=3).mean(), 0.25)


def test_tran1_and_finetune_lrs_scale_with_their_own_batch(monkeypatch):
    """The README's rule: the lr keys are stated at batch 256 and the recipe trains at
    lr x batch / 256 (MAE's convention), with the recipe's own batch, not the pretraining's."""
    from bench.eval import supervised
    from tests.helpers import tiny_config

    seen = {}

    def record(model, data, train, test, recipe, device, seed, desc):
        seen[desc] = recipe.lr
        return torch.ones(len(test), dtype=torch.bool)

    monkeypatch.setattr(supervised, "train_classifier", record)
    cfg = tiny_config(tran1_batch_size=64, finetune_batch_size=512, batch_size=32)
    split = EvalSplit(torch.zeros(2, 1), torch.tensor([0, 1]))
    for name in ("Tran1Probe", "FinetuneClassifier"):
        monkeypatch.setattr(supervised, name, lambda encoder, classes: torch.nn.Linear(1, 1))
    supervised.encoder_protocols(torch.nn.Linear(1, 1), None, split, split, cfg,
                                 torch.device("cpu"), ("tran1", "finetune"))
    assert seen == {"tran1": pytest.approx(1e-3 * 64 / 256),
                    "finetune": pytest.approx(5e-4 * 512 / 256)}
