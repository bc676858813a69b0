"""The feature probes of a frozen encoder: kNN and the linear probe, and feature extraction.

Every protocol has a fixed recipe and reports final values; the one setting chosen (the linear
probe's L2 penalty) is chosen on a share of the training split, never on the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data.protocol import EvalSplit
from bench.eval.heldout import evaluating
from bench.models.parts import Encoder
from bench.runtime import precision, progress


@torch.no_grad()
def extract_features(
    encoder: Encoder, data, split: EvalSplit, batch_size: int, device: torch.device, desc: str
) -> Tensor:
    """Mean-pooled frozen features `[N, dim]` (float32) of every input of `split`."""
    out = []
    with evaluating(encoder):
        for i in progress.bar(range(0, len(split), batch_size), desc=desc, leave=False,
                              unit="batch"):
            x = data.eval_batch(split.x[i : i + batch_size].to(device))
            pad = None if split.pad_mask is None else split.pad_mask[i : i + batch_size].to(device)
            with precision.autocast(device):
                out.append(encoder.pooled(x, pad).float())
    return torch.cat(out)


@torch.no_grad()
def knn_correct(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> Tensor:
    """Weighted kNN (Wu et al. 2018, as in DINO): cosine similarity, votes exp(sim / T).
    Returns whether each test example is classified right (bool `[N]`)."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    train_f = F.normalize(train_f, dim=1)
    test_f = F.normalize(test_f, dim=1)
    k = min(k, len(train_f))
    correct = []
    for i in range(0, len(test_f), chunk):
        sim, idx = (test_f[i : i + chunk] @ train_f.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, device=sim.device)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        correct.append(votes.argmax(1) == test_y[i : i + chunk])
    return torch.cat(correct)


def knn_top1(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, k: int = 20,
             temperature: float = 0.07, chunk: int = 1024) -> float:
    """Test top-1 of `knn_correct`."""
    return knn_correct(train_f, train_y, test_f, test_y, k, temperature, chunk).float().mean().item()


L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the linear probe's penalties to choose from
VALIDATION_FRACTION = 0.2  # of the probe's training split, held out to choose the penalty


@dataclass
class ProbeRecipe:
    """The linear-probe recipe: multinomial logistic regression on standardised features, L2
    penalty, full-batch L-BFGS (deterministic, no learning rate to tune). The penalty is
    chosen per feature set (raw pixels and a trained encoder want different ones): each of
    `l2_grid` is fitted on the training split less a seeded `validation` share, the best
    on that share (ties: the larger penalty) is refitted on the whole training split, and
    only then is the test split scored. `l2` set: that penalty, no choice."""

    steps: int = 100
    l2_grid: tuple[float, ...] = L2_GRID
    validation: float = VALIDATION_FRACTION
    l2: float | None = None


@dataclass
class LinearProbeResult:
    """The probe's test correctness per example, its penalty and each candidate's validation
    top-1 (empty when the penalty was fixed)."""

    correct: Tensor  # bool [N_test]
    l2: float
    validation_top1: dict[float, float]

    @property
    def top1(self) -> float:
        return self.correct.float().mean().item()


def _standardiser(train_f: Tensor) -> tuple[Tensor, Tensor]:
    """The training features' mean and scale. A feature constant on them (a word absent from
    the training texts) is centred but not scaled: dividing by ~0 would turn its other values
    into huge, untrained logits."""
    mean, std = train_f.mean(0), train_f.std(0)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def _standardise(train_f: Tensor, *others: Tensor) -> list[Tensor]:
    """Features standardised by the training part's statistics (`_standardiser`)."""
    mean, std = _standardiser(train_f)
    return [(f - mean) / std for f in (train_f, *others)]


