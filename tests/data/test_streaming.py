"""Streamed image data on a generated ImageNet-style folder: decoding, order, the DataLoader path
equal to the in-process one, training end to end; torchvision sets' files and errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from bench.core import files, store
from bench.core.errors import DataNotFoundError
from bench.data import load_dataset
from bench.data import streaming as S
from bench.plan.sweep import resolve_run
from bench.run.train import train_run
from tests.helpers import IMAGE_CLASSES, md5, pixels, tiny_config, write_cifar


@pytest.fixture(scope="module")
def data(image_folder):
    return S.load_imagefolder(str(image_folder), image_size=32, patch_size=4)


def test_imagefolder_decodes_classes_and_a_mixed_stable_order(image_folder, data):
    assert data.classes == list(IMAGE_CLASSES)
    assert data.spec.grid == (8, 8) and data.spec.in_chans == 3
    assert data.n_pretrain() == 24 and len(data.test_set) == 9
    test = data.eval_split("test")
    assert test.x.dtype == torch.uint8 and test.x.shape == (9, 3, 32, 32)
    assert sorted(test.y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # The colour of each class survives decoding: its channel is the brightest.
    assert torch.equal(test.x.float().mean(dim=(2, 3)).argmax(1), test.y)
    first = data.eval_split("train", 6).y.tolist()
    assert len(set(first)) > 1  # "the first N" is not one class
    again = S.load_imagefolder(str(image_folder), image_size=32, patch_size=4)
    assert again.fingerprint == data.fingerprint and again.train_set.files == data.train_set.files
    assert S.load_imagefolder(str(image_folder), image_size=16, patch_size=4).fingerprint != data.fingerprint


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


def test_pinned_streaming_forced_gives_the_same_batches(data, monkeypatch):
    """`pin_memory=True` reaches the DataLoader on any device (None: only for CUDA), and the
    batches are still the in-process ones. (Without an accelerator torch itself then skips
    the pinning thread: that part runs on a GPU only.)"""
    asked = []
    loader = S.DataLoader

    def spy(*args, **kwargs):
        asked.append(kwargs["pin_memory"])
        return loader(*args, **kwargs)

    monkeypatch.setattr(S, "DataLoader", spy)
    batches = torch.tensor([[3, 1, 4, 15, 9, 2, 6, 5]])
    direct = data.pretrain_batch(batches[0], torch.Generator().manual_seed(1), True)
    for pin in (True, None):
        streamed = S.StreamingImageData(**{**data.__dict__, "workers": 1, "pin_memory": pin})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "'pin_memory' argument is set as true")
            (x,) = S.pretrain_batches(streamed, batches, torch.Generator().manual_seed(1), True,
                                      slice(None))
        assert torch.equal(x, direct)
    assert asked == [True, False]


def test_trains_end_to_end_on_the_folder(tmp_path, image_folder, data):
    cfg = resolve_run(tiny_config(dataset=f"imagefolder:{image_folder}", epochs=1, batch_size=8,
                                  train_limit=None, eval_train_limit=None, eval_test_limit=None,
                                  protocols="knn"))
    s = train_run(cfg, tmp_path / cfg.run_id, progress=False, data=data)
    assert s["status"] == "ok" and 0 <= s["metrics"]["knn_top1"] <= 1
    assert store.read_json(tmp_path / cfg.run_id / files.CONFIG)["data_fingerprint"] == data.fingerprint


def test_imagefolder_errors_name_the_layout(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"train/<class>/<image>.*val,test"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as err:  # a class folder with no image: named
        load_dataset(f"imagefolder:{tmp_path}")
    assert f"class folder {tmp_path / 'train' / 'a'} holds no image" in str(err.value)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "x.png")
    (tmp_path / "train" / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "b" / "y.png")
    with pytest.raises(DataNotFoundError, match=f"{tmp_path / 'val'} has no b/ folder"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_links_to_folders_are_not_followed(tmp_path, image_folder, monkeypatch, caplog):
    """A link inside a class folder that loops back (`train/cat/loop -> ..`) once made 24
    images 1,000s, class-dog images labelled cat; one that leaves the tree added images from
    elsewhere. Neither is followed: the data is the folder's own, said in one warning line.
    A class folder that links above or into the image folder is refused."""
    import shutil

    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "images"
    shutil.copytree(image_folder, root)
    clean = S.load_imagefolder(str(root), image_size=32, patch_size=4)
    (root / "train" / "cat" / "loop").symlink_to("..")
    (root / "train" / "dog" / "away").symlink_to(image_folder / "val")
    linked = S.load_imagefolder(str(root), image_size=32, patch_size=4)
    assert linked.train_set.files == [f.replace(str(image_folder), str(root))
                                      for f in data_files(image_folder)]
    assert linked.fingerprint == clean.fingerprint and linked.n_pretrain() == 24
    assert "2 link(s) to folders inside class folders not followed (first: train/cat/loop -> " \
           ".." in caplog.text
    (root / "train" / "cat" / "loop").unlink()
    (root / "train" / "mouse").symlink_to(root / "train" / "dog")  # a class twice
    with pytest.raises(DataNotFoundError, match="class folder train/mouse links to .* inside "
                       "or above the image folder"):
        S.load_imagefolder(str(root), image_size=32, patch_size=4)


def data_files(folder) -> list[str]:
    return S.load_imagefolder(str(folder), image_size=32, patch_size=4).train_set.files


def test_unreadable_images_are_skipped_counted_or_refused(tmp_path, image_folder, monkeypatch, capsys):
    """A truncated JPEG and a file that is no image: left out of the data (the rest trains),
    counted in summary.json with their paths; `strict_data=true` refuses the run in one line
    naming the first, before anything is written. The check is cached: a second load decodes
    nothing."""
    import shutil

    from bench.cli import main
    from bench.data import image_scan

    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad"
    shutil.copytree(image_folder, bad)
    jpeg = (bad / "train" / "dog" / "0.jpg").read_bytes()
    (bad / "train" / "dog" / "0.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad / "val" / "fox" / "9.jpg").write_bytes(b"not a jpeg")
    data = S.load_imagefolder(str(bad), image_size=32, patch_size=4)
    assert data.n_pretrain() == 23 and len(data.test_set) == 9  # 24 - 1 and 9 + 1 - 1
    assert [s.split(":")[0] for s in data.skipped] == ["train/dog/0.jpg", "val/fox/9.jpg"]
    assert "Truncated" in data.skipped[0]
    monkeypatch.setattr(image_scan, "decode_error", lambda path: pytest.fail("rescanned"))
    assert S.load_imagefolder(str(bad), image_size=32, patch_size=4).skipped == data.skipped
    monkeypatch.undo()
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    cfg = resolve_run(tiny_config(dataset=f"imagefolder:{bad}", epochs=1, batch_size=8,
                                  train_limit=None, eval_train_limit=None, eval_test_limit=None,
                                  protocols="knn"))
    summary = train_run(cfg, tmp_path / "runs" / cfg.run_id, progress=False, data=data)
    assert summary["status"] == "ok"
    assert summary["data"] == {"skipped": 2, "skipped_files": list(data.skipped)}
    out = tmp_path / "strict"
    argv = ["run", "--methods", "mae", "--dataset", f"imagefolder:{bad}", "--out", str(out),
            "--no-progress", "strict_data=true", "epochs=1", "batch_size=8"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "train/dog/0.jpg" in err and "strict_data=true refuses" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_torchvision_set_missing_names_files_and_download(tmp_path, monkeypatch):
    monkeypatch.delenv("MASKBENCH_DATA", raising=False)
    card = dict(S.load_card("cifar10"), default_location=str(tmp_path / "default"))
    monkeypatch.setattr(S, "load_card", lambda name: card)
    with pytest.raises(DataNotFoundError) as err:
        S.load_torchvision("cifar10", str(tmp_path / "mine"))
    msg = str(err.value)
    assert "cifar-10-batches-py/{data_batch_1" in msg and str(tmp_path / "mine") in msg
    assert "python -m bench download cifar10" in msg


# ------------------------------------------------------------------ torchvision's own files
# Small files written in each set's genuine format and read by torchvision's real classes. The
# only change to torchvision is its table of md5 sums (of the published archives), set to the
# sums of these files so its integrity check passes.


def write_stl10(root, monkeypatch, n_train: int, n_unlabeled: int, n_test: int) -> list[str]:
    """`stl10_binary/`: raw uint8 images stored column-major (each 96x96 plane transposed),
    labels 1..10 one byte each, `class_names.txt`."""
    import torchvision

    cls = torchvision.datasets.STL10
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    classes = [f"stl-class-{k}" for k in range(10)]
    (folder / cls.class_names_file).write_text("\n".join(classes) + "\n")

    def write(x_file: str, y_file: str | None, start: int, n: int) -> list[list[str]]:
        (folder / x_file).write_bytes(pixels(n, 96, start).transpose(0, 1, 3, 2).tobytes())
        out = [[x_file, md5(folder / x_file)]]
        if y_file:
            (folder / y_file).write_bytes(bytes(1 + (start + j) % 10 for j in range(n)))
            out.append([y_file, md5(folder / y_file)])
        return out

    train = write("train_X.bin", "train_y.bin", 0, n_train)
    train += write("unlabeled_X.bin", None, 500, n_unlabeled)
    monkeypatch.setattr(cls, "train_list", train)
    monkeypatch.setattr(cls, "test_list", write("test_X.bin", "test_y.bin", 1000, n_test))
    return classes


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to fetch from the network fails the test."""
    import torchvision.datasets.utils as U

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download: {args}")

    for name in ("download_url", "download_and_extract_archive"):
        monkeypatch.setattr(U, name, refuse)
    for module in ("cifar", "stl10"):
        mod = __import__(f"torchvision.datasets.{module}", fromlist=["x"])
        monkeypatch.setattr(mod, "download_and_extract_archive", refuse)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_become_streamed_data(tmp_path, monkeypatch, no_download, name):
    classes = write_cifar(tmp_path, monkeypatch, name, n_train=50, n_test=12)
    d = S.load_torchvision(name, str(tmp_path))
    n_classes = len(classes)
    assert d.classes == classes and d.spec.grid == (8, 8) and d.spec.in_chans == 3
    assert d.n_pretrain() == 50 and len(d.test_set) == 12
    for index in (0, 13, 49):
        x, y = d.pretrain_set[index]
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
        assert torch.equal(x, torch.from_numpy(pixels(1, 32, index)[0])) and y == index % n_classes
    test = d.eval_split("test")
    assert torch.equal(test.x, torch.from_numpy(pixels(12, 32, 1000)))
    assert test.y.tolist() == [(1000 + j) % n_classes for j in range(12)]


