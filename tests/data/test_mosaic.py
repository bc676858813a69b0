"""fashion-mosaic: canvases composed deterministically from their split's garments, per-pixel
labels consistent with the pixels, the image label by largest area; built from the Debian
files, cached, with the card's facts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data import DATASETS, load_dataset
from bench.data.cards import load_card
from bench.data.images import channel_stats, idx_files
from bench.data.mosaic import MosaicRule, compose
from tests.helpers import require_fashion_mnist, tiny_mosaic

RULE = MosaicRule(size=32, min_objects=2, max_objects=4, foreground=16, max_overlap=0.25,
                  tries=20, seed=0)


def garments(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Garment k is a 10x10 square of intensity 40 + 10 k (so a pixel says which it is)."""
    images = np.zeros((n, 10, 10), dtype=np.uint8)
    for k in range(n):
        images[k, 1:9, 1:9] = 40 + 10 * k
    return images, np.arange(n) % 3


def test_compose_is_deterministic_and_labels_follow_the_pixels():
    images, labels = garments()
    a, b = compose(images, labels, 50, RULE, 0), compose(images, labels, 50, RULE, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = compose(images, labels, 50, RULE, 1)  # the other split's stream
    assert not np.array_equal(a["x"], other["x"])
    x, masks, y = a["x"][:, 0], a["masks"], a["y"]
    assert x.shape == (50, 32, 32) and masks.shape == (50, 32, 32) and y.shape == (50,)
    assert set(np.unique(masks)) <= {0, 1, 2, 3}  # three classes, then background = 3
    garment_of = {40 + 10 * k: labels[k] for k in range(len(images))}
    fg = masks != 3
    assert (x[~fg] <= RULE.foreground).all()  # background: no garment pixel above it
    assert all(garment_of[v] == m for v, m in zip(x[fg], masks[fg]))  # the brightest wins
    counts = [len(np.unique(x[k][x[k] > 0])) for k in range(50)]
    assert min(counts) >= 1 and max(counts) <= 4
    areas = np.stack([np.bincount(m.ravel(), minlength=4)[:3] for m in masks])
    assert np.array_equal(y, areas.argmax(1))  # the class covering most pixels


def test_dense_image_data_moves_with_its_labels():
    data = tiny_mosaic(8, 4)
    moved = data.to(torch.device("cpu"))
    assert type(moved) is type(data) and moved.train_masks is not None
    split = moved.dense_split("test", 3)
    assert split.x.shape == (3, 1, 32, 32) and split.masks.shape == (3, 32, 32)
    assert split.masks.dtype == torch.int64 and data.dense_classes[-1] == "background"


def test_registry_marks_dense_labels():
    assert DATASETS.get("fashion-mosaic").dense_labels
    assert not DATASETS.get("fashion-mnist").dense_labels


@pytest.mark.slow
def test_real_fashion_mosaic(tmp_path, monkeypatch):
    """Built from the Debian files (train canvases from train garments, test from test) in the
    card's sizes and grid, cached (a second load reads the file), with the card's mean/std."""
    require_fashion_mnist()
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path))
    card = load_card("fashion-mosaic")
    data = load_dataset("fashion-mosaic")
    assert (len(data.train_x), len(data.test_x)) == (card["n_train"], card["n_test"])
    assert data.spec.grid == (16, 16) and data.train_masks.shape == (card["n_train"], 64, 64)
    (cached,) = tmp_path.glob("mosaic*.pt")
    again = load_dataset("fashion-mosaic")
    assert torch.equal(again.test_masks, data.test_masks) and cached.is_file()
    mean, std = channel_stats(data.train_x)
    assert mean[0] == pytest.approx(card["mean"][0], abs=1e-4)
    assert std[0] == pytest.approx(card["std"][0], abs=1e-4)
    source = load_card("fashion-mnist")
    files = idx_files(source, None)
    rule = MosaicRule.from_card(card)
    test = compose(files["test_images"], files["test_labels"], card["n_test"], rule, 1)
    assert np.array_equal(data.test_x.numpy(), test["x"])  # test canvases: test garments
    assert np.array_equal(data.test_masks.numpy(), test["masks"])
    train = compose(files["train_images"], files["train_labels"], 50, rule, 0)
    assert np.array_equal(data.train_x[:50].numpy(), train["x"])  # train: train garments
    assert set(data.test_y.unique().tolist()) == set(range(10))
