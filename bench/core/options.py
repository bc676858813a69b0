"""The options every method has, importing no torch: a method file subclasses these for its
own `Options`, and planning (`bench sweep --dry-run`) reads and checks them without loading a
model (bench.plan.method_cards)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class MethodOptions:
    """Options every method has; subclasses add typed fields (settable as `name.key=value`)."""

    mask_ratio: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")


@dataclass
class LayoutOptions(MethodOptions):
    """Options of a method whose encoder sees a random subset by default, or QB-Heat's one
    contiguous block (`visible=block`: the mask-shape factor of sweeps/factorial.toml). The
    block follows QB-Heat's placement rule by default, a corner quadrant (`block_position`,
    as `qbheat.position`), so a mask-shape x fill comparison changes one factor at a time."""

    visible: Literal["random", "block"] = "random"
    block_position: Literal["quadrant", "random", "center"] = "quadrant"


def options_dict(options: MethodOptions) -> dict[str, Any]:
    """Every option spelled out (what config.json records and the run id hashes)."""
    return dataclasses.asdict(options)
