"""MAE (He et al., 2021): hidden positions are filled with one learned [MASK] token."""

from bench.core.cards import MethodCard
from bench.core.options import LayoutOptions

CARD = MethodCard(
    name="mae",
    summary="Random visible subset; every hidden position gets the same learned [MASK] token.",
    modalities=frozenset({"image", "text"}),
    # A random subset: a token encoder or a CNN with masked convolution; a block: any encoder.
    encoder_kinds=frozenset({"token", "dense", "masked"}),
    Options=LayoutOptions,
)
