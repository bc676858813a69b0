"""Helpers shared by the test folders (tiny seeded configurations, data writers, a killed
step, the conformance cases): test files import these, never each other. Fixtures live in
conftest.py."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from bench.core.config import RunConfig
from bench.core.references import REFERENCE_ROWS
from bench.core.spec import DataSpec
from bench.data import streaming as S
from bench.run.hooks import Hook, StepAt, watching
from methods import method_cards
from methods.base import build_method


def require(present: bool, message: str) -> None:
    """Skip a test whose outside resource (a Debian data package, a program) is missing here;
    under CI=true .ci/run installs it, so there its absence fails the test instead."""
    if present:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (.ci/run installs it)")
    pytest.skip(message)


def require_bible() -> None:
    require(shutil.which("bible") is not None, "`bible` absent: sudo apt-get install bible-kjv")


def require_wordnet() -> None:
    require(Path("/usr/share/wordnet/data.noun").is_file(),
            "WordNet files absent: sudo apt-get install wordnet-base")


def require_fashion_mnist() -> None:
    require(Path("/usr/share/datasets/fashion-mnist").is_dir(),
            "Fashion-MNIST absent: sudo apt-get install dataset-fashion-mnist")


TINY_WORDS = ("apple pear plum fig", "horse cow goat sheep", "red blue green grey")


def tiny_text_corpus():
    """300 labelled texts of 1-12 words, each class with its own words: the in-repo corpus of
    the text tests (no Debian package needed)."""
    from bench.data.corpora import make_corpus

    texts, labels = [], []
    for i in range(300):
        words = TINY_WORDS[i % 3].split()
        texts.append(" ".join(words[(i + k) % 4] for k in range(1 + i % 12)) + f" n{i}")
        labels.append(i % 3)
    return make_corpus("tiny", texts, labels, ["fruit", "animal", "colour"])


def tiny_config(**overrides) -> RunConfig:
    base = dict(
        method="mae", dataset="digits", encoder="vit-micro", epochs=2, batch_size=64,
        train_limit=256, probe_steps=30, eval_train_limit=512, eval_test_limit=128,
        decoder_dim=64, decoder_depth=1, decoder_heads=2, device="cpu",
    )
    return RunConfig(**{**base, **overrides})


def require_module(module: str) -> Any:
    """Import an optional extra's package (`pip install -e '.[dev]'` has them all): skip when it
    is missing, except under CI=true, where a missing package is a failure."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


class Killed(Exception):
    """Stands for SIGKILL in the middle of a training step."""


class KillAt(Hook):
    """Raises Killed at the start of the `k`-th training step it sees (0-based, counted across
    epochs), as SIGKILL would: whatever the run wrote until then stays on disk."""

    def __init__(self, k: int):
        self.k, self.seen = k, 0

    def on_step_start(self, at: StepAt) -> None:
        if self.seen == self.k:
            raise Killed
        self.seen += 1


def kill_at_step(k: int, run: Callable[[], Any]) -> None:
    """Call `run()`, killing it at the start of its training step `k` (see KillAt)."""
    with watching(KillAt(k)), pytest.raises(Killed):
        run()


class RowsSeen(Hook):
    """The rows (inputs of this process) of every training step that ends."""

    def __init__(self):
        self.rows: list[int] = []

    def on_step_end(self, at: StepAt, loss) -> None:
        self.rows.append(at.rows)


class StepRecorder(Hook):
    """Records `(epoch, index in epoch, sample indices)` of every step a run takes."""

    def __init__(self):
        self.steps: list[tuple[int, int, list[int]]] = []

    def on_step_start(self, at: StepAt) -> None:
        self.steps.append((at.epoch, at.index, at.samples.tolist()))


class FillCall(NamedTuple):
    latent: torch.Tensor
    visible: Any
    grid: tuple[int, ...]
    out: torch.Tensor


@contextmanager
def recorded_fill(method: torch.nn.Module) -> Iterator[list[FillCall]]:
    """Inside: every call of `method.fill` is recorded (detached copies of its input and
    output), and the fill still runs as it is."""
    calls: list[FillCall] = []
    fill = method.fill

    def recording(latent, visible, grid):
        out = fill(latent, visible, grid)
        calls.append(FillCall(latent.detach().clone(), visible, grid, out.detach().clone()))
        return out

    method.fill = recording
    try:
        yield calls
    finally:
        del method.fill  # the class's fill again


