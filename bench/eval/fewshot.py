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

FEWSHOT_L2 = 1e-4  # the few-shot linear probes' penalty (fixed: see fewshot_metrics)


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
    picked, y = [], y.cpu()
    for c in torch.unique(y):
        members = (y == c).nonzero().squeeze(1)
        take = per_class if per_class is not None else max(1, round(share * len(members)))
        picked.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(picked).sort().values


def fewshot_draw(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, cfg,
                 draw: int) -> dict[str, float]:
    """The four few-shot figures on draw `draw` of the labelled subsets."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + draw)
    recipe, k = ProbeRecipe(steps=cfg.probe_steps, l2=FEWSHOT_L2), cfg.fewshot_k
    subsets = {f"linear_{name}_top1": draw_subset(train_y, gen, share=share).to(train_f.device)
               for share, name in SHARES}
    shots = draw_subset(train_y, gen, per_class=k).to(train_f.device)
    subsets[f"linear_{k}shot_top1"] = shots
    out = {metric: linear_probe(train_f[idx], train_y[idx], test_f, test_y, cfg.seed, recipe)
           for metric, idx in subsets.items()}
    out[f"knn_{k}shot_top1"] = knn_top1(train_f[shots], train_y[shots], test_f, test_y,
                                        cfg.knn_k, cfg.knn_temperature)
    return out


def fewshot_metrics(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, cfg
                    ) -> dict[str, float]:
    """The four few-shot figures, each the mean over `cfg.fewshot_draws` draws. The linear
    probes use the fixed penalty FEWSHOT_L2: a few labelled examples leave no share to choose
    one on, and a penalty chosen on the whole training split is too strong for a handful of
    examples (the data term is a mean over them)."""
    train_y, test_y = train_y.to(train_f.device), test_y.to(test_f.device)
    draws = [fewshot_draw(train_f, train_y, test_f, test_y, cfg, i)
             for i in range(cfg.fewshot_draws)]
    return {m: sum(d[m] for d in draws) / len(draws) for m in draws[0]}
