"""The protocols that train on the encoder: QB-Heat's tran1 probe (one transformer block on
frozen tokens) and end-to-end fine-tuning with layer-wise lr decay, each a fixed recipe."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data.protocol import EvalSplit
from bench.eval.heldout import evaluating
from bench.models.parts import LAYER_NORM, Encoder, init_weights, mean_pool, transformer_blocks
from bench.runtime import precision, progress
from bench.runtime.optim import decay_groups, no_decay_names


@dataclass(frozen=True)
class SupervisedRecipe:
    """A fixed supervised recipe (never tuned on test data): AdamW (0.9, 0.999) at `lr` on
    batches of `batch_size`, cosine decay to zero over every step, no warm-up, no
    augmentation; the score is the final step's test top-1. Its own batch size and lr, stated
    as run keys (`tran1_*`, `finetune_*`), so how a run is evaluated never depends on how it
    was pretrained (pretraining batch, number of processes). The run keys give the lr at
    batch 256 and it scales linearly with the recipe's own batch (`scaled_lr`), MAE's and
    BEiT's fine-tuning convention: a recipe run at another batch keeps its step per sample.

    Its length is a number of optimiser steps (`steps`): `epochs` passes over the labelled
    examples, but never fewer than `min_steps`. Counted in epochs alone, a few labels get a
    handful of steps (1,000 labels, 5 epochs at batch 256: 20), and a fine-tuned encoder
    then scores below the linear probe for want of training, not of features."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.05
    layer_decay: float = 1.0  # lr x layer_decay^(depth + 1 - layer) (BEiT / MAE fine-tuning)
    min_steps: int = 0

    def steps(self, examples: int) -> int:
        """Optimiser steps on `examples` labelled examples: `epochs` passes of batches of
        `batch_size` (the last one of each pass smaller), at least `min_steps`."""
        return max(self.epochs * math.ceil(examples / self.batch_size), self.min_steps)


def scaled_lr(lr_at_256: float, batch_size: int) -> float:
    """The lr a recipe trains at: its run key's lr (stated at batch 256) x batch / 256."""
    return lr_at_256 * batch_size / 256


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
def _test_correct(model: nn.Module, data, split: EvalSplit, batch_size: int, device) -> Tensor:
    """Whether `model` classifies each example of `split` right (bool `[N]`)."""
    model.eval()
    correct = []
    for i in range(0, len(split), batch_size):
        x, pad, y = _batch(data, split, torch.arange(i, min(i + batch_size, len(split))), device)
        with precision.autocast(device):
            correct.append(model(x, pad).argmax(1) == y)
    return torch.cat(correct)


def batch_order(examples: int, batch_size: int, steps: int, seed: int) -> Iterator[Tensor]:
    """The indices of each of `steps` batches: passes over the examples in a seeded random
    order (a new one per pass), the last pass cut where the steps end."""
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while True:
        perm = torch.randperm(examples, generator=gen)
        for i in range(0, examples, batch_size):
            if done == steps:
                return
            yield perm[i : i + batch_size]
            done += 1


def train_classifier(
    model: Tran1Probe | FinetuneClassifier,
    data,
    train: EvalSplit,
    test: EvalSplit,
    recipe: SupervisedRecipe,
    device: torch.device,
    seed: int,
    desc: str,
) -> Tensor:
    """Train `model` on `train` for `recipe.steps` steps (seeded batch order), then whether it
    classifies each test example right (bool `[N]`; its mean is the test top-1)."""
    lr, batch_size = recipe.lr, recipe.batch_size
    opt = torch.optim.AdamW(model.param_groups(recipe, lr), lr=lr, betas=(0.9, 0.999))
    steps = recipe.steps(len(train))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for idx in progress.bar(batch_order(len(train), batch_size, steps, seed), total=steps,
                            desc=desc, leave=False, unit="step"):
        x, pad, y = _batch(data, train, idx, device)
        with precision.autocast(device):
            loss = F.cross_entropy(model(x, pad).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return _test_correct(model, data, test, batch_size, device)


def encoder_protocols(
    encoder: Encoder, data, train: EvalSplit, test: EvalSplit, cfg, device: torch.device,
    selected: tuple[str, ...], outcomes: dict[str, Tensor] | None = None,
) -> dict[str, float]:
    """The protocols that train on top of (tran1) or through (finetune) the encoder, as the
    run's `protocols` select; seeded by the run's seed. The encoder itself is not changed.
    `outcomes`, when given, receives each protocol's per-example test correctness."""
    builders = {
        "tran1": (Tran1Probe, SupervisedRecipe(
            cfg.tran1_epochs, scaled_lr(cfg.tran1_lr, cfg.tran1_batch_size),
            cfg.tran1_batch_size, min_steps=cfg.tran1_min_steps)),
        "finetune": (FinetuneClassifier, SupervisedRecipe(
            cfg.finetune_epochs, scaled_lr(cfg.finetune_lr, cfg.finetune_batch_size),
            cfg.finetune_batch_size, layer_decay=cfg.finetune_layer_decay,
            min_steps=cfg.finetune_min_steps)),
    }
    out = {}
    with evaluating(encoder):  # back in its mode afterwards, whatever the probes set
        for name, (cls, recipe) in builders.items():
            if name not in selected:
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = cls(encoder, _num_classes(train, test)).to(device)
            correct = train_classifier(model, data, train, test, recipe, device, cfg.seed, name)
            out[f"{name}_top1"] = correct.float().mean().item()
            if outcomes is not None:
                outcomes[f"{name}_top1"] = correct
    return out
