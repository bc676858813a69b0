"""Building an encoder preset (`bench.models.presets`) for a dataset: each family's builder
(`vit`: bench.models.vit, `cnn`: bench.models.cnn) called with the preset's settings.

An encoder turns the input into tokens on the method's grid. Token encoders (ViT) drop
hidden tokens and process only the visible ones; dense encoders (CNNs) need one contiguous
block of pixels and return its feature map at stride = patch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.core.spec import DataSpec
from bench.models.cnn import build_cnn
from bench.models.parts import Encoder
from bench.models.presets import preset_for
from bench.models.vit import build_vit

FAMILIES: dict[str, Callable[..., Encoder]] = {"vit": build_vit, "cnn": build_cnn}


def build_encoder(name: str, spec: DataSpec, **overrides: Any) -> Encoder:
    """Preset `name` built for `spec`; `overrides` replace some of its settings (e.g.
    `depth=6` for a ViT, `dim=256` for either family)."""
    preset = preset_for(name, spec.modality).with_overrides(overrides)
    return FAMILIES[preset.family](spec, **preset.settings)
