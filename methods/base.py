"""The method contract: a masking strategy owns what the encoder sees and how hidden
positions are filled before the shared decoder. Everything else is shared (fairness)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from bench.config import parse_options
from bench.errors import IncompatibleError, UnknownMethodError
from bench.masking import Visible
from bench.registry import Registry

METHODS: Registry[type[MaskingMethod]] = Registry("method", UnknownMethodError)


@dataclass
class MethodOptions:
    """Options every method has; subclasses add typed fields (settable as `name.key=value`)."""

    mask_ratio: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")


class MaskingMethod(nn.Module):
    """Base class of every strategy (see DESIGN.md, "The method contract").

    Subclasses set `name`, `modalities`, `encoder_kinds`, `Options` and implement
    `choose_visible` and `fill`. `dim` is the decoder width the fill works at.
    """

    name: ClassVar[str]
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    # "token": a ViT-like encoder that can drop tokens; "dense": a CNN that needs a block.
    encoder_kinds: ClassVar[frozenset[str]] = frozenset({"token"})
    Options: ClassVar[type[MethodOptions]] = MethodOptions

    def __init__(self, options: MethodOptions, dim: int, modality: str):
        super().__init__()
        self.options, self.dim, self.modality = options, dim, modality

    def encoder_kinds_for(self) -> frozenset[str]:
        """Encoder kinds this configured instance accepts (options may narrow them)."""
        return self.encoder_kinds

    def choose_visible(self, batch: int, grid: tuple[int, ...], generator) -> Visible:
        raise NotImplementedError

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
