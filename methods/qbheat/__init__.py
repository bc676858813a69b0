"""QB-Heat (Chen et al., 2022, arXiv 2211.13228): the encoder sees one contiguous block and
the rest of the grid is extrapolated from it by learned heat operators (method.py). This card
holds the options, the readings the paper leaves open (README, "QB-Heat: what the paper
states"), and the figures a run records about the trained operators."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bench.core.cards import Diagnostic, MethodCard
from bench.core.options import MethodOptions

Order = Literal["xy", "yx", "avg"]
Step = Literal["token", "block"]


def parse_param(text: str) -> tuple[str, int | None]:
    """`"full"` | `"diag"` | `"lowrank:R"` -> (kind, rank); anything else raises ValueError."""
    if text in ("full", "diag"):
        return text, None
    kind, _, rank = text.partition(":")
    if kind == "lowrank" and rank.isdigit() and int(rank) > 0:
        return kind, int(rank)
    raise ValueError(f"param={text!r}: expected full, diag or lowrank:R with R a positive integer")


@dataclass
class QBHeatOptions(MethodOptions):
    """The paper's reading by default (README, "QB-Heat: what the paper states"); every place
    where it is open is an option."""

    position: Literal["quadrant", "random", "center"] = "quadrant"  # the paper's corner quarter
    # What the encoder sees: the paper's one block, or a random subset (the mask-shape factor
    # of sweeps/factorial.toml), each hidden position then propagated from its nearest
    # visible one by the same unit steps (method.py, `propagate_from_nearest`).
    visible: Literal["block", "random"] = "block"
    at: Literal["encoder", "decoder"] = "encoder"  # propagate the encoder's features
    order: Order = "xy"
    step: Step = "token"  # one step per token, or per block extent
    norm: bool = False  # FINOLA: standardise each feature before the linear map
    param: str = "full"  # full | diag | lowrank:R
    commute: float = 0.0  # weight of ||AB - BA||_F^2 in the loss

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_param(self.param)
        if self.visible == "random" and self.step == "block":
            raise ValueError("step=block steps by the block's extent: it needs visible=block")
        if not (self.commute >= 0 and math.isfinite(self.commute)):
            raise ValueError(f"commute must be a finite weight >= 0, got {self.commute}")


CARD = MethodCard(
    name="qbheat",
    summary="One contiguous block; hidden positions extrapolated by learned heat operators A, B.",
    modalities=frozenset({"image", "text"}),
    # a block: any encoder; a random subset (visible=random): a token encoder or a CNN with
    # masked convolution
    encoder_kinds=frozenset({"token", "dense", "masked"}),
    Options=QBHeatOptions,
    diagnostics=(
        Diagnostic("heat_norm_A", "‖A‖_F"),
        Diagnostic("heat_norm_B", "‖B‖_F"),
        Diagnostic("heat_radius_right", "ρ(I+A)"),
        Diagnostic("heat_radius_left", "ρ(I−A)"),
        Diagnostic("heat_radius_down", "ρ(I+B)"),
        Diagnostic("heat_radius_up", "ρ(I−B)"),
        Diagnostic("heat_commutator", "‖AB−BA‖/(‖A‖‖B‖)"),
    ),
    diagnostics_title="QB-Heat: the learned operators",
    diagnostics_note=(
        "What training found. ρ: spectral radius of a unit step (I+A right, I−A left, I+B "
        "down, I−B up; above 1 that direction grows with every step; with qbheat.norm=true a "
        "step adds n(z)A^T and ρ only bounds the linear part). ‖AB−BA‖/(‖A‖‖B‖): 0 where "
        "dz/dx = Az, dz/dy = Bz has a solution for any block (then the xy and yx orders "
        "agree). Final epoch; also in metrics.jsonl at --eval-every points."),
)
