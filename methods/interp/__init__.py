"""Interpolation: hidden positions get a linear interpolation of the nearest visible features,
the parameter-free counterpart of QB-Heat's learned extrapolation (1-D for text; images use
the row/column rule of `interpolate_2d`)."""

from bench.core.cards import MethodCard
from bench.core.options import LayoutOptions

CARD = MethodCard(
    name="interp",
    summary="Random visible subset; hidden positions linearly interpolated from visible "
            "neighbours.",
    modalities=frozenset({"image", "text"}),
    # A random subset: a token encoder or a CNN with masked convolution; a block: any encoder.
    encoder_kinds=frozenset({"token", "dense", "masked"}),
    # visible=block: nothing outside the block is bracketed, so past its edge each hidden
    # position copies its nearest block token (QB-Heat with A = B = 0; Interp.describe).
    Options=LayoutOptions,
)
