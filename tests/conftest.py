"""Shared fixtures: tiny seeded configurations that run in seconds on a 2-core CPU."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

from bench.config import RunConfig
from bench.data import load_dataset
from bench.train import TrainStep

torch.set_num_threads(2)


def tiny_config(**overrides) -> RunConfig:
    base = dict(
        method="mae", dataset="digits", encoder="vit-micro", epochs=2, batch_size=64,
        train_limit=256, probe_steps=30, eval_train_limit=512, eval_test_limit=128,
        decoder_dim=64, decoder_depth=1, decoder_heads=2, device="cpu",
    )
    return RunConfig(**{**base, **overrides})


def require(module: str) -> Any:
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