def test_stl10_pretrains_on_train_plus_unlabeled(tmp_path, monkeypatch, no_download):
    classes = write_stl10(tmp_path, monkeypatch, n_train=6, n_unlabeled=4, n_test=5)
    d = S.load_torchvision("stl10", str(tmp_path))
    assert d.classes == classes and d.spec.grid == (12, 12)
    assert d.n_pretrain() == 10 and len(d.train_set) == 6 and len(d.test_set) == 5
    x, y = d.pretrain_set[7]  # an unlabeled image: the second of unlabeled_X.bin
    assert torch.equal(x, torch.from_numpy(pixels(1, 96, 501)[0])) and y == -1
    train = d.eval_split("train")
    assert torch.equal(train.x, torch.from_numpy(pixels(6, 96)))
    assert train.y.tolist() == [j % 10 for j in range(6)]
    test = d.eval_split("test")
    assert torch.equal(test.x, torch.from_numpy(pixels(5, 96, 1000)))
    assert test.y.tolist() == [(1000 + j) % 10 for j in range(5)]  # test_y.bin's 1..10, less 1


def test_damaged_files_name_the_set_and_how_to_fix_it(tmp_path, monkeypatch, no_download, capsys):
    """A file that fails torchvision's md5 check (a partial copy, another release) is a one-line
    error naming the set, its folder and `bench download`, not torchvision's RuntimeError."""
    from bench.cli import main

    write_cifar(tmp_path, monkeypatch, "cifar10", n_train=10, n_test=2)
    with (tmp_path / "cifar-10-batches-py" / "data_batch_3").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py is unreadable") as err:
        S.load_torchvision("cifar10", str(tmp_path))
    assert f"python -m bench download cifar10 --data-root {tmp_path}" in str(err.value)
    assert "download=True" not in str(err.value)
    assert main(["run", "--methods", "mae", "--dataset", "cifar10", "--data-root", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: cifar10 under") and "\n" not in line


def test_run_on_cifar10_files_end_to_end(tmp_path, monkeypatch, no_download):
    """`bench run --dataset cifar10 --data-root DIR` on the files, nothing downloaded."""
    from bench.cli import main

    monkeypatch.setenv("MASKBENCH_DATA_WORKERS", "0")
    write_cifar(tmp_path / "data", monkeypatch, "cifar10", n_train=80, n_test=20)
    out = tmp_path / "out"
    assert main(["run", "--methods", "mae", "--dataset", "cifar10", "--data-root",
                 str(tmp_path / "data"), "--epochs", "1", "--batch-size", "16", "--out", str(out),
                 "--no-progress", "--device", "cpu", "protocols=knn", "decoder_dim=32",
                 "decoder_depth=1", "decoder_heads=2"]) == 0
    (summary,) = [store.read_json(p) for p in out.glob("*/summary.json")]
    assert summary["status"] == "ok" and summary["dataset"] == "cifar10"
    assert 0 <= summary["metrics"]["knn_top1"] <= 1


def test_download_only_when_asked_and_fails_in_one_line(tmp_path, monkeypatch, capsys):
    """`bench download cifar10` asks torchvision to fetch the archive into --data-root; without
    network that is one line naming the set and the folder, exit 2, and nothing else runs."""
    import urllib.error

    import torchvision.datasets.cifar as cifar

    asked = []

    def offline(url, root, **kwargs):
        asked.append((url, root))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    from bench.cli import main

    assert main(["download", "cifar10", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: downloading cifar10 into {tmp_path} failed") and "\n" not in err
    assert asked == [(cifar.CIFAR10.url, str(tmp_path))]
