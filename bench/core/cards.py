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
    kinds it takes ("token": an encoder that drops tokens; "dense": a CNN that needs a block),
    its options class (what `name.key=value` may set), and its diagnostics: the figures of its
    trained fill and the report table that shows them (`diagnostics_title`, a paragraph
    `diagnostics_note` under it). `module` holds the class; None for a method whose card was
    made from its imported class."""

    name: str
    summary: str
    modalities: frozenset[str]
    encoder_kinds: frozenset[str] = frozenset({"token"})
    Options: type[MethodOptions] = LayoutOptions
    diagnostics: tuple[Diagnostic, ...] = ()
    diagnostics_title: str = ""
    diagnostics_note: str = ""
    module: str | None = field(default=None, compare=False)

    def check(self, modality: str, encoder_kind: str, encoder: str = "",
              works: Sequence[str] = ()) -> None:
        """IncompatibleError unless the method takes `modality` data and an encoder of
        `encoder_kind` (`encoder`: its preset name; `works`: the presets that would do)."""
        if modality not in self.modalities:
            raise IncompatibleError(f"method {self.name!r} does not support {modality} data; it "
                                    f"supports: {', '.join(sorted(self.modalities))}")
        if encoder_kind not in self.encoder_kinds:
            kinds = " or ".join(sorted(self.encoder_kinds))
            raise IncompatibleError(
                f"method {self.name!r} needs a {kinds} encoder"
                + (f", not {encoder!r}" if encoder else "")
                + (f"; encoders that work: {', '.join(works)}" if works else ""))

    def options(self, raw: dict[str, Any]) -> MethodOptions:
        """Typed options from raw (possibly string) values; bad ones raise ConfigError."""
        return parse_options(self.Options, raw, prefix=self.name)

    def load(self) -> None:
        """Import the module that holds the method's class (it registers itself)."""
        if self.module is not None:
            importlib.import_module(self.module)
