"""The `fewshot` protocol: the kNN and linear probes on the same frozen features as `knn` and
`linear`, trained on a small labelled subset of the probe's training split, scored on the
whole test split, and averaged over `fewshot_draws` seeded draws of the subset.

Subsets are drawn per class (stratified): `linear_1pct_top1` and `linear_10pct_top1` take 1 %
and 10 % of each class's examples (rounded, at least one), `linear_{k}shot_top1` and
`knn_{k}shot_top1` take `fewshot_k` examples of each class (default 5). kNN votes among
min(knn_k, subset size) neighbours. Draw i of a run with seed s uses the generator seeded
s x 1,000,003 + i: every row of a comparison sees the same subsets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.core.errors import ConfigError
from bench.eval.probes import ProbeRecipe, knn_top1, linear_probe

SHARES = ((0.01, "1pct"), (0.10, "10pct"))


def check_fewshot(k: int, train_y: Tensor, classes: list[str] | None) -> None:
    """A k above the smallest class of the probe's training split has no subset to draw."""
    counts = torch.bincount(train_y.cpu(), minlength=len(classes or []))
    counts = counts[counts > 0] if classes is None else counts
    smallest = int(counts.argmin())
    if k > int(counts[smallest]):
        name = classes[smallest] if classes else str(smallest)
        raise ConfigError(
            f"fewshot_k={k}: the probe's training split has only {int(counts[smallest])} "
            f"examples of class {name!r}; lower fewshot_k or raise eval_train_limit")


def draw_subset(y: Tensor, generator: torch.Generator, per_class: int | None = None,
                share: float | None = None) -> Tensor:
    """Sorted indices of `per_class` examples of each class present in `y`, or of `share` of
    each class's examples (rounded, at least one)."""
    picked = []
    for c in torch.unique(y.cpu()):
        members = (y.cpu() == c).nonzero().squeeze(1)
        take = per_class if per_class is not None else max(1, round(share * len(members)))
        picked.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(picked).sort().values


def fewshot_metrics(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, cfg
                    ) -> dict[str, float]:
    """The four few-shot figures, each the mean over `cfg.fewshot_draws` draws."""
    train_y, test_y = train_y.to(train_f.device), test_y.to(test_f.device)
    recipe = ProbeRecipe(steps=cfg.probe_steps)
    k = cfg.fewshot_k
    totals: dict[str, float] = {}
    for draw in range(cfg.fewshot_draws):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + draw)
        subsets = {f"linear_{name}_top1": draw_subset(train_y, gen, share=share)
                   for share, name in SHARES}
        shots = draw_subset(train_y, gen, per_class=k)
        subsets[f"linear_{k}shot_top1"] = shots
        for metric, idx in subsets.items():
            idx = idx.to(train_f.device)
            totals[metric] = totals.get(metric, 0.0) + linear_probe(
                train_f[idx], train_y[idx], test_f, test_y, cfg.seed, recipe)
        idx = shots.to(train_f.device)
        totals[f"knn_{k}shot_top1"] = totals.get(f"knn_{k}shot_top1", 0.0) + knn_top1(
            train_f[idx], train_y[idx], test_f, test_y, cfg.knn_k, cfg.knn_temperature)
    return {m: v / cfg.fewshot_draws for m, v in totals.items()}
