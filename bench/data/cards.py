"""Dataset cards: TOML files in `bench/datasets/`, one per dataset (package data, so an
installed Maskbench has them too)."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

CARDS_DIR = Path(__file__).resolve().parents[1] / "datasets"
TORCHVISION_SETS = ("cifar10", "cifar100", "stl10")  # torchvision's readers; `bench download`


@cache
def load_card(name: str) -> dict[str, Any]:
    path = CARDS_DIR / f"{name}.toml"
    with path.open("rb") as f:
        return tomllib.load(f)


def card_names() -> list[str]:
    return sorted(p.stem for p in CARDS_DIR.glob("*.toml"))
