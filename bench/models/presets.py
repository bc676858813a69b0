"""The encoder presets: names, descriptions and the settings their family builds them from.

Plain data, importing no torch: `bench list`, `sweep --dry-run` and the config checks read the
presets without loading a model. A preset is built by its family (`bench.models.vit`,
`bench.models.cnn`) through `bench.models.encoders.build_encoder`, which also takes overrides
of the preset's settings (`build_encoder("vit-tiny", spec, depth=6)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bench.core.errors import ConfigError, IncompatibleError, UnknownEncoderError
from bench.core.registry import Registry

ALL_MODALITIES = frozenset({"image", "text"})
ALL_KINDS = frozenset({"token", "dense"})


@dataclass(frozen=True)
class EncoderPreset:
    """A named encoder: `family` builds it from `settings` (its keyword arguments)."""

    name: str
    family: str  # "vit" | "cnn": the module whose builder takes `settings`
    kind: str  # "token": drops hidden tokens; "dense": needs one contiguous block
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    modalities: frozenset[str] = ALL_MODALITIES
    strides: tuple[int, ...] | None = None  # the patch sizes it can be built at (None: any)

    @property
    def offers(self) -> frozenset[str]:
        """The encoder kinds it serves (bench.core.cards.KIND_NAMES): its `kind`, and "masked"
        where its family masks convolutions (`masked` setting: a random subset too)."""
        return frozenset({self.kind} | ({"masked"} if self.settings.get("masked") else set()))

    def with_overrides(self, overrides: Mapping[str, Any]) -> EncoderPreset:
        """This preset with some settings replaced; a key the preset has not is refused."""
        unknown = sorted(set(overrides) - set(self.settings))
        if unknown:
            raise ConfigError(f"encoder {self.name!r} has no setting {', '.join(unknown)}; "
                              f"its settings: {', '.join(sorted(self.settings))}")
        return replace(self, settings={**self.settings, **overrides})


ENCODERS: Registry[EncoderPreset] = Registry("encoder", UnknownEncoderError)


def register_encoder(preset: EncoderPreset) -> EncoderPreset:
    return ENCODERS.add(preset.name, preset)


def preset_for(name: str, modality: str) -> EncoderPreset:
    """Preset `name`, refused (listing the usable ones) when it does not take `modality`."""
    preset = ENCODERS.get(name)
    if modality not in preset.modalities:
        raise IncompatibleError(f"encoder {name!r} does not take {modality} data; use one of: "
                                f"{', '.join(encoders_of_kind(ALL_KINDS, modality))}")
    return preset


def encoders_of_kind(kinds: frozenset[str], modality: str) -> list[str]:
    """Names of the presets offering one of `kinds` that take `modality`, sorted."""
    return [n for n in ENCODERS.names()
            if ENCODERS.get(n).offers & kinds and modality in ENCODERS.get(n).modalities]


def vit_preset(name: str, dim: int, depth: int, heads: int, note: str) -> EncoderPreset:
    return register_encoder(EncoderPreset(
        name, "vit", "token", f"ViT dim {dim}, depth {depth}, {heads} heads ({note})",
        {"dim": dim, "depth": depth, "heads": heads}))


def cnn_preset(name: str, arch: str, dim: int, stages: str, note: str,
               arch_overrides: Mapping[str, Any] | None = None, *, strides: tuple[int, ...],
               masked: bool) -> EncoderPreset:
    """A timm CNN cut at stride = patch size; `stages` says what the cut keeps at the usual
    strides, since a trunk cut at stride 4 is a small fraction of the network it is named
    after. `strides`: its stages' output strides (the patch sizes it can be cut at, checked
    when planning); `masked`: it takes a random subset by masked convolution
    (bench.models.sparse), which needs every layer to be per position or a batch norm."""
    return register_encoder(EncoderPreset(
        name, "cnn", "dense",
        f"timm {arch} cut at stride = patch size ({stages}), projected to {dim}; {note}",
        {"arch": arch, "dim": dim, "arch_overrides": dict(arch_overrides or {}),
         "masked": masked},
        modalities=frozenset({"image"}), strides=strides))


vit_preset("vit-micro", 128, 4, 4, "CPU demo and tests")
vit_preset("vit-tiny", 192, 12, 3, "ViT-Ti")
vit_preset("vit-small", 384, 12, 6, "ViT-S")
vit_preset("vit-base", 768, 12, 12, "ViT-B")

# What each cut keeps: 4-px patches (32-px sets) and 16-px patches (224-px image folders).
_RESNET = "stride 4: stem + layer1; 16: through layer3"
_CONVNEXT = "stride 4: stem + stage 1; 16: through stage 3"
# Output strides of the timm stages (feature_info reductions), checked by tests/models/test_cnn.
_RESNET_STRIDES, _CONVNEXT_STRIDES = (2, 4, 8, 16, 32), (4, 8, 16, 32)
cnn_preset("cnn-resnet-micro", "resnet18", 128, _RESNET, "widths halved; CPU demo",
           {"stem_width": 32, "channels": (32, 64, 128, 256)}, strides=_RESNET_STRIDES,
           masked=True)
cnn_preset("cnn-convnext-micro", "convnext_atto", 128, _CONVNEXT, "widths 32..256; CPU demo",
           {"dims": (32, 64, 128, 256)}, strides=_CONVNEXT_STRIDES, masked=True)
cnn_preset("cnn-resnet18", "resnet18", 192, _RESNET,
           "ResNet-18 widths, not the whole 11.7M-parameter network", strides=_RESNET_STRIDES,
           masked=True)
cnn_preset("cnn-convnext-atto", "convnext_atto", 192, _CONVNEXT, "ConvNeXt-atto widths",
           strides=_CONVNEXT_STRIDES, masked=True)
# A light network of the class QB-Heat pretrains (Mobile-Former, 5.8M parameters / 285M
# FLOPs, is not in timm): MobileNetV3-Large, made for 224-px image folders. Not masked: its
# squeeze-excitation layers pool over every position (a statistic masking cannot confine).
cnn_preset("cnn-mobilenetv3", "mobilenetv3_large_100", 192,
           "stride 4: stem + blocks up to 24 channels; 16: up to 112 channels, no 160-channel "
           "stage or head",
           "MobileNetV3-Large 1.0, light CNN near the paper's class; sizes: `bench encoders`",
           strides=(2, 4, 8, 16, 32), masked=False)