def assert_compiles_as_one_graph(model: torch.nn.Module, x: torch.Tensor) -> None:
    """`model`'s pretraining forward traces as one graph (fullgraph: no graph break), is not
    recompiled when the masks change, and gives the eager objective (loss plus any regularizer)
    and gradients. (aot_eager
    backend: dynamo and AOT autograd without code generation, so it takes seconds on a CPU.)"""
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    gen = torch.Generator().manual_seed(0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            visible = model.method.choose_visible(len(x), model.spec.grid, gen)
            results = []
            for fn in (compiled, model):
                model.zero_grad(set_to_none=True)
                loss = fn(x, None, visible).objective
                loss.backward()
                grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
                results.append((loss.detach(), grads))
            (loss_c, grads_c), (loss_e, grads_e) = results
            torch.testing.assert_close(loss_c, loss_e)
            assert len(grads_c) == len(grads_e) > 0
            for gc, ge in zip(grads_c, grads_e):
                torch.testing.assert_close(gc, ge)


TINY = ["--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--train-limit", "256",
        "--eval-train-limit", "512", "--eval-test-limit", "128", "--no-progress",
        "probe_steps=30", "decoder_dim=64", "decoder_depth=1", "decoder_heads=2", "device=cpu"]


def write_run(root: Path, name: str, method: str, seed: int, metrics: dict | None = None, *,
              options: dict | None = None, encoder: str = "vit-micro", status: str = "ok",
              train_s: float = 6.0, setup: dict | None = None, periodic: bool = True,
              compute: dict | None = None, curve: dict[int, float] | None = None,
              dataset: str = "fashion-mnist", **config) -> Path:
    """A run folder as bench.run.train writes it (what a report reads), with a 3-epoch curve
    ending at the final kNN: kNN at epochs 1 and 2 too unless not `periodic` (`curve`: its
    values by epoch, else the final kNN - 0.1 per epoch before the end); `compute` adds to
    summary's (1,000 samples/s for `train_s` s by default)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    is_ref = method in REFERENCE_ROWS
    cfg = {"method": method, "options": {} if is_ref else options or {"mask_ratio": 0.75},
           "dataset": dataset, "encoder": encoder, "seed": seed,
           "epochs": 0 if is_ref else 3, "git_sha": "abc123", "versions": {"torch": "2.4"},
           **config}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    metrics = metrics or {}
    compute = {"pretrain_flops_per_sample": 0.0 if is_ref else 2e9, "wall_s": 10.0,
               "train_samples_per_s": None if is_ref else 1000.0, "device": "cpu (test)",
               **({} if is_ref else {"train_s": train_s}), **(compute or {})}
    summary = {"run_id": name, "method": method, "dataset": dataset, "encoder": encoder,
               "seed": seed, "status": status, "metrics": metrics, "compute": compute,
               **({"setup": setup} if setup else {})}
    if status == "failed":
        summary |= {"error": "RuntimeError: CUDA out of memory", "metrics": {}, "compute": {}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    if not is_ref and status == "ok":
        knn = metrics.get("knn_top1", 0.5)
        knn_at = curve or {e: knn - 0.1 * (3 - e) for e in (1, 2)}
        lines = [{"epoch": e, "loss": 1.0 / e, "lr": 1e-3,
                  **({"knn_top1": knn_at[e]} if e in knn_at and e < 3 and periodic else {})}
                 for e in (1, 2, 3)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run_dir


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/config.json"))


READING = {"step": "block", "norm": True, "order": "avg", "at": "decoder", "position": "random"}

SPECS = {
    "image": DataSpec("image", (8, 8), patch_size=4, in_chans=1),
    "text": DataSpec("text", (32,), vocab_size=50),
}


CASES = [
    (name, modality, {})
    for name in method_cards().names()
    for modality in sorted(method_cards().get(name).modalities)
] + [("qbheat", "image", {**READING, "commute": 0.1})] + [  # 1-D readings: test_qbheat.py
    ("qbheat", modality, {"visible": "random"}) for modality in ("image", "text")
] + [("interp", "image", {"rule": "axes"})]


D = 16  # decoder width


ENCODER_D = 32


def make(name, modality, options, seed=0):
    torch.manual_seed(seed)
    return build_method(name, options, D, modality, "token", encoder_dim=ENCODER_D)


def inputs(modality, batch=3):
    if modality == "image":
        return torch.randn(batch, 1, 32, 32)
    return torch.randint(4, 50, (batch, 32))


def pixels(n: int, size: int, offset: int = 0) -> np.ndarray:
    """uint8 [n, 3, size, size]: value (7i + 50c + 3h + w) mod 256, so a swapped axis (CHW vs
    HWC, rows vs columns) shows in the values."""
    i, c, h, w = np.ogrid[offset:offset + n, :3, :size, :size]
    return ((7 * i + 50 * c + 3 * h + w) % 256).astype(np.uint8)


def md5(path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root, monkeypatch, name: str, n_train: int, n_test: int) -> list[str]:
    """CIFAR-10 (`cifar-10-batches-py/`: 5 train batches, a test batch, `batches.meta`) or
    CIFAR-100 (`cifar-100-python/`: train, test, meta): pickled dicts, images as rows of 3072
    bytes (channel-major). Labels are i mod (number of classes). Returns the class names."""
    import pickle

    import torchvision

    cls = getattr(torchvision.datasets, S.load_card(name)["torchvision_class"])
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    n_classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"
    classes = [f"{name}-class-{k}" for k in range(n_classes)]

    def write(file: str, start: int, n: int) -> list[str]:
        labels = [(start + j) % n_classes for j in range(n)]
        entry = {"data": pixels(n, 32, start).reshape(n, 3072), label_key: labels}
        (folder / file).write_bytes(pickle.dumps(entry))
        return [file, md5(folder / file)]

    train_files = [f for f, _ in cls.train_list]
    per = n_train // len(train_files)
    train = [write(f, k * per, per) for k, f in enumerate(train_files)]
    test = [write(f, 1000, n_test) for f, _ in cls.test_list]
    meta = folder / cls.meta["filename"]
    meta.write_bytes(pickle.dumps({cls.meta["key"]: classes}))
    monkeypatch.setattr(cls, "train_list", train)
    monkeypatch.setattr(cls, "test_list", test)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(meta)})
    return classes


def poll(fn, timeout_s: float, interval_s: float = 0.25):
    """Call fn until it returns something truthy or timeout_s passes; return the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


ROOT = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = ROOT / "scripts" / "slurm-dev-cluster.sh"


IMAGE_CLASSES = ("cat", "dog", "fox")


# QB-Heat with every open option off its default (step, norm, order, where it fills, penalty).


def tiny_mosaic(n_train: int = 96, n_test: int = 32, seed: int = 0):
    """A `DenseImageData` like fashion-mosaic at test size: 32x32 canvases of 2-3 of
    scikit-learn's digits (0-2, upsampled to 12x12) with per-pixel labels (no Debian package)."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from bench.data.mosaic import DenseImageData, MosaicRule, compose

    d = load_digits()
    keep = d.target < 3
    small = torch.from_numpy(d.images[keep]).float()[:, None] / 16.0
    glyphs = (F.interpolate(small, size=(12, 12), mode="bilinear") * 255).round().to(torch.uint8)
    glyphs, labels = glyphs[:, 0].numpy(), d.target[keep].astype(np.int64)
    rule = MosaicRule(32, 2, 3, 16, 0.25, 20, seed)
    half = len(glyphs) // 2
    train = compose(glyphs[:half], labels[:half], n_train, rule, 0)
    test = compose(glyphs[half:], labels[half:], n_test, rule, 1)
    t = {f"{s}_{k}": torch.from_numpy(v) for s, made in (("train", train), ("test", test))
         for k, v in made.items()}
    return DenseImageData(
        name="tiny-mosaic", train_x=t["train_x"], train_y=t["train_y"], test_x=t["test_x"],
        test_y=t["test_y"], classes=["0", "1", "2"], mean=(0.1,), std=(0.3,), patch_size=4,
        fingerprint="tiny", train_masks=t["train_masks"], test_masks=t["test_masks"])
