"""Dataset registry. Names may take an argument after a colon (`text-dir:PATH`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench.data.cards import load_card
from bench.data.hf import HFColumns, hf_columns, load_hf
from bench.data.images import load_digits, load_fashion_mnist
from bench.data.streaming import TORCHVISION_SETS, load_imagefolder, load_torchvision
from bench.data.text import load_text_data
from bench.errors import ConfigError, UnknownDatasetError
from bench.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    modality: str
    description: str
    load: Callable[..., Any]  # load(data_root, arg=None, **kw) -> ImageData | TextData
    takes_argument: bool = False
    labelled: bool = True  # False: pretraining only (no probes, no reference rows)
    data_root_note: str | None = None  # why data_root means nothing here (then it is refused)
    takes_columns: bool = False  # hf: the run's hf_text / hf_image / hf_label decide the rest


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
        data_root_note="digits is bundled with scikit-learn",
    )
)
register_dataset(
    DatasetEntry(
        "wordnet-glosses",
        "text",
        "WordNet 3.0 glosses 105,948/11,711, 45 lexicographer-file classes (64-token blocks)",
        lambda data_root=None, arg=None, **kw: load_text_data("wordnet-glosses", data_root, **kw),
    )
)
register_dataset(
    DatasetEntry(
        "kjv-verses",
        "text",
        "King James Bible verses 28,000/3,102, 6 book-genre classes (64-token blocks)",
        lambda data_root=None, arg=None, **kw: load_text_data("kjv-verses", data_root, **kw),
    )
)
register_dataset(
    DatasetEntry(
        "text-dir",
        "text",
        "your .txt files (text-dir:PATH), unlabelled: pretraining and masked-token metrics only",
        lambda data_root=None, arg=None, **kw: load_text_data(f"text-dir:{arg}", data_root, **kw),
        takes_argument=True,
        labelled=False,
    )
)
register_dataset(
    DatasetEntry(
        "imagefolder",
        "image",
        "your images in ImageNet-style class folders (imagefolder:PATH: train/, val/), 224 px, "
        "streamed",
        lambda data_root=None, arg=None: load_imagefolder(arg),
        takes_argument=True,
        data_root_note="imagefolder:PATH names its folder",
    )
)
register_dataset(
    DatasetEntry(
        "hf",
        "text/image",  # decided per run by its columns (with_columns)
        "a Hugging Face dataset saved to disk or in the hub cache (hf:PATH[:split]), text or "
        "images (hf_text= / hf_image= / hf_label=), read offline",
        lambda data_root=None, arg=None, **kw: load_hf(arg, data_root=data_root, **kw),
        takes_argument=True,
        labelled=False,
        takes_columns=True,
    )
)
for _name in TORCHVISION_SETS:  # CIFAR-10/100, STL-10: facts in datasets/<name>.toml
    register_dataset(
        DatasetEntry(
            _name,
            "image",
            load_card(_name)["description"] + ", streamed (download: `bench download`)",
            lambda data_root=None, arg=None, _name=_name: load_torchvision(_name, data_root),
        )
    )


def dataset_entry(name: str) -> tuple[DatasetEntry, str | None]:
    """Registry entry and argument of `name` (`text-dir:PATH` -> entry text-dir, 'PATH')."""
    base, _, arg = name.partition(":")
    entry = DATASETS.get(base)
    if entry.takes_argument and not arg:
        raise UnknownDatasetError(name, DATASETS.names())
    return entry, (arg or None)


def with_columns(entry: DatasetEntry, columns: HFColumns | None) -> DatasetEntry:
    """`entry` with the facts the column settings decide (hf: its modality and labels)."""
    if not entry.takes_columns:
        if columns is not None:
            raise ConfigError(f"hf_text, hf_image and hf_label are for hf: datasets only, not "
                              f"{entry.name!r}")
        return entry
    columns = columns or HFColumns()
    return replace(entry, modality=columns.modality, labelled=columns.label is not None)


def run_dataset_entry(cfg: Any) -> DatasetEntry:
    """The registry entry of a run's dataset, as its settings make it (see `with_columns`)."""
    return with_columns(dataset_entry(cfg.dataset)[0], hf_columns(cfg))


def load_dataset(
    name: str,
    data_root: str | None = None,
    vocab_size: int | None = None,
    block_length: int | None = None,
    columns: HFColumns | None = None,
) -> Any:
    """Load a dataset; vocab_size and block_length (text only) default to bench.data.text's;
    `columns` are an hf: dataset's."""
    entry, arg = dataset_entry(name)
    if data_root is not None and entry.data_root_note:
        raise ConfigError(f"data_root={data_root}: {entry.data_root_note}, so data_root is not "
                          "used; drop it")
    entry = with_columns(entry, columns)
    text_options = {"vocab_size": vocab_size, "block_length": block_length}
    given = {k: v for k, v in text_options.items() if v is not None}
    if given and entry.modality != "text":
        raise ConfigError(
            f"{', '.join(given)}: text datasets only, and {name!r} is {entry.modality}"
        )
    if entry.takes_columns:
        given["columns"] = columns
    return entry.load(data_root=data_root, arg=arg, **given)


def dataset_key(cfg: Any) -> tuple[str, str | None, int | None, int | None, HFColumns | None]:
    """What decides a run's loaded data: runs with equal keys share one `load_dataset(*key)`."""
    return (cfg.dataset, cfg.data_root, cfg.vocab_size, cfg.block_length, hf_columns(cfg))
