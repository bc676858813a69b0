"""The method contract: a masking strategy owns what the encoder sees and how hidden
positions are filled before the shared decoder. Everything else is shared (fairness)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from bench.config import parse_options
from bench.errors import IncompatibleError, UnknownMethodError
from bench.masking import Visible, visible_for_ratio
from bench.registry import Registry

METHODS: Registry[type[MaskingMethod]] = Registry("method", UnknownMethodError)


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
    contiguous block (`visible=block`: the mask-shape half of the 2 x 2 ablation)."""

    visible: Literal["random", "block"] = "random"
    block_position: Literal["random", "center", "quadrant"] = "random"


class MaskingMethod(nn.Module):
    """Base class of every strategy (see DESIGN.md, "The method contract").

    Subclasses set `name`, `modalities`, `encoder_kinds`, `Options` and implement `fill`;
    `choose_visible` follows `layout()` (override either for another rule). `dim` is the
    decoder width the fill works at.
    """

    name: ClassVar[str]
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    # "token": a ViT-like encoder that can drop tokens; "dense": a CNN that needs a block.
    encoder_kinds: ClassVar[frozenset[str]] = frozenset({"token"})
    Options: ClassVar[type[MethodOptions]] = LayoutOptions

    def __init__(self, options: MethodOptions, dim: int, modality: str):
        super().__init__()
        self.options, self.dim, self.modality = options, dim, modality

    def encoder_kinds_for(self) -> frozenset[str]:
        """Encoder kinds this configured instance accepts (options may narrow them)."""
        return self.encoder_kinds

    def layout(self) -> tuple[str, str]:
        """(layout, block position) of what the encoder sees, for `visible_for_ratio`: read
        from `LayoutOptions`; a method with its own rule overrides this or `choose_visible`."""
        return self.options.visible, self.options.block_position

    def choose_visible(self, batch: int, grid: tuple[int, ...], generator) -> Visible:
        """`visible_count(grid, mask_ratio)` positions in `layout()`, drawn from `generator`."""
        layout, position = self.layout()
        return visible_for_ratio(batch, grid, self.options.mask_ratio, layout, position, generator)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters AdamW must not decay (timm's convention): all of a method's
        own. They make up the fill rule itself (a [MASK] token, heat operators under any
        parameterisation), so no strategy or parameterisation is regularised and another not."""
        return {name for name, _ in self.named_parameters()}

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        raise NotImplementedError

    def describe(self, grid: tuple[int, ...]) -> str:
        """One line a report can show: what the encoder sees and how the rest is filled."""
        return self.__doc__.strip().splitlines()[0] if self.__doc__ else self.name


def register_method(name: str):
    """Class decorator: `@register_method("mae")` adds the class to the method registry."""

    def decorator(cls: type[MaskingMethod]) -> type[MaskingMethod]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


def resolve_options(name: str, raw: dict[str, Any]) -> MethodOptions:
    """Typed options of method `name` from raw (possibly string) values; errors name valid keys."""
    cls = METHODS.get(name)
    return parse_options(cls.Options, raw, prefix=name)


def build_method(
    name: str, raw_options: dict[str, Any], dim: int, modality: str, encoder_kind: str
) -> MaskingMethod:
    cls = METHODS.get(name)
    if modality not in cls.modalities:
        raise IncompatibleError(
            f"method {name!r} does not support {modality} data; it supports: "
            + ", ".join(sorted(cls.modalities))
        )
    method = cls(resolve_options(name, raw_options), dim, modality)
    if encoder_kind not in method.encoder_kinds_for():
        raise IncompatibleError(
            f"method {name!r} needs a {' or '.join(sorted(method.encoder_kinds_for()))} encoder"
        )
    return method


def options_dict(options: MethodOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)
