"""Evaluation of an encoder: linear probe, kNN, tran1 probe, fine-tuning, reconstruction loss.

Every protocol has a fixed recipe (no tuning on test data) and reports final values.
"""

from __future__ import annotations

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
def knn_top1(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Weighted kNN (Wu et al. 2018, as in DINO): cosine similarity, votes exp(sim / T)."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    train_f = F.normalize(train_f, dim=1)
    test_f = F.normalize(test_f, dim=1)
    k = min(k, len(train_f))
    correct = 0
    for i in range(0, len(test_f), chunk):
        sim, idx = (test_f[i : i + chunk] @ train_f.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, device=sim.device)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        correct += (votes.argmax(1) == test_y[i : i + chunk]).sum().item()
    return correct / len(test_f)


@dataclass
class ProbeRecipe:
    """The fixed linear-probe recipe: multinomial logistic regression on standardised
    features, L2 penalty, full-batch L-BFGS (deterministic, no learning rate to tune)."""

    steps: int = 100
    l2: float = 1e-4


@dataclass
class LinearHead:
    """A trained linear classifier on standardised features (`linear_head`)."""

    head: nn.Linear
    mean: Tensor
    std: Tensor

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        return self.head((features - self.mean) / self.std)


def linear_head(train_f: Tensor, train_y: Tensor, num_classes: int, seed: int,
                recipe: ProbeRecipe | None = None) -> LinearHead:
    """The fixed recipe's classifier trained on frozen features (final iterate)."""
    recipe = recipe or ProbeRecipe()
    # A feature constant on the train set (a word absent from it) is centred but not scaled:
    # dividing by ~0 would turn its test values into huge, untrained logits.
    mean, std = train_f.mean(0), train_f.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    xtr = (train_f - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(xtr.shape[1], num_classes).to(xtr.device)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=recipe.steps, history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(xtr), train_y) + recipe.l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearHead(head, mean, std)


def linear_probe(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    seed: int,
    recipe: ProbeRecipe | None = None,
) -> float:
    """Test top-1 of a linear classifier trained on frozen features (final iterate)."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    head = linear_head(train_f, train_y, num_classes, seed, recipe)
    return (head.logits(test_f).argmax(1) == test_y).float().mean().item()


def probe_metrics(
    train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, cfg,
    selected: tuple[str, ...],
) -> dict[str, float]:
    """The feature probes (kNN, linear) among the `selected` protocols, on one feature set."""
    train_y, test_y = train_y.to(train_f.device), test_y.to(test_f.device)
    out = {}
    if "knn" in selected:
        out["knn_top1"] = knn_top1(train_f, train_y, test_f, test_y, cfg.knn_k, cfg.knn_temperature)
    if "linear" in selected:
        out["linear_top1"] = linear_probe(
            train_f, train_y, test_f, test_y, cfg.seed, ProbeRecipe(steps=cfg.probe_steps)
        )
    return out