def _fit(x: Tensor, y: Tensor, num_classes: int, l2: float, steps: int, seed: int) -> nn.Linear:
    """Logistic regression by full-batch L-BFGS from a seeded initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(x.shape[1], num_classes).to(x.device)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=steps, history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head


@torch.no_grad()
def _predict(head: nn.Linear, x: Tensor) -> Tensor:
    return head(x).argmax(1)


def _correct(head: nn.Linear, x: Tensor, y: Tensor) -> Tensor:
    return _predict(head, x) == y


def validation_rows(n: int, share: float, seed: int) -> tuple[Tensor, Tensor]:
    """(fitting, validation) indices of `n` rows: a seeded `share` of them (at least one, and
    never all) held out."""
    n_val = min(n - 1, max(1, round(n * share)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


# What a penalty is chosen by: a score of (predicted labels, true labels), higher is better.
Score = Callable[[Tensor, Tensor], float]


def top1(pred: Tensor, truth: Tensor) -> float:
    return (pred == truth).float().mean().item()


def choose_l2(train_f: Tensor, train_y: Tensor, num_classes: int, seed: int,
              recipe: ProbeRecipe, held_out: Tensor | None = None, score: Score = top1
              ) -> tuple[float, dict[float, float]]:
    """The penalty of `recipe.l2_grid` with the best `score` (default top-1) on a validation
    share of the training split, fitted on the rest (ties: the larger penalty). The share is
    the rows `held_out` marks (bool `[N]`: e.g. whole images of the dense probe's tokens),
    else a seeded `recipe.validation` of them. Only the training split is read."""
    if held_out is None:
        fit_idx, val_idx = (i.to(train_f.device) for i in
                            validation_rows(len(train_f), recipe.validation, seed))
    else:
        fit_idx, val_idx = (~held_out).nonzero().squeeze(1), held_out.nonzero().squeeze(1)
    xfit, xval = _standardise(train_f[fit_idx], train_f[val_idx])
    scores = {}
    for l2 in sorted(recipe.l2_grid):
        head = _fit(xfit, train_y[fit_idx], num_classes, l2, recipe.steps, seed)
        scores[l2] = score(_predict(head, xval), train_y[val_idx])
    best = max(scores.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return best, scores


@dataclass
class LinearHead:
    """A trained linear classifier with the standardisation of its training features, and
    the penalty it was fitted with (`linear_head`)."""

    head: nn.Linear
    mean: Tensor
    std: Tensor
    l2: float
    validation_scores: dict[float, float]

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        return self.head((features - self.mean) / self.std)

    def correct(self, features: Tensor, labels: Tensor) -> Tensor:
        """Per-example correctness on `features`, standardised as the training features were."""
        return _correct(self.head, (features - self.mean) / self.std, labels)


def linear_head(train_f: Tensor, train_y: Tensor, num_classes: int, seed: int,
                recipe: ProbeRecipe | None = None, held_out: Tensor | None = None,
                score: Score = top1) -> LinearHead:
    """The recipe's classifier on frozen training features: its penalty chosen on a share of
    them (`choose_l2`, with `held_out` and `score`) unless the recipe fixes it, then fitted
    on all of them."""
    recipe = recipe or ProbeRecipe()
    if recipe.l2 is not None:
        l2, scores = recipe.l2, {}
    else:
        l2, scores = choose_l2(train_f, train_y, num_classes, seed, recipe, held_out, score)
    mean, std = _standardiser(train_f)
    head = _fit((train_f - mean) / std, train_y, num_classes, l2, recipe.steps, seed)
    return LinearHead(head, mean, std, l2, scores)


def fit_linear_probe(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    seed: int,
    recipe: ProbeRecipe | None = None,
) -> LinearProbeResult:
    """A linear classifier on frozen features, its penalty chosen on the training split
    (`choose_l2`) unless the recipe fixes it; the test split is scored once, at the end."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    head = linear_head(train_f, train_y, num_classes, seed, recipe)
    return LinearProbeResult(head.correct(test_f, test_y), head.l2, head.validation_scores)


def linear_probe(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    seed: int,
    recipe: ProbeRecipe | None = None,
) -> float:
    """Test top-1 of `fit_linear_probe` (final iterate)."""
    return fit_linear_probe(train_f, train_y, test_f, test_y, seed, recipe).top1


def probe_metrics(
    train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, cfg,
    selected: tuple[str, ...], outcomes: dict[str, Tensor] | None = None,
) -> dict[str, float]:
    """The feature probes (kNN, linear) among the `selected` protocols, on one feature set,
    and the linear probe's chosen penalty (`linear_l2`). `outcomes`, when given, receives
    each probe's per-example correctness on the test split."""
    train_y, test_y = train_y.to(train_f.device), test_y.to(test_f.device)
    correct = {}
    out = {}
    if "knn" in selected:
        correct["knn_top1"] = knn_correct(train_f, train_y, test_f, test_y, cfg.knn_k,
                                          cfg.knn_temperature)
    if "linear" in selected:
        result = fit_linear_probe(train_f, train_y, test_f, test_y, cfg.seed,
                                  ProbeRecipe(steps=cfg.probe_steps))
        correct["linear_top1"] = result.correct
        out["linear_l2"] = result.l2
    if outcomes is not None:
        outcomes.update(correct)
    return {**{k: v.float().mean().item() for k, v in correct.items()}, **out}
