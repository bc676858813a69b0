"""Hugging Face datasets as Maskbench data: `hf:PATH[:split]`, text or images, read offline.

PATH is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a dataset
already in the hub cache: its folder (`datasets--OWNER--NAME`, or one of its
`snapshots/<revision>`), or its id `OWNER/NAME` when that folder is in the hub cache
($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). Nothing is downloaded:
`HF_DATASETS_OFFLINE` and `HF_HUB_OFFLINE` are set before `datasets` is imported, and a name
found nowhere is an error saying it would need the hub.

The run settings pick the columns: `hf_text=COLUMN` (default `text`) or `hf_image=COLUMN`
the input, `hf_label=COLUMN` the labels (a ClassLabel's names are the classes; other values
are classes in sorted order). Without `hf_label` the dataset is unlabelled, as `text-dir:`:
pretraining and the masked-token metrics only, no probes.

- Text follows the built-in corpora (bench.data.text): the texts of the named split, or of
  every split in the order the dataset lists them, are split by text hash (`make_corpus`),
  then tokenised, packed and cached by `text_data`, keyed by their content.
- Images follow `imagefolder:` (bench.data.streaming): decoded on DataLoader workers to the
  centre square (grey or RGB as the first image), normalised by the per-channel mean and std
  of the first training images. A DatasetDict's train split trains and its test (else
  validation) split tests; one split (`:split`, or a Dataset) is divided 1 in 10 to test by a
  hash of the row number. Each split is ordered by that hash, so the eval limits take a mixed
  sample. Size: the shorter side of the training split's first image, at most 224; patches
  of 16 px from 112 px, 8 from 64, else 4; the size rounded down to a multiple of the patch.

The numbers are in the dataset card, bench/datasets/hf.toml.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from bench.core.errors import ConfigError, DataNotFoundError
from bench.data.cache import cache_root
from bench.data.cards import load_card
from bench.data.columns import HFColumns
from bench.data.corpora import make_corpus
from bench.data.fingerprint import fingerprint, in_test_split, stable_hash
from bench.data.sentences import DocumentCorpus, make_documents, text_document
from bench.data.streaming import StreamingImageData, square_image
from bench.data.text import TextData, text_data

PREFIX = "hf:"
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
DOWNLOAD_HINT = ("download it yourself (`huggingface-cli download --repo-type dataset {id}`, or "
                 "`datasets.load_dataset({id!r}).save_to_disk(DIR)`) and name that folder")


def _datasets():
    """The `datasets` package, offline (set before its first import, which reads them)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise ConfigError("hf: datasets need the datasets package, which is not installed: "
                          "pip install 'maskbench[hf]'") from None
    datasets.config.HF_DATASETS_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    datasets.disable_progress_bars()
    return datasets


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def _snapshot(repo: Path) -> Path:
    """The revision `refs/main` names in a hub cache folder, else its only snapshot."""
    ref = repo / "refs" / "main"
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
        return repo / "snapshots" / ref.read_text().strip()
    snapshots = sorted(p for p in (repo / "snapshots").glob("*") if p.is_dir())
    if len(snapshots) != 1:
        raise DataNotFoundError(f"{repo}: {len(snapshots)} snapshots and no refs/main; name one "
                                "as hf:REPO/snapshots/REVISION")
    return snapshots[0]


def _is_saved(folder: Path) -> bool:
    """Written by save_to_disk (a Dataset: state.json; a DatasetDict: dataset_dict.json)."""
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def locate(path: str) -> tuple[str, Path]:
    """("saved", folder) for save_to_disk output, ("files", snapshot) for a hub cache folder."""
    folder = Path(path).expanduser()
    if not folder.exists() and HUB_ID.match(path):
        folder = hub_cache() / f"datasets--{path.replace('/', '--')}"
        if not folder.is_dir():
            raise DataNotFoundError(
                f"hf:{path} is neither a folder nor a dataset in the hub cache {hub_cache()}: "
                f"it would need the Hugging Face hub, and Maskbench never downloads; "
                f"{DOWNLOAD_HINT.format(id=path)}")
    if not folder.is_dir():
        raise DataNotFoundError(f"hf:{path}: no such folder")
    if _is_saved(folder):
        return "saved", folder
    if (folder / "snapshots").is_dir():
        return "files", _snapshot(folder)
    if folder.parent.name == "snapshots":
        return "files", folder
    raise DataNotFoundError(f"hf:{path}: {folder} holds neither a dataset saved with "
                            "save_to_disk nor a hub cache folder (datasets--OWNER--NAME)")


