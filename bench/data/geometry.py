"""A run's token grid before any data is loaded, from the dataset cards and the text defaults:
an image run's patch size (the run's `patch_size`, else the card's, checked against the card's
image size) and the grid it makes, a text run's block or window length. So planning, dry runs
included, refuses a grid that cannot be made, or a mask ratio that hides nothing on it,
without loading data or torch. `with_patch_size` gives loaded images another patch size."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.core.errors import ConfigError
from bench.data.cards import card_names, load_card

DEFAULT_BLOCK_LENGTH = 64  # tokens per pretraining block, and the eval truncation length
DEFAULT_SENTENCES = 16  # sentences per pretraining window: the grid (S,) of every method


def card_image_size(dataset: str) -> tuple[int, int] | None:
    """(height, width) in pixels the dataset's images are trained at, from its card (padded
    size where it pads); None where only the files tell (hf:)."""
    name = dataset.partition(":")[0]
    card = load_card(name) if name in card_names() else {}
    size = card.get("padded_size", card.get("image_size"))
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else size
    return h, w


def planned_patch_size(cfg: Any) -> int | None:
    """The patch size an image run will train at: `cfg.patch_size`, else its card's (None:
    decided by the files, hf:)."""
    if cfg.patch_size is not None:
        return cfg.patch_size
    name = cfg.dataset.partition(":")[0]
    return load_card(name).get("patch_size") if name in card_names() else None


def check_patch_size(cfg: Any, modality: str) -> None:
    """`cfg.patch_size` on text, or one that does not divide the card's image size: one-line
    ConfigError naming the sizes that would."""
    if cfg.patch_size is None:
        return
    if modality != "image":
        raise ConfigError(f"patch_size={cfg.patch_size}: images only, and {cfg.dataset!r} is "
                          f"{modality}")
    size = card_image_size(cfg.dataset)
    if size is not None and (size[0] % cfg.patch_size or size[1] % cfg.patch_size):
        fits = [p for p in range(1, min(size) + 1) if not size[0] % p and not size[1] % p]
        raise ConfigError(f"patch_size={cfg.patch_size}: {cfg.dataset} images are "
                          f"{size[0]}x{size[1]} px, not whole patches; sizes that fit: "
                          + ", ".join(map(str, fits)))


def with_patch_size(data: Any, patch_size: int | None) -> Any:
    """Loaded image data (in memory or streamed) cut into `patch_size`-px patches (None: as
    loaded); an image size it does not divide raises ConfigError."""
    if patch_size is None or patch_size == data.patch_size:
        return data
    h, w = data.spec.image_size
    if h % patch_size or w % patch_size:
        raise ConfigError(f"patch_size={patch_size}: {data.name} images are {h}x{w} px, not "
                          "whole patches")
    return dataclasses.replace(data, patch_size=patch_size)


def planned_grid(cfg: Any, modality: str) -> tuple[int, ...] | None:
    """The grid of `cfg`'s method (`modality`: its dataset's, as its settings make it), or
    None where only the files tell (an hf: image dataset: the first image's size)."""
    if modality == "text":
        if cfg.granularity == "sentence":
            return (DEFAULT_SENTENCES if cfg.sentences is None else cfg.sentences,)
        return (DEFAULT_BLOCK_LENGTH if cfg.block_length is None else cfg.block_length,)
    size, patch = card_image_size(cfg.dataset), planned_patch_size(cfg)
    if size is None or patch is None:
        return None
    return tuple(s // patch for s in size)
