import gzip
import struct

import numpy as np
import pytest
import torch

from bench.core.errors import ConfigError, DataNotFoundError
from bench.data import load_dataset
from bench.data.images import augment, find_idx_root, load_card, read_idx
from tests.helpers import require_fashion_mnist


def write_idx(path, array, gz):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    p = tmp_path / ("x.gz" if gz else "x")
    write_idx(p, a, gz)
    assert np.array_equal(read_idx(p), a)


def test_discovery_order_and_torchvision_layout(tmp_path, monkeypatch):
    card = load_card("fashion-mnist")
    tv = tmp_path / "tv" / "FashionMNIST" / "raw"
    tv.mkdir(parents=True)
    for stem in card["files"].values():
        (tv / stem).write_bytes(b"")
    monkeypatch.setenv("MASKBENCH_DATA", str(tmp_path / "tv"))
    assert find_idx_root(card, None) == tv
    own = tmp_path / "own"
    own.mkdir()
    for stem in card["files"].values():
        (own / (stem + ".gz")).write_bytes(b"")
    assert find_idx_root(card, str(own)) == own  # --data-root comes first
    missing = dict(card, default_location=str(tmp_path / "none"))
    monkeypatch.delenv("MASKBENCH_DATA")
    with pytest.raises(DataNotFoundError, match="--data-root"):
        find_idx_root(missing, None)


def test_an_explicit_data_root_is_never_replaced(tmp_path, monkeypatch):
    """A --data-root without the files is an error naming the files expected there, even
    though $MASKBENCH_DATA and Debian's copy hold them (it used to train on those silently)."""
    card = load_card("fashion-mnist")
    env = tmp_path / "env"
    env.mkdir()
    for stem in card["files"].values():
        (env / stem).write_bytes(b"")
    monkeypatch.setenv("MASKBENCH_DATA", str(env))
    with pytest.raises(DataNotFoundError) as err:
        find_idx_root(card, str(tmp_path / "typo"))
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "typo") in message
    assert str(env) not in message and "\n" not in message
    with pytest.raises(ConfigError, match="bundled with scikit-learn"):
        load_dataset("digits", data_root=str(tmp_path))


def test_fashion_mnist_real_files():
    require_fashion_mnist()
    d = load_dataset("fashion-mnist")
    assert d.train_x.shape == (60000, 1, 32, 32) and d.test_x.shape == (10000, 1, 32, 32)
    assert d.spec.grid == (8, 8)
    assert d.train_x[:, :, :2].max() == 0  # zero padding
    assert sorted(d.train_y.unique().tolist()) == list(range(10))
    card = load_card("fashion-mnist")
    m = d.train_x[:5000].float().div(255).mean().item()
    assert abs(m - card["mean"][0]) < 0.01


def test_augment_is_seeded_and_shape_preserving():
    x = torch.rand(8, 1, 32, 32)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(1)))


def test_digits_card_stats():
    d = load_dataset("digits")
    card = load_card("digits")
    assert len(d.train_x) == card["n_train"] and len(d.test_x) == card["n_test"]
