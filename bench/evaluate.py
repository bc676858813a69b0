"""Evaluation of an encoder: linear probe, kNN, tran1 probe, fine-tuning, reconstruction loss.

Every protocol has a fixed recipe (no tuning on test data) and reports final values.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import progress
from bench.config import protocol_list
from bench.data.protocol import EvalSplit
from bench.models.layers import LAYER_NORM, Encoder, init_weights, mean_pool, transformer_blocks
from bench.models.pretrainer import MaskedPretrainer, PretrainOutput
from bench.optim import decay_groups, no_decay_names
from bench.precision import autocast  # the run's chosen precision (bf16 on CUDA by default)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode for the block, then back in the mode it was in (an evaluation in
    the middle of pretraining must not leave the model in eval mode, nor the reverse)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass
class Batches:
    """`inputs` in consecutive batches of `batch_size` on `device`, each through `prepare`
    (e.g. normalising); sized, so a progress bar over it knows its total."""

    inputs: Tensor
    batch_size: int
    device: torch.device
    prepare: Callable[[Tensor], Tensor] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.inputs) / self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(0, len(self.inputs), self.batch_size):
            x = self.inputs[i : i + self.batch_size].to(self.device)
            yield x if self.prepare is None else self.prepare(x)


def heldout_outputs(model: MaskedPretrainer, batches: Iterable[Tensor], device: torch.device,
                    seed: int, desc: str) -> Iterator[tuple[Tensor, PretrainOutput]]:
    """`(x, model(x))` for each held-out batch: eval mode, autocast, no gradients, the
    method's own masks drawn from one generator seeded `seed`, so every held-out metric of a
    run scores the same masks."""
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad(), evaluating(model):
        for x in progress.bar(batches, desc=desc, leave=False, unit="batch"):
            with autocast(device):
                out = model(x, gen)
            yield x, out


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
            with autocast(device):
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


def linear_probe(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    seed: int,
    recipe: ProbeRecipe | None = None,
) -> float:
    """Test top-1 of a linear classifier trained on frozen features (final iterate)."""
    recipe = recipe or ProbeRecipe()
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    # A feature constant on the train set (a word absent from it) is centred but not scaled:
    # dividing by ~0 would turn its test values into huge, untrained logits.
    mean, std = train_f.mean(0), train_f.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    xtr, xte = (train_f - mean) / std, (test_f - mean) / std
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
    with torch.no_grad():
        return (head(xte).argmax(1) == test_y).float().mean().item()


def probe_metrics(
    train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, cfg
) -> dict[str, float]:
    """The feature probes (kNN, linear) the run's `protocols` select, on one feature set."""
    train_y, test_y = train_y.to(train_f.device), test_y.to(test_f.device)
    selected = protocol_list(cfg.protocols)
    out = {}
    if "knn" in selected:
        out["knn_top1"] = knn_top1(train_f, train_y, test_f, test_y, cfg.knn_k, cfg.knn_temperature)
    if "linear" in selected:
        out["linear_top1"] = linear_probe(
            train_f, train_y, test_f, test_y, cfg.seed, ProbeRecipe(steps=cfg.probe_steps)
        )
    return out


