"""Dataset registry. Names may take an argument after a colon (`text-dir:PATH`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.data.images import load_digits, load_fashion_mnist
from bench.errors import UnknownDatasetError
from bench.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    modality: str
    description: str
    load: Callable[..., Any]  # load(data_root, arg=None, **kw) -> ImageData | TextData
    takes_argument: bool = False


DATASETS: Registry[DatasetEntry] = Registry("dataset", UnknownDatasetError)


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    return DATASETS.add(entry.name, entry)


register_dataset(
    DatasetEntry(
        "fashion-mnist",
        "image",
        "Fashion-MNIST 60k/10k, padded to 32x32 (8x8 grid of 4-px patches)",
        lambda data_root=None, arg=None: load_fashion_mnist(data_root),
    )
)
register_dataset(
    DatasetEntry(
        "digits",
        "image",
        "scikit-learn digits 1437/360, upsampled to 32x32 (tiny tests)",
        lambda data_root=None, arg=None: load_digits(data_root),
    )
)


def dataset_entry(name: str) -> tuple[DatasetEntry, str | None]:
    """Registry entry and argument of `name` (`text-dir:PATH` -> entry text-dir, 'PATH')."""
    base, _, arg = name.partition(":")
    entry = DATASETS.get(base)
    if entry.takes_argument and not arg:
        raise UnknownDatasetError(name, DATASETS.names())
    return entry, (arg or None)


def load_dataset(name: str, data_root: str | None = None) -> Any:
    entry, arg = dataset_entry(name)
    return entry.load(data_root=data_root, arg=arg)
