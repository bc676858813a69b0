"""Few-shot probes: stratified seeded subsets, the k check, and the averaged metrics."""

from __future__ import annotations

import pytest
import torch

from bench.core.errors import ConfigError
from bench.eval.fewshot import check_fewshot, draw_subset, fewshot_draw, fewshot_metrics
from tests.helpers import tiny_config


def labels() -> torch.Tensor:
    return torch.tensor([0] * 200 + [1] * 50 + [2] * 7)


def test_subsets_are_stratified_seeded_and_distinct_across_draws():
    y = labels()
    shots = draw_subset(y, torch.Generator().manual_seed(0), per_class=5)
    assert torch.bincount(y[shots]).tolist() == [5, 5, 5]
    share = draw_subset(y, torch.Generator().manual_seed(0), share=0.1)
    assert torch.bincount(y[share]).tolist() == [20, 5, 1]  # rounded, at least one
    again = draw_subset(y, torch.Generator().manual_seed(0), per_class=5)
    other = draw_subset(y, torch.Generator().manual_seed(1), per_class=5)
    assert torch.equal(shots, again) and not torch.equal(shots, other)


def test_k_above_the_smallest_class_is_refused_in_one_line():
    check_fewshot(7, labels(), ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"fewshot_k=8: .* only 7 examples of class 'c'") as err:
        check_fewshot(8, labels(), ["a", "b", "c"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="only 0 examples of class 'd'"):
        check_fewshot(1, labels(), ["a", "b", "c", "d"])  # a class absent from the split


def test_fewshot_metrics_average_over_draws():
    gen = torch.Generator().manual_seed(0)
    y = labels()
    train_f = torch.nn.functional.one_hot(y, 3).float() * 4 + torch.randn(len(y), 3, generator=gen)
    test_y = torch.tensor([0, 1, 2] * 20)
    test_f = torch.nn.functional.one_hot(test_y, 3).float() * 4
    cfg = tiny_config(fewshot_k=3, fewshot_draws=2)
    out = fewshot_metrics(train_f, y, test_f, test_y, cfg)
    assert set(out) == {"linear_1pct_top1", "linear_10pct_top1", "linear_3shot_top1",
                        "knn_3shot_top1"}
    assert all(v == 1.0 for v in out.values())  # separable: every draw is right
    noisy = torch.randn(len(y), 3, generator=gen)  # no signal: the draws differ
    out = fewshot_metrics(noisy, y, test_f, test_y, cfg)
    draws = [fewshot_draw(noisy, y, test_f, test_y, cfg, i) for i in range(2)]
    assert draws[0] != draws[1]
    assert out == pytest.approx({m: (draws[0][m] + draws[1][m]) / 2 for m in out})
