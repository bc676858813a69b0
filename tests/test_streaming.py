"""Streamed image data on a generated ImageNet-style folder: decoding, order, the DataLoader path
equal to the in-process one, training end to end; torchvision sets' files and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench import store
from bench.data import load_dataset
from bench.data import streaming as S
from bench.errors import DataNotFoundError
from bench.sweep import resolve_run
from bench.train import train_run
from tests.conftest import tiny_config

CLASSES = ("cat", "dog", "fox")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/<class>/ 8 images and val/<class>/ 3 each, odd sizes, PNG and JPEG; each class has
    its own colour channel so labels are learnable."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(24, 48, size=2)
                pixels = rng.integers(0, 96, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c] += 150
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(root / split / name / f"{i}.{ext}")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def data(folder):
    return S.load_imagefolder(str(folder), image_size=32, patch_size=4)


def test_imagefolder_decodes_classes_and_a_mixed_stable_order(folder, data):
    assert data.classes == list(CLASSES)
    assert data.spec.grid == (8, 8) and data.spec.in_chans == 3
    assert data.n_pretrain() == 24 and len(data.test_set) == 9
    test = data.eval_split("test")
    assert test.x.dtype == torch.uint8 and test.x.shape == (9, 3, 32, 32)
    assert sorted(test.y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # The colour of each class survives decoding: its channel is the brightest.
    assert torch.equal(test.x.float().mean(dim=(2, 3)).argmax(1), test.y)
    first = data.eval_split("train", 6).y.tolist()
    assert len(set(first)) > 1  # "the first N" is not one class
    again = S.load_imagefolder(str(folder), image_size=32, patch_size=4)
    assert again.fingerprint == data.fingerprint and again.train_set.files == data.train_set.files
    assert S.load_imagefolder(str(folder), image_size=16, patch_size=4).fingerprint != data.fingerprint


def test_workers_stream_what_one_process_decodes(data):
    """The DataLoader path (1 worker) gives the in-process batches bit for bit, augmentation
    included; two ranks' rows of each global batch concatenate to it."""
    streamed = S.StreamingImageData(**{**data.__dict__, "workers": 1})
    batches = torch.tensor([[3, 1, 4, 15, 9, 2, 6, 5], [0, 7, 8, 10, 11, 12, 13, 14]])

    def epoch(d, rows=slice(None)):
        return list(S.pretrain_batches(d, batches, torch.Generator().manual_seed(1), True, rows))

    gen = torch.Generator().manual_seed(1)
    direct = [data.pretrain_batch(b, gen, True) for b in batches]
    whole = epoch(streamed)
    assert all(torch.equal(a, b) for a, b in zip(whole, direct))
    halves = [epoch(streamed, slice(0, 4)), epoch(streamed, slice(4, 8))]
    assert all(torch.equal(torch.cat([h0, h1]), w) for h0, h1, w in zip(*halves, whole))
    assert whole[0].dtype == torch.float32 and whole[0].shape == (8, 3, 32, 32)


def test_trains_end_to_end_on_the_folder(tmp_path, folder, data):
    cfg = resolve_run(tiny_config(dataset=f"imagefolder:{folder}", epochs=1, batch_size=8,
                                  train_limit=None, eval_train_limit=None, eval_test_limit=None,
                                  protocols="knn"))
    s = train_run(cfg, tmp_path / cfg.run_id, progress=False, data=data)
    assert s["status"] == "ok" and 0 <= s["metrics"]["knn_top1"] <= 1
    assert store.read_json(tmp_path / cfg.run_id / store.CONFIG)["data_fingerprint"] == data.fingerprint


def test_imagefolder_errors_name_the_layout(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"train/<class>/<image>.*val,test"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="imagefolder"):  # a class folder with no image
        load_dataset(f"imagefolder:{tmp_path}")


def test_torchvision_set_missing_names_files_and_download(tmp_path, monkeypatch):
    monkeypatch.delenv("MASKBENCH_DATA", raising=False)
    card = dict(S.load_card("cifar10"), default_location=str(tmp_path / "default"))
    monkeypatch.setattr(S, "load_card", lambda name: card)
    with pytest.raises(DataNotFoundError) as err:
        S.load_torchvision("cifar10", str(tmp_path / "mine"))
    msg = str(err.value)
    assert "cifar-10-batches-py/{data_batch_1" in msg and str(tmp_path / "mine") in msg
    assert "python -m bench download cifar10" in msg


def test_torchvision_arrays_become_streamed_data(tmp_path, monkeypatch):
    """torchvision's arrays (CIFAR: NHWC) become uint8 NCHW; nothing is downloaded."""
    card = S.load_card("cifar10")
    folder = tmp_path / card["folder"]
    folder.mkdir()
    for name in card["files"]:
        (folder / name).write_bytes(b"")
    calls = []

    class FakeCIFAR:
        classes = [f"c{i}" for i in range(10)]

        def __init__(self, root, download, train):
            calls.append((root, download, train))
            n = 20 if train else 10
            self.data = np.arange(n * 32 * 32 * 3, dtype=np.uint64).reshape(n, 32, 32, 3).astype(np.uint8)
            self.targets = [i % 10 for i in range(n)]

    import torchvision

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR)
    d = S.load_torchvision("cifar10", str(tmp_path))
    assert calls == [(str(tmp_path), False, True), (str(tmp_path), False, False)]
    assert d.n_pretrain() == 20 and d.classes == FakeCIFAR.classes and d.spec.grid == (8, 8)
    x, y = d.pretrain_set[3]
    assert x.shape == (3, 32, 32) and y == 3
    assert torch.equal(x[:, 0, 0], torch.from_numpy(FakeCIFAR(None, False, True).data[3, 0, 0]))
