"""The `dense` protocol: a per-token linear probe on the frozen encoder's tokens, for data with
per-pixel labels (fashion-mosaic).

Each token's label is the most frequent pixel label of its patch (ties: the lower label id,
so a garment before the background). The probe is the linear probe's recipe
(bench.eval.probes.linear_head: standardised features, L-BFGS, `probe_steps` iterations)
trained on at most `DENSE_MAX_TOKENS` tokens drawn uniformly (seeded) from the probe's
training images. Its own L2 penalty, from the linear probe's grid: each candidate is fitted on
the tokens of the training images less a seeded share of whole images (the linear probe's
`VALIDATION_FRACTION`) and scored by the mIoU of its token predictions on the held-out
images' tokens (ties: the larger penalty); the best is refitted on every drawn token
(`dense_l2`). A penalty chosen for pooled features says nothing about per-token ones.

Scored per pixel on the test images: each token's logits are upsampled bilinearly to the pixel
grid and the argmax compared with the pixel's label. `dense_pixel_acc`: the share of pixels
right; `dense_miou`: the mean over labels (garment classes and background) of the intersection
over union, over the labels present in the test labels or the predictions; `dense_miou_fg`:
the same over the garment classes only (the background, large and easy, flattens the mean);
`dense_iou_<k>`: label k's IoU (k indexes `data.dense_classes`: the classes, then background;
a label in neither truth nor prediction has none).

Per-image outcomes: mIoU is a ratio of sums over images, not a mean of per-image scores, so
each image gets its linearised (influence) score s_i = m + (1/C) sum_c n (I_ic - r_c U_ic) / U_c
(I, U: intersections and unions, per image i and summed over images; r_c = I_c / U_c; C
labels): their mean is exactly the metric and their variance / n its delta-method variance,
so the report's intervals and paired tests hold the test set's variance as for the other
probes. ViT tokens, CNN feature maps and the raw input's patch pixels alike
(bench.eval.positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.outcomes import Outcome, examples_key
from bench.eval.positions import PositionFeatures, batches, frozen
from bench.eval.probes import LinearHead, ProbeRecipe, linear_head, validation_rows

DENSE_MAX_TOKENS = 2**17


def patch_labels(masks: Tensor, patch: int, num_labels: int) -> Tensor:
    """`[B, H, W]` pixel labels -> `[B, (H/p)(W/p)]` the most frequent label of each patch
    (row-major patches; ties: the lower label)."""
    b, h, w = masks.shape
    onehot = F.one_hot(masks, num_labels).view(b, h // patch, patch, w // patch, patch, -1)
    return onehot.sum((2, 4)).flatten(1, 2).argmax(-1)


@dataclass
class LabelCounts:
    """Per example (an image) and label, int64 `[N, L]`: its pixels of the label in the truth,
    in the prediction, and in both."""

    truth: Tensor
    pred: Tensor
    both: Tensor

    @classmethod
    def of(cls, pred: Tensor, truth: Tensor, num_labels: int) -> LabelCounts:
        """The counts of predicted and true labels `[N, ...]`, example by example."""
        n = len(truth)
        offset = (torch.arange(n, device=truth.device) * num_labels).view(
            n, *[1] * (truth.dim() - 1))

        def count(labels: Tensor) -> Tensor:
            return torch.bincount(labels.flatten(), minlength=n * num_labels).view(n, num_labels)

        return cls(count(truth + offset), count(pred + offset),
                   count((truth + offset)[pred == truth]))

    @property
    def union(self) -> Tensor:
        return self.truth + self.pred - self.both

    @classmethod
    def cat(cls, parts: list[LabelCounts]) -> LabelCounts:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("truth", "pred", "both")))


def linearised_mean_ratio(num: Tensor, den: Tensor) -> tuple[float, Tensor]:
    """m = (1/C) sum_c (sum_i num_ic / sum_i den_ic) over the C columns with sum_i den_ic > 0,
    and per-row linearised scores s_i = m + (1/C) sum_c n (num_ic - r_c den_ic) / den_c
    (r_c = num_c / den_c; float64 `[N]`): mean(s) = m exactly, and var(s) / n is the
    delta-method variance of m. No column present: NaN."""
    num, den = num.double(), den.double()
    num_c, den_c = num.sum(0), den.sum(0)
    present = den_c > 0
    if not present.any():
        return float("nan"), torch.full((len(num),), float("nan"), dtype=torch.float64)
    r = num_c[present] / den_c[present]
    value = r.mean()
    scores = value + len(num) * ((num[:, present] - r * den[:, present])
                                 / den_c[present]).mean(1)
    return value.item(), scores


def scores(counts: LabelCounts) -> tuple[dict[str, float], dict[str, Tensor]]:
    """The dense metrics of `counts` (the background is the last label) and the per-example
    linearised scores of the mean ones (mIoU, foreground mIoU, pixel accuracy)."""
    both, union = counts.both, counts.union
    outcomes, metrics = {}, {}
    for name, cols in (("dense_miou", slice(None)), ("dense_miou_fg", slice(None, -1))):
        metrics[name], outcomes[name] = linearised_mean_ratio(both[:, cols], union[:, cols])
    metrics["dense_pixel_acc"], outcomes["dense_pixel_acc"] = linearised_mean_ratio(
        both.sum(1, keepdim=True), counts.truth.sum(1, keepdim=True))
    for k, (i, u) in enumerate(zip(both.sum(0).tolist(), union.sum(0).tolist())):
        if u > 0:
            metrics[f"dense_iou_{k}"] = i / u
    return metrics, outcomes


def token_miou(pred: Tensor, truth: Tensor) -> float:
    """mIoU of token predictions (what the dense probe's penalty is chosen by)."""
    labels = int(max(pred.max(), truth.max())) + 1
    return scores(LabelCounts.of(pred[None], truth[None], labels))[0]["dense_miou"]


@torch.no_grad()
def _train_tokens(reader: PositionFeatures, x: Tensor, masks: Tensor, labels: int,
                  batch_size: int, device: torch.device, seed: int
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """At most DENSE_MAX_TOKENS (features, label, image index) triples drawn uniformly from
    the tokens of images `x` (the same draw for every row of a comparison: it depends on the
    seed and the grid only)."""
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
    return torch.cat(feats), torch.cat(ys), (chosen // grid).to(device)


@torch.no_grad()
def _test_counts(reader: PositionFeatures, head: LinearHead, x: Tensor, masks: Tensor,
                 labels: int, batch_size: int, device: torch.device) -> LabelCounts:
    gh, gw = reader.data.spec.grid
    parts = []
    for i, xb, _ in batches(x, None, batch_size, device, "dense test"):
        logits = head.logits(reader.tokens(xb)).view(len(xb), gh, gw, labels)
        up = F.interpolate(logits.permute(0, 3, 1, 2), size=tuple(xb.shape[-2:]),
                           mode="bilinear", align_corners=False)
        parts.append(LabelCounts.of(up.argmax(1), masks[i : i + len(xb)].to(device), labels))
    return LabelCounts.cat(parts)


def dense_metrics(cfg, data, encoder, device: torch.device,
                  outcomes: dict[str, Outcome] | None = None) -> dict[str, float]:
    """The dense metrics of the per-token linear probe on `encoder` (None: the raw input's
    patch pixels) and its chosen penalty `dense_l2`: trained on the first `eval_train_limit`
    training images, its penalty chosen on a seeded share of them, scored on the first
    `eval_test_limit` test images; seeded by the run's seed. `outcomes`, when given, receives
    the per-image linearised scores of the mean metrics."""
    reader = PositionFeatures.of(encoder, data)
    labels = len(data.dense_classes)
    train, test = data.dense_split("train", cfg.eval_train_limit), data.dense_split(
        "test", cfg.eval_test_limit)
    recipe = ProbeRecipe(steps=cfg.probe_steps)
    with frozen(reader):
        feats, ys, image = _train_tokens(reader, train.x, train.masks, labels,
                                         cfg.eval_batch_size, device, cfg.seed)
        held_out = torch.zeros(len(train), dtype=torch.bool, device=device)
        held_out[validation_rows(len(train), recipe.validation, cfg.seed)[1].to(device)] = True
        head = linear_head(feats, ys, labels, cfg.seed, recipe, held_out[image], token_miou)
        counts = _test_counts(reader, head, test.x, test.masks, labels, cfg.eval_batch_size,
                              device)
    metrics, per_image = scores(counts)
    if outcomes is not None:
        key = examples_key(counts.truth.flatten().cpu().numpy())
        outcomes.update({name: Outcome(s.cpu().numpy(), key) for name, s in per_image.items()})
    return {**metrics, "dense_l2": head.l2}
