"""The `dense` protocol: a per-token linear probe on the frozen encoder's tokens, for data with
per-pixel labels (fashion-mosaic).

Each token's label is the most frequent pixel label of its patch (ties: the lower label id,
so a garment before the background). The probe is the linear probe's fixed recipe
(bench.eval.probes.linear_head: standardised features, L-BFGS, `probe_steps` iterations)
trained on at most `DENSE_MAX_TOKENS` tokens drawn uniformly (seeded) from the probe's
training images. It is scored per pixel on the test images: each token's logits are
upsampled bilinearly to the pixel grid and the argmax compared with the pixel's label.
`dense_pixel_acc`: the share of pixels right; `dense_miou`: the mean over labels (garment
classes and background) of the intersection over union, over the labels present in the test
labels or the predictions. ViT tokens, CNN feature maps and the raw input's patch pixels
alike (bench.eval.positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.eval.positions import PositionFeatures, batches, frozen
from bench.eval.probes import LinearHead, ProbeRecipe, linear_head

DENSE_MAX_TOKENS = 2**17


def patch_labels(masks: Tensor, patch: int, num_labels: int) -> Tensor:
    """`[B, H, W]` pixel labels -> `[B, (H/p)(W/p)]` the most frequent label of each patch
    (row-major patches; ties: the lower label)."""
    b, h, w = masks.shape
    onehot = F.one_hot(masks, num_labels).view(b, h // patch, patch, w // patch, patch, -1)
    return onehot.sum((2, 4)).flatten(1, 2).argmax(-1)


def confusion(pred: Tensor, truth: Tensor, num_labels: int) -> Tensor:
    """`[L, L]` counts of (true label, predicted label) pairs."""
    idx = truth.flatten() * num_labels + pred.flatten()
    return torch.bincount(idx, minlength=num_labels * num_labels).view(num_labels, num_labels)


def scores(conf: Tensor) -> dict[str, float]:
    """Pixel accuracy and mean IoU over the labels present in truth or prediction."""
    conf = conf.double()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return {"dense_miou": (tp[present] / union[present]).mean().item(),
            "dense_pixel_acc": (tp.sum() / conf.sum()).item()}


@torch.no_grad()
def _train_tokens(reader: PositionFeatures, x: Tensor, masks: Tensor, labels: int,
                  batch_size: int, device: torch.device, seed: int) -> tuple[Tensor, Tensor]:
    """At most DENSE_MAX_TOKENS (features, label) pairs drawn uniformly from the tokens of
    images `x` (the same draw for every row of a comparison: it depends on the seed and the
    grid only)."""
    patch, grid = reader.data.spec.patch_size, reader.data.spec.num_tokens
    total = len(x) * grid
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(total, generator=gen)[:DENSE_MAX_TOKENS].sort().values
    feats, ys = [], []
    for i, xb, _ in batches(x, None, batch_size, device, "dense features"):
        lo, hi = torch.searchsorted(chosen, torch.tensor([i * grid, (i + len(xb)) * grid]))
        pick = (chosen[lo:hi] - i * grid).to(device)
        feats.append(reader.tokens(xb).flatten(0, 1)[pick])
        y = patch_labels(masks[i : i + len(xb)].to(device), patch, labels)
        ys.append(y.flatten()[pick])
    return torch.cat(feats), torch.cat(ys)


@torch.no_grad()
def _test_confusion(reader: PositionFeatures, head: LinearHead, x: Tensor, masks: Tensor,
                    labels: int, batch_size: int, device: torch.device) -> Tensor:
    gh, gw = reader.data.spec.grid
    conf = torch.zeros(labels, labels, dtype=torch.long, device=device)
    for i, xb, _ in batches(x, None, batch_size, device, "dense test"):
        logits = head.logits(reader.tokens(xb)).view(len(xb), gh, gw, labels)
        up = F.interpolate(logits.permute(0, 3, 1, 2), size=tuple(xb.shape[-2:]),
                           mode="bilinear", align_corners=False)
        conf += confusion(up.argmax(1), masks[i : i + len(xb)].to(device), labels)
    return conf


def dense_metrics(cfg, data, encoder, device: torch.device, l2: float | None = None
                  ) -> dict[str, float]:
    """`dense_miou` and `dense_pixel_acc` of the per-token linear probe on `encoder` (None:
    the raw input's patch pixels), trained on the first `eval_train_limit` training images
    and scored on the first `eval_test_limit` test images; seeded by the run's seed; at
    penalty `l2` (None: chosen on a share of the training tokens)."""
    reader = PositionFeatures.of(encoder, data)
    labels = len(data.dense_classes)
    train, test = data.dense_split("train", cfg.eval_train_limit), data.dense_split(
        "test", cfg.eval_test_limit)
    with frozen(reader):
        feats, ys = _train_tokens(reader, train.x, train.masks, labels, cfg.eval_batch_size,
                                  device, cfg.seed)
        head = linear_head(feats, ys, labels, cfg.seed, ProbeRecipe(steps=cfg.probe_steps, l2=l2))
        conf = _test_confusion(reader, head, test.x, test.masks, labels, cfg.eval_batch_size,
                               device)
    return scores(conf)
