"""`fashion-mosaic`: multi-object canvases with per-pixel labels, for the dense probe.

Each canvas is 64x64 with 2-4 Fashion-MNIST garments (28x28) pasted at seeded random
positions; train canvases take their garments from the train split, test canvases from the
test split. A pixel belongs to the garment whose intensity there is highest, if that
intensity exceeds `FOREGROUND` (of 255), else to the background; canvases are the pixel-wise
maximum of the garments. The image-level label of the ordinary probes is the class covering
the most pixels (ties: the lower class id). Built deterministically from the IDX files (no
download) and cached under `cache_root()`; the rules and sizes are in
bench/datasets/fashion-mosaic.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from bench.data.cache import cache_root, cached_tensors
from bench.data.cards import load_card
from bench.data.fingerprint import fingerprint
from bench.data.images import ImageData, idx_files

MOSAIC_FORMAT = 1  # bump when the composition rule changes: the cache key holds it


@dataclass(frozen=True)
class MosaicRule:
    """How canvases are composed (the card's [mosaic] table)."""

    size: int
    min_objects: int
    max_objects: int
    foreground: int  # a garment pixel counts above this intensity (of 255)
    max_overlap: float  # of a garment's box area, with any earlier box (rejection sampling)
    tries: int  # draws of a position before the last one is kept whatever its overlap
    seed: int

    @classmethod
    def from_card(cls, card: dict) -> MosaicRule:
        m = card["mosaic"]
        return cls(card["image_size"][0], m["min_objects"], m["max_objects"], m["foreground"],
                   m["max_overlap"], m["tries"], m["seed"])


@dataclass
class DenseSplit:
    """Inputs and per-pixel labels `[N, H, W]` (int64) of one split."""

    x: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class DenseImageData(ImageData):
    """`ImageData` with per-pixel labels: `train_masks`, `test_masks` uint8 `[N, H, W]` holding
    a class id or `background` (= len(classes)); `dense_classes` names them all."""

    train_masks: Tensor | None = None
    test_masks: Tensor | None = None
    split_fields: ClassVar[tuple[str, ...]] = ("x", "y", "masks")

    @property
    def dense_classes(self) -> list[str]:
        return [*self.classes, "background"]

    def dense_split(self, split: str, limit: int | None = None) -> DenseSplit:
        """The first `limit` images of a split (as `eval_split` takes them) and their labels."""
        x, masks = ((self.train_x, self.train_masks) if split == "train"
                    else (self.test_x, self.test_masks))
        return DenseSplit(x[:limit], masks[:limit].long())


def _boxes_overlap(top: int, left: int, boxes: list[tuple[int, int]], side: int) -> float:
    """Largest intersection of the box at (top, left) with any of `boxes`, as a fraction of a
    box's area (all boxes `side` x `side`)."""
    worst = 0
    for t, c in boxes:
        h = max(0, min(top, t) + side - max(top, t))
        w = max(0, min(left, c) + side - max(left, c))
        worst = max(worst, h * w)
    return worst / (side * side)


def compose(images: np.ndarray, labels: np.ndarray, n: int, rule: MosaicRule, stream: int
            ) -> dict[str, np.ndarray]:
    """`n` canvases from garments `images [M, s, s]` (uint8) with `labels [M]`: images
    `[n, 1, size, size]`, masks `[n, size, size]` and image-level labels `[n]`.

    Garments are taken in the order of seeded permutations of the source (a new one when all
    are used), so each is used about equally; `stream` separates the train and test draws."""
    rng = np.random.default_rng([rule.seed, stream])
    side, size = images.shape[-1], rule.size
    background = int(labels.max()) + 1
    canvases = np.zeros((n, size, size), dtype=np.uint8)
    masks = np.full((n, size, size), background, dtype=np.uint8)
    order, used = rng.permutation(len(images)), 0
    for k in range(n):
        boxes: list[tuple[int, int]] = []
        for _ in range(int(rng.integers(rule.min_objects, rule.max_objects + 1))):
            if used == len(order):
                order, used = rng.permutation(len(images)), 0
            g, used = order[used], used + 1
            for _ in range(rule.tries):
                top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                if _boxes_overlap(top, left, boxes, side) <= rule.max_overlap:
                    break
            boxes.append((top, left))
            garment = images[g]
            region = canvases[k, top:top + side, left:left + side]
            wins = (garment > rule.foreground) & (garment >= region)
            masks[k, top:top + side, left:left + side][wins] = labels[g]
            np.maximum(region, garment, out=region)
    counts = np.stack([np.bincount(m.ravel(), minlength=background + 1)[:background]
                       for m in masks])
    return {"x": canvases[:, None], "masks": masks, "y": counts.argmax(1).astype(np.int64)}


def load_fashion_mosaic(data_root: str | None = None) -> DenseImageData:
    """Build (or read from the cache) the canvases of both splits from Fashion-MNIST's IDX
    files, found as `fashion-mnist` finds them."""
    card, source = load_card("fashion-mosaic"), load_card("fashion-mnist")
    rule = MosaicRule.from_card(card)
    files = idx_files(source, data_root)
    key = fingerprint(files["train_labels"], files["test_labels"], files["train_images"][:64],
                      rule, card["n_train"], card["n_test"])

    def make() -> dict[str, Tensor]:
        train = compose(files["train_images"], files["train_labels"], card["n_train"], rule, 0)
        test = compose(files["test_images"], files["test_labels"], card["n_test"], rule, 1)
        return {f"{split}_{k}": torch.from_numpy(v) for split, made in (("train", train),
                                                                       ("test", test))
                for k, v in made.items()}

    t = cached_tensors(cache_root() / f"mosaic{MOSAIC_FORMAT}-{key}.pt", make)
    return DenseImageData(
        name="fashion-mosaic", train_x=t["train_x"], train_y=t["train_y"], test_x=t["test_x"],
        test_y=t["test_y"], classes=list(source["classes"]), mean=tuple(card["mean"]),
        std=tuple(card["std"]), patch_size=card["patch_size"], fingerprint=key,
        train_masks=t["train_masks"], test_masks=t["test_masks"])
