"""Shared fixtures: tiny seeded configurations that run in seconds on a 2-core CPU."""

from __future__ import annotations

import pytest
import torch

from bench.config import RunConfig
from bench.data import load_dataset

torch.set_num_threads(2)


def tiny_config(**overrides) -> RunConfig:
    base = dict(
        method="mae", dataset="digits", encoder="vit-micro", epochs=2, batch_size=64,
        train_limit=256, probe_steps=30, eval_train_limit=512, eval_test_limit=128,
        decoder_dim=64, decoder_depth=1, decoder_heads=2, device="cpu",
    )
    return RunConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")
