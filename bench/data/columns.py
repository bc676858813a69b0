"""An hf: run's column settings (hf_text, hf_image, hf_label): plain data, no torch, since the
dataset registry decides an hf: run's modality and labels from them before loading."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.core.errors import ConfigError


@dataclass(frozen=True)
class HFColumns:
    """The run settings hf_text, hf_image and hf_label (None: not set)."""

    text: str | None = None
    image: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.text is not None and self.image is not None:
            raise ConfigError(f"hf_text={self.text} and hf_image={self.image}: a run reads one "
                              "input column; set one of them")

    @property
    def modality(self) -> str:
        return "image" if self.image is not None else "text"

    @property
    def input(self) -> str:
        return self.image or self.text or "text"


def hf_columns(cfg: Any) -> HFColumns | None:
    """A run's column settings, None when it sets none of them."""
    cols = HFColumns(cfg.hf_text, cfg.hf_image, cfg.hf_label)
    return None if cols == HFColumns() else cols
