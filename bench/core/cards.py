"""Method cards: what planning, `bench list` and the report need of a masking method, as plain
data (no torch). A method states its card in its package's `__init__.py` and its `nn.Module`
in `method.py`, which is imported only when a run builds the method (methods/__init__.py)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.core.config import parse_options
from bench.core.errors import IncompatibleError
from bench.core.options import LayoutOptions, MethodOptions

# What an encoder offers ("token": it drops hidden tokens; "dense": a CNN that encodes one
# contiguous block of pixels; "masked": a CNN whose masked convolution keeps hidden positions
# at zero, so it also takes a scattered subset) and which of them serve each visible layout.
KIND_NAMES = {"token": "token", "dense": "dense", "masked": "masked-convolution"}
LAYOUT_KINDS = {"block": frozenset({"token", "dense"}), "random": frozenset({"token", "masked"})}


@dataclass(frozen=True)
class Diagnostic:
    """A named figure a method records about its trained fill rule (a summary.json metric,
    from `MaskingMethod.diagnostics()`): its column title and unit in the method's report
    table. Names are the method's own (prefix them with the method: `heat_norm_A`)."""

    name: str
    title: str
    unit: str = ""


@dataclass(frozen=True)
class MethodCard:
    """A method as planning sees it: its name, one line for `bench list`, the data and encoder
    kinds it can take (`KIND_NAMES`; which of them serve a run depends on its visible layout:
    `encoder_kinds_for`), its fixed layout if it has one, its options class (what `name.key=value` may set), and its diagnostics: the figures of its
    trained fill and the report table that shows them (`diagnostics_title`, a paragraph
    `diagnostics_note` under it). `module` holds the class; None for a method whose card was
    made from its imported class."""

    name: str
    summary: str
    modalities: frozenset[str]
    encoder_kinds: frozenset[str] = frozenset({"token"})
    Options: type[MethodOptions] = LayoutOptions
    # What the encoder always sees ("block": one contiguous block, as QB-Heat); None: the
    # options' `visible` (LayoutOptions), a random subset where they have none.
    layout: str | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    diagnostics_title: str = ""
    diagnostics_note: str = ""
    module: str | None = field(default=None, compare=False)

    def visible_layout(self, options: MethodOptions | None) -> str:
        """"block" or "random": what the encoder sees under `options`."""
        return self.layout or getattr(options, "visible", "random")

    def encoder_kinds_for(self, options: MethodOptions | None) -> frozenset[str]:
        """The encoder kinds that serve the method under `options` (`LAYOUT_KINDS` of its
        visible layout, among the card's `encoder_kinds`)."""
        return self.encoder_kinds & LAYOUT_KINDS[self.visible_layout(options)]

    def check(self, modality: str, encoder_kind: str | frozenset[str], encoder: str = "",
              works: Sequence[str] = (), options: MethodOptions | None = None) -> None:
        """IncompatibleError unless the method takes `modality` data and an encoder offering
        one of `encoder_kinds_for(options)` (`encoder_kind`: the kind, or the set of kinds the
        encoder offers; `encoder`: its preset name; `works`: the presets that would do). The
        one compatibility check: planning and building both call it."""
        if modality not in self.modalities:
            raise IncompatibleError(f"method {self.name!r} does not support {modality} data; it "
                                    f"supports: {', '.join(sorted(self.modalities))}")
        offered = frozenset({encoder_kind}) if isinstance(encoder_kind, str) else encoder_kind
        kinds = self.encoder_kinds_for(options)
        if not offered & kinds:
            layout = self.visible_layout(options)
            where = f" with visible={layout}" if self.layout is None and options is not None else ""
            needs = " or ".join(KIND_NAMES.get(k, k) for k in sorted(kinds)) or "no"
            raise IncompatibleError(
                f"method {self.name!r}{where} needs a {needs} encoder"
                + (f", not {encoder!r}" if encoder else "")
                + (f"; encoders that work: {', '.join(works)}" if works else "")
                + (f"; or {self.name}.visible=block, which every encoder of kind dense encodes"
                   if where and layout == "random" and "dense" in offered & self.encoder_kinds
                   else ""))

    def options(self, raw: dict[str, Any]) -> MethodOptions:
        """Typed options from raw (possibly string) values; bad ones raise ConfigError."""
        return parse_options(self.Options, raw, prefix=self.name)

    def load(self) -> None:
        """Import the module that holds the method's class (it registers itself)."""
        if self.module is not None:
            importlib.import_module(self.module)
