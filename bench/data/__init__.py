"""Dataset registry. Names may take an argument after a colon (`text-dir:PATH`).

The registry imports no torch: each entry's loader imports its module when it is called, so
`bench list`, the config checks and `sweep --dry-run` read names and facts without it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench.core.config import GRANULARITIES
from bench.core.errors import ConfigError, UnknownDatasetError
from bench.core.registry import Registry
from bench.data.cards import TORCHVISION_SETS, card_names, load_card
from bench.data.columns import HFColumns, hf_columns
from bench.data.geometry import with_patch_size


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
    sentence_level: bool = False  # has documents of sentences (granularity=sentence)
    dense_labels: bool = False  # has per-pixel labels (the dense protocol)


DATASETS: Registry[DatasetEntry] = Registry("dataset", UnknownDatasetError)


# The loaders' modules (torch), imported when a dataset is loaded.
def _images():
    return importlib.import_module("bench.data.images")


def _mosaic():
    return importlib.import_module("bench.data.mosaic")


def _text():
    return importlib.import_module("bench.data.text")


def _streaming():
    return importlib.import_module("bench.data.streaming")


def _hf():
    return importlib.import_module("bench.data.hf")


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    return DATASETS.add(entry.name, entry)


register_dataset(
    DatasetEntry(
        "fashion-mnist",
        "image",
        "Fashion-MNIST 60k/10k, padded to 32x32 (8x8 grid of 4-px patches)",
        lambda data_root=None, arg=None: _images().load_fashion_mnist(data_root),
    )
)
register_dataset(
    DatasetEntry(
        "fashion-mosaic",
        "image",
        "64x64 canvases of 2-4 Fashion-MNIST garments, per-pixel labels, 20k/5k (16x16 grid of "
        "4-px patches; built from fashion-mnist, cached)",
        lambda data_root=None, arg=None: _mosaic().load_fashion_mosaic(data_root),
        dense_labels=True,
    )
)
register_dataset(
    DatasetEntry(
        "digits",
        "image",
        "scikit-learn digits 1437/360, upsampled to 32x32 (tiny tests)",
        lambda data_root=None, arg=None: _images().load_digits(data_root),
        data_root_note="digits is bundled with scikit-learn",
    )
)
register_dataset(
    DatasetEntry(
        "wordnet-glosses",
        "text",
        "WordNet 3.0 glosses 105,948/11,711, 45 lexicographer-file classes (64-token blocks)",
        lambda data_root=None, arg=None, **kw: _text().load_text_data("wordnet-glosses", data_root, **kw),
    )
)
register_dataset(
    DatasetEntry(
        "kjv-verses",
        "text",
        "King James Bible verses 28,000/3,102, 6 book-genre classes (64-token blocks; "
        "granularity=sentence: 1,058/131 chapters of verses)",
        lambda data_root=None, arg=None, **kw: _text().load_text_data("kjv-verses", data_root, **kw),
        sentence_level=True,  # a chapter is a document, its verses the sentences
    )
)
register_dataset(
    DatasetEntry(
        "text-dir",
        "text",
        "your .txt files (text-dir:PATH), unlabelled: pretraining and masked-token metrics only "
        "(granularity=sentence: a file is a document of sentences)",
        lambda data_root=None, arg=None, **kw: _text().load_text_data(f"text-dir:{arg}", data_root, **kw),
        takes_argument=True,
        labelled=False,
        sentence_level=True,  # a file is a document, its paragraphs split into sentences
    )
)
register_dataset(
    DatasetEntry(
        "imagefolder",
        "image",
        "your images in ImageNet-style class folders (imagefolder:PATH: train/, val/), 224 px, "
        "streamed",
        lambda data_root=None, arg=None: _streaming().load_imagefolder(arg),
        takes_argument=True,
        data_root_note="imagefolder:PATH names its folder",
    )
)
register_dataset(
    DatasetEntry(
        "hf",
        "text/image",  # decided per run by its columns (with_columns)
        "a Hugging Face dataset saved to disk or in the hub cache (hf:PATH[:split]), text or "
        "images (hf_text= / hf_image= / hf_label=), read offline (granularity=sentence: a row "
        "is a document of sentences)",
        lambda data_root=None, arg=None, **kw: _hf().load_hf(arg, data_root=data_root, **kw),
        takes_argument=True,
        labelled=False,
        takes_columns=True,
        sentence_level=True,  # text: a row is a document, its paragraphs split into sentences
    )
)
for _name in TORCHVISION_SETS:  # CIFAR-10/100, STL-10: facts in bench/datasets/<name>.toml
    register_dataset(
        DatasetEntry(
            _name,
            "image",
            load_card(_name)["description"] + ", streamed (download: `bench download`)",
            lambda data_root=None, arg=None, _name=_name: _streaming().load_torchvision(_name,
                                                                                   data_root),
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


def check_granularity(name: str, granularity: str = "token", **given: Any) -> None:
    """Refuse, in one line, a granularity the dataset lacks or text options of the other level;
    `given` holds the text options set (None: not set)."""
    entry, _ = dataset_entry(name)
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r}: must be one of {', '.join(GRANULARITIES)}")
    other = {"token": ("sentences", "sentence_length"), "sentence": ("block_length",)}[granularity]
    misplaced = [k for k, v in given.items() if v is not None and k in other]
    if misplaced:
        raise ConfigError(f"{', '.join(misplaced)}: not used at granularity={granularity}")
    if granularity == "sentence" and not entry.sentence_level:
        if entry.modality != "text":
            raise ConfigError(f"granularity=sentence: text datasets only, and {name!r} is "
                              f"{entry.modality}")
        card = load_card(entry.name) if entry.name in card_names() else {}
        why = card.get("sentences", {}).get("refused", "it has no documents")
        raise ConfigError(f"granularity=sentence: {name} is not a sentence-level corpus ({why}; "
                          "see its card, bench/datasets/" + entry.name + ".toml); use granularity=token")


def load_dataset(
    name: str,
    data_root: str | None = None,
    vocab_size: int | None = None,
    block_length: int | None = None,
    columns: HFColumns | None = None,
    granularity: str = "token",
    sentences: int | None = None,
    sentence_length: int | None = None,
    patch_size: int | None = None,
) -> Any:
    """Load a dataset; the text options (vocab_size, and block_length at the token level or
    sentences and sentence_length at the sentence level) default to bench.data.text's and
    bench.data.sentences's; `columns` are an hf: dataset's; `patch_size` (images) replaces
    the card's (bench.data.geometry)."""
    entry, arg = dataset_entry(name)
    if data_root is not None and entry.data_root_note:
        raise ConfigError(f"data_root={data_root}: {entry.data_root_note}, so data_root is not "
                          "used; drop it")
    entry = with_columns(entry, columns)
    text_options = {"vocab_size": vocab_size, "block_length": block_length,
                    "sentences": sentences, "sentence_length": sentence_length}
    given = {k: v for k, v in text_options.items() if v is not None}
    if given and entry.modality != "text":
        raise ConfigError(
            f"{', '.join(given)}: text datasets only, and {name!r} is {entry.modality}"
        )
    if patch_size is not None and entry.modality != "image":
        raise ConfigError(f"patch_size={patch_size}: images only, and {name!r} is "
                          f"{entry.modality}")
    check_granularity(name, granularity, **text_options)
    if granularity == "sentence":
        from bench.data.sentences import load_sentence_data, sentence_data

        if entry.takes_columns:  # hf: each row a document
            if entry.modality != "text":
                raise ConfigError(f"granularity=sentence: text only, and {name} is read as "
                                  "images (hf_image); set hf_text=COLUMN")
            return sentence_data(_hf().hf_documents(arg, columns or HFColumns()), **given)
        return load_sentence_data(name, data_root, **given)
    if entry.takes_columns:
        given["columns"] = columns
    return with_patch_size(entry.load(data_root=data_root, arg=arg, **given), patch_size)


def dataset_key(cfg: Any) -> tuple[Any, ...]:
    """What decides a run's loaded data: runs with equal keys share one `load_dataset(*key)`."""
    return (cfg.dataset, cfg.data_root, cfg.vocab_size, cfg.block_length, hf_columns(cfg),
            cfg.granularity, cfg.sentences, cfg.sentence_length, cfg.patch_size)
