"""Shared fixtures: tiny seeded configurations that run in seconds on a 2-core CPU."""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from bench.config import RunConfig
from bench.data import load_dataset
from bench.train import TrainStep

torch.set_num_threads(2)


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


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


class Killed(Exception):
    """Stands for SIGKILL in the middle of a training step."""


def kill_at_step(k: int, run: Callable[[], Any]) -> None:
    """Call `run()`, killing it at the start of training step `k` (0-based, counted across
    epochs), as SIGKILL would: whatever the run wrote until then stays on disk."""
    done: list[int] = []
    step = TrainStep.__call__

    def dies(self, x, generator):
        if len(done) == k:
            raise Killed
        done.append(1)
        return step(self, x, generator)

    TrainStep.__call__ = dies
    try:
        with pytest.raises(Killed):
            run()
    finally:
        TrainStep.__call__ = step


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