@dataclass(frozen=True)
class SupervisedRecipe:
    """A fixed supervised recipe (never tuned on test data): AdamW (0.9, 0.999) at `lr` on
    batches of `batch_size`, cosine decay to zero over every step, no warm-up, no
    augmentation; the score is the final epoch's test top-1. Its own batch size and lr, stated
    as run keys (`tran1_*`, `finetune_*`), so how a run is evaluated never depends on how it
    was pretrained (pretraining batch, number of processes)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.05
    layer_decay: float = 1.0  # lr x layer_decay^(depth + 1 - layer) (BEiT / MAE fine-tuning)


def _num_classes(train: EvalSplit, test: EvalSplit) -> int:
    return int(max(train.y.max(), test.y.max())) + 1


def _heads(dim: int) -> int:
    """Attention heads of width ~64 (ViT's convention), a divisor of `dim`."""
    heads = max(1, dim // 64)
    while dim % heads:
        heads -= 1
    return heads


class Tran1Probe(nn.Module):
    """QB-Heat's `tran-1` probe: one transformer block, LayerNorm, mean pool over real
    tokens and a linear head, trained on the frozen encoder's tokens (`forward_tokens`)."""

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.block = transformer_blocks(encoder.dim, 1, _heads(encoder.dim))
        self.block.apply(init_weights)
        self.norm = LAYER_NORM(encoder.dim)
        self.head = nn.Linear(encoder.dim, num_classes)

    def train(self, mode: bool = True) -> Tran1Probe:
        super().train(mode)
        self.encoder.eval()  # frozen: its features never change with the probe's mode
        return self

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        with torch.no_grad():
            tokens = self.encoder.forward_tokens(x, pad_mask)
        attn_mask = None if pad_mask is None else pad_mask[:, None, None, :]
        for block in self.block:
            tokens = block(tokens, attn_mask=attn_mask)
        return self.head(mean_pool(self.norm(tokens), pad_mask))

    def param_groups(self, recipe: SupervisedRecipe, lr: float) -> list[dict]:
        trained = [(n, p) for n, p in self.named_parameters() if not n.startswith("encoder.")]
        return decay_groups(trained, no_decay_names(self), lr, recipe.weight_decay)


class FinetuneClassifier(nn.Module):
    """A copy of the encoder (the pretrained one is untouched) + a linear head on its pooled
    features, all trained end to end."""

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.head = nn.Linear(encoder.dim, num_classes)

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        return self.head(self.encoder.pooled(x, pad_mask))

    def layers(self) -> tuple[dict[int, int], int]:
        """Layer index of each parameter (by id) and the depth L: embeddings 0, block i
        i + 1, final norm and head L + 1. Dense (CNN) encoders have no blocks: one layer, the
        top one (L = 0), so they get a single group at the full lr."""
        enc = self.encoder
        blocks = getattr(enc, "blocks", None) if enc.kind == "token" else None
        if blocks is None:
            return {id(p): 1 for p in self.parameters()}, 0
        depth = len(blocks)
        layer = {id(p): 0 for p in enc.parameters()}
        for i, block in enumerate(blocks):
            layer.update((id(p), i + 1) for p in block.parameters())
        top = [*self.head.parameters(), *getattr(enc, "norm", nn.Identity()).parameters()]
        layer.update((id(p), depth + 1) for p in top)
        return layer, depth

    def param_groups(self, recipe: SupervisedRecipe, lr: float) -> list[dict]:
        layer, depth = self.layers()
        no_decay = no_decay_names(self)
        groups = []
        for i in sorted(set(layer.values())):
            named = [(n, p) for n, p in self.named_parameters() if layer[id(p)] == i]
            groups += decay_groups(named, no_decay, lr * recipe.layer_decay ** (depth + 1 - i),
                                   recipe.weight_decay)
        return groups


def _batch(data, split: EvalSplit, idx: Tensor, device: torch.device):
    """Model input, padding mask and labels of `split[idx]` on `device`."""
    idx = idx.to(split.y.device)
    x = data.eval_batch(split.x[idx].to(device))
    pad = None if split.pad_mask is None else split.pad_mask[idx].to(device)
    return x, pad, split.y[idx].to(device)


@torch.no_grad()
def _test_top1(model: nn.Module, data, split: EvalSplit, batch_size: int, device) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        x, pad, y = _batch(data, split, torch.arange(i, min(i + batch_size, len(split))), device)
        with autocast(device):
            correct += (model(x, pad).argmax(1) == y).sum().item()
    return correct / len(split)


def train_classifier(
    model: Tran1Probe | FinetuneClassifier,
    data,
    train: EvalSplit,
    test: EvalSplit,
    recipe: SupervisedRecipe,
    device: torch.device,
    seed: int,
    desc: str,
) -> float:
    """Train `model` on `train` with `recipe` (seeded batch order), then its test top-1."""
    lr, batch_size = recipe.lr, recipe.batch_size
    opt = torch.optim.AdamW(model.param_groups(recipe, lr), lr=lr, betas=(0.9, 0.999))
    steps = recipe.epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in progress.bar(range(recipe.epochs), desc=desc, leave=False, unit="epoch"):
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), batch_size):
            x, pad, y = _batch(data, train, perm[i : i + batch_size], device)
            with autocast(device):
                loss = F.cross_entropy(model(x, pad).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    return _test_top1(model, data, test, batch_size, device)


def encoder_protocols(
    encoder: Encoder, data, train: EvalSplit, test: EvalSplit, cfg, device: torch.device
) -> dict[str, float]:
    """The protocols that train on top of (tran1) or through (finetune) the encoder, as the
    run's `protocols` select; seeded by the run's seed. The encoder itself is not changed."""
    selected = protocol_list(cfg.protocols)
    builders = {
        "tran1": (Tran1Probe, SupervisedRecipe(cfg.tran1_epochs, cfg.tran1_lr,
                                               cfg.tran1_batch_size)),
        "finetune": (FinetuneClassifier, SupervisedRecipe(
            cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_batch_size,
            layer_decay=cfg.finetune_layer_decay)),
    }
    out = {}
    with evaluating(encoder):  # back in its mode afterwards, whatever the probes set
        for name, (cls, recipe) in builders.items():
            if name not in selected:
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = cls(encoder, _num_classes(train, test)).to(device)
            out[f"{name}_top1"] = train_classifier(
                model, data, train, test, recipe, device, cfg.seed, name
            )
    return out


@torch.no_grad()
def reconstruction_loss(
    model: MaskedPretrainer, data, split: EvalSplit, batch_size: int, device: torch.device, seed: int
) -> float:
    """Mean pretraining loss on held-out inputs under the method's own (seeded) masking."""
    total, count = torch.zeros((), device=device), 0
    batches = Batches(split.x, batch_size, device, data.eval_batch)
    for x, out in heldout_outputs(model, batches, device, seed, "recon"):
        total += out.loss.float() * len(x)
        count += len(x)
    return (total / max(count, 1)).item()


@torch.no_grad()
def masked_token_metrics(
    model: MaskedPretrainer, blocks: Tensor, batch_size: int, device: torch.device, seed: int
) -> dict[str, float]:
    """Held-out masked language modelling under the method's own (seeded) masking: accuracy of
    the arg-max token, mean cross-entropy (`recon_loss`, nats) and perplexity = exp(mean CE),
    over every scored (hidden, non-padding) token of `blocks`, each token counting once.
    Not comparable across methods: each hides different positions (one span vs a subset)."""
    nll = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    for x, out in heldout_outputs(model, Batches(blocks, batch_size, device), device, seed,
                                  "masked tokens"):
        scored = model.scored(x, out.visible)
        logits, target = out.pred.float()[scored], x[scored]
        nll += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(-1) == target).sum()
        count += scored.sum()
    n = int(count.clamp_min(1))
    ce = nll.item() / n
    return {"recon_loss": ce, "masked_token_acc": correct.item() / n, "perplexity": math.exp(ce)}
