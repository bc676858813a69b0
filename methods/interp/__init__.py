"""Interpolation: hidden positions get a linear interpolation of the visible features, the
parameter-free counterpart of QB-Heat's learned extrapolation. Text: between the nearest
visible neighbours on both sides (1-D). Images (`rule=linear`, the default): barycentric over
a Delaunay triangulation of the visible positions inside their convex hull, the nearest point
of the hull outside it; `rule=axes`: the earlier row/column rule (method.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.core.cards import Diagnostic, MethodCard
from bench.core.options import LayoutOptions


@dataclass
class InterpOptions(LayoutOptions):
    """`rule`: how an image's hidden positions are filled (text is 1-D: linear between the
    neighbours either way). `linear`: a true linear interpolation of the visible positions;
    `axes`: the mean of the row and column estimates where a position is bracketed along
    them, else the nearest visible token."""

    rule: Literal["linear", "axes"] = "linear"


CARD = MethodCard(
    name="interp",
    summary="Random visible subset; hidden positions linearly interpolated from visible "
            "neighbours.",
    modalities=frozenset({"image", "text"}),
    # A random subset: a token encoder or a CNN with masked convolution; a block: any encoder.
    encoder_kinds=frozenset({"token", "dense", "masked"}),
    # visible=block: nothing outside the block is bracketed, so past its edge each hidden
    # position copies its nearest block token (QB-Heat with A = B = 0; Interp.describe).
    Options=InterpOptions,
    diagnostics=(
        Diagnostic("interp_share_inside", "linear inside the hull", "share"),
        Diagnostic("interp_share_outside", "nearest hull point outside it", "share"),
        Diagnostic("interp_share_both_axes", "axes: row and column", "share"),
        Diagnostic("interp_share_one_axis", "axes: row or column only", "share"),
        Diagnostic("interp_share_nearest", "axes: nearest visible", "share"),
    ),
    diagnostics_title="interp: which rule filled the hidden positions",
    diagnostics_note=(
        "The share of hidden positions each rule fills, over 512 masks drawn as the run draws "
        "them. rule=linear (default): inside the visible positions' convex hull (barycentric "
        "weights over their Delaunay triangulation: an affine field is reproduced exactly; "
        "text: bracketed on both sides) or outside it (the value at the nearest point of the "
        "hull; text: beyond the ends, the nearest visible). rule=axes: the mean of the row and "
        "column estimates, one of them, or a copy of the nearest visible token."),
)