def split_name(arg: str) -> tuple[str, str | None]:
    """`PATH[:split]` -> (PATH, split): a trailing `:word` is a split unless PATH itself exists."""
    path, sep, split = arg.rpartition(":")
    if not sep or Path(arg).expanduser().exists() or "/" in split or not split:
        return arg, None
    return path, split


def open_splits(arg: str) -> dict[str, Any]:
    """The dataset's splits by name (one, when `:split` names it), each a `datasets.Dataset`."""
    datasets = _datasets()
    path, split = split_name(arg)
    kind, folder = locate(path)
    if kind == "saved":
        loaded = datasets.load_from_disk(str(folder))
    else:
        loaded = datasets.load_dataset(str(folder), cache_dir=str(cache_root() / "hf"))
    splits = {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
    if split is not None:
        if split not in splits:
            raise ConfigError(f"hf:{arg}: no split {split!r}; splits: {', '.join(sorted(splits))}")
        splits = {split: splits[split]}
    return splits


def _column(ds: Any, name: str, option: str, arg: str) -> None:
    if name not in ds.column_names:
        raise ConfigError(f"hf:{arg}: no column {name!r} (set by {option}); columns: "
                          f"{', '.join(ds.column_names)}")


def _labels(splits: list[Any], column: str) -> tuple[list[list[int]], list[str]]:
    """Each split's labels as class indices, and the class names (ClassLabel's, else the
    distinct values in sorted order)."""
    names = getattr(splits[0].features[column], "names", None)
    values = [ds[column] for ds in splits]
    if any(v is None for vs in values for v in vs):
        raise ConfigError(f"label column {column!r} has missing values")
    if names is not None:
        return [list(vs) for vs in values], list(names)
    classes = sorted({str(v) for vs in values for v in vs})
    index = {c: i for i, c in enumerate(classes)}
    return [[index[str(v)] for v in vs] for vs in values], classes


def _text_rows(arg: str, columns: HFColumns) -> tuple[str, list[str], list[int] | None,
                                                      list[str] | None]:
    """The dataset's name, its rows' texts over every split, their labels and class names."""
    splits = list(open_splits(arg).values())
    name = f"{PREFIX}{arg}"
    for ds in splits:
        _column(ds, columns.input, "hf_text", arg)
        if columns.label is not None:
            _column(ds, columns.label, "hf_label", arg)
    texts = [t or "" for ds in splits for t in ds[columns.input]]
    if texts and not isinstance(next((t for t in texts if t), ""), str):
        raise ConfigError(f"{name}: column {columns.input!r} does not hold text; use hf_image= "
                          "for images")
    labels = classes = None
    if columns.label is not None:
        per_split, classes = _labels(splits, columns.label)
        labels = [y for ys in per_split for y in ys]
    return name, texts, labels, classes


def load_hf_text(arg: str, columns: HFColumns, vocab_size: int | None = None,
                 block_length: int | None = None, cache_dir: Path | None = None) -> TextData:
    """The token level: the rows as the built-in corpora's texts (bench.data.text)."""
    name, texts, labels, classes = _text_rows(arg, columns)
    return text_data(make_corpus(name, texts, labels, classes), vocab_size, block_length,
                     cache_dir)


def hf_documents(arg: str, columns: HFColumns) -> DocumentCorpus:
    """The sentence level: each row is a document, its paragraphs split into sentences as a
    text-dir: file's are (bench.data.sentences), labelled by the row's label if any."""
    name, texts, labels, classes = _text_rows(arg, columns)
    docs = [text_document(text, None if labels is None else labels[i])
            for i, text in enumerate(texts)]
    return make_documents(name, docs, classes)


class HFImages(Dataset):
    """Rows of a Hugging Face image column, decoded by `square_image` on DataLoader workers."""

    def __init__(self, ds: Any, column: str, rows: list[int], labels: list[int], size: int,
                 mode: str):
        self.ds, self.column, self.rows, self.labels = ds.select_columns([column]), column, rows, labels
        self.size, self.mode = size, mode

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return square_image(self.ds[self.rows[i]][self.column], self.size, self.mode), self.labels[i]


def _row_hash(i: int) -> int:
    return stable_hash(str(i))


def image_geometry(width: int, height: int) -> tuple[int, int]:
    """(image size, patch size) for images whose first one is `width` x `height` (the card's
    rule)."""
    card = load_card("hf")["images"]
    side = min(width, height, card["max_image_size"])
    patch = next(p for least, p in card["patch_sizes"] if side >= least)
    if side < 2 * patch:
        raise ConfigError(f"images of {width}x{height} px are too small (at least 8 px a side)")
    return side - side % patch, patch


def load_hf_images(arg: str, columns: HFColumns) -> StreamingImageData:
    splits = open_splits(arg)
    for ds in splits.values():
        _column(ds, columns.input, "hf_image", arg)
        if columns.label is not None:
            _column(ds, columns.label, "hf_label", arg)
    test_splits = load_card("hf")["images"]["test_splits"]
    test_name = next((s for s in test_splits if s in splits), None)
    if len(splits) > 1 and "train" in splits and test_name is not None:
        parts = {"train": (splits["train"], None), "test": (splits[test_name], None)}
    elif len(splits) == 1:
        (ds,) = splits.values()
        parts = {"train": (ds, False), "test": (ds, True)}
    else:
        raise ConfigError(f"hf:{arg}: splits {', '.join(sorted(splits))}; images need a train "
                          f"and a {' or '.join(test_splits)} split, or name one as hf:PATH:SPLIT")
    first = parts["train"][0][0][columns.input]
    if not hasattr(first, "size"):
        raise ConfigError(f"hf:{arg}: column {columns.input!r} does not hold images; use "
                          "hf_text= for text")
    size, patch = image_geometry(*first.size)
    mode = "L" if first.mode in ("1", "L", "I", "I;16", "F") else "RGB"
    classes = None
    if columns.label is not None:
        per_split, classes = _labels([ds for ds, _ in parts.values()], columns.label)
    sets, order = {}, []
    for i, (part, (ds, test)) in enumerate(parts.items()):
        rows = [r for r in range(len(ds)) if test is None or in_test_split(_row_hash(r)) == test]
        rows.sort(key=_row_hash)
        labels = [per_split[i][r] for r in rows] if classes is not None else [-1] * len(rows)
        sets[part] = HFImages(ds, columns.input, rows, labels, size, mode)
        order.append((part, getattr(ds, "_fingerprint", None), rows[:64], len(rows)))
    if not len(sets["train"]) or not len(sets["test"]):
        raise ConfigError(f"hf:{arg}: too few images to hold out a test split")
    mean, std = _channel_stats(sets["train"])
    return StreamingImageData(
        name=f"{PREFIX}{arg}", pretrain_set=sets["train"], train_set=sets["train"],
        test_set=sets["test"], classes=classes, mean=mean, std=std, image_size=size,
        patch_size=patch, channels=1 if mode == "L" else 3,
        fingerprint=fingerprint((order, columns, size, mean, std)),
    )


def _channel_stats(images: HFImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of the first images (the card's stats_images)."""
    from bench.data.images import channel_stats

    n = min(len(images), load_card("hf")["images"]["stats_images"])
    x = torch.stack([images[i][0] for i in range(n)])
    mean, std = channel_stats(x)
    return tuple(round(m, 4) for m in mean), tuple(round(max(s, 1e-3), 4) for s in std)


def load_hf(arg: str | None, columns: HFColumns | None = None, data_root: str | None = None,
            **text_options: Any) -> TextData | StreamingImageData:
    """`hf:ARG` with the run's columns (see the module doc)."""
    if not arg:
        raise ConfigError("hf: name the dataset, as in hf:/path/to/saved or hf:OWNER/NAME")
    if data_root is not None:
        raise ConfigError(f"hf:{arg}: data_root is not used by hf:; the path is in the name")
    columns = columns or HFColumns()
    if columns.modality == "image":
        return load_hf_images(arg, columns)
    return load_hf_text(arg, columns, **text_options)
