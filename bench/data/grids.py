"""The token grid a run's data will have, known before any data is loaded (from the dataset
cards and the text defaults), so planning, dry runs included, checks a mask ratio against the
grid the run will train on without loading data or torch. Imports no torch."""

from __future__ import annotations

from typing import Any

from bench.data.cards import load_card

DEFAULT_BLOCK_LENGTH = 64  # tokens per pretraining block, and the eval truncation length
DEFAULT_SENTENCES = 16  # sentences per pretraining window: the grid (S,) of every method


def planned_grid(cfg: Any, modality: str) -> tuple[int, ...] | None:
    """The grid of `cfg`'s method (`modality`: its dataset's, as its settings make it), or
    None where only the files tell (an hf: image dataset: the first image's size)."""
    if modality == "text":
        if cfg.granularity == "sentence":
            return (DEFAULT_SENTENCES if cfg.sentences is None else cfg.sentences,)
        return (DEFAULT_BLOCK_LENGTH if cfg.block_length is None else cfg.block_length,)
    card = load_card(cfg.dataset.partition(":")[0])
    size = card.get("padded_size", card.get("image_size"))
    if size is None or "patch_size" not in card:
        return None
    side = size if isinstance(size, list) else [size, size]
    return tuple(s // card["patch_size"] for s in side)
