"""Image datasets streamed from disk: ImageNet-style class folders (`imagefolder:PATH`) and
torchvision's CIFAR-10, CIFAR-100 and STL-10.

DataLoader workers decode uint8 images into pinned memory; normalisation and augmentation run on
the training device with the trainer's seeded generator, drawn exactly as for in-memory data
(`bench.data.images`), so streamed runs stay deterministic and resumable. `pretrain_batches` is
the trainer's one way to get an epoch's batches from either kind of data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from bench.core.errors import ConfigError, DataNotFoundError
from bench.core.spec import DataSpec
from bench.data.cache import cache_root
from bench.data.cards import TORCHVISION_SETS, load_card
from bench.data.fingerprint import fingerprint, stable_hash
from bench.data.image_scan import unreadable
from bench.data.images import StandardisedImages, apply_affine, crop_flip_params
from bench.data.protocol import EvalSplit, complement
from bench.runtime import progress, stopping

log = logging.getLogger(__name__)
EVAL_DECODE_BATCH = 256


def default_workers() -> int:
    """DataLoader workers: $MASKBENCH_DATA_WORKERS, else this process's CPUs (at most 16)."""
    env = os.environ.get("MASKBENCH_DATA_WORKERS")
    if not env:
        return min(16, len(os.sched_getaffinity(0)))
    if not env.strip().isdigit():
        raise ConfigError(f"MASKBENCH_DATA_WORKERS={env!r}: expected a number of DataLoader "
                          "worker processes, 0 or more (0: decode in the training process)")
    return int(env)


def square_image(img, size: int, mode: str = "RGB") -> Tensor:
    """A PIL image as uint8 `[C, size, size]` (`mode` RGB: 3 channels, L: 1): the shorter side
    resized to `size` (antialiased), then the centre square."""
    from torchvision.transforms import functional as TF

    return TF.pil_to_tensor(TF.center_crop(TF.resize(img.convert(mode), size), size))


class FolderImages(Dataset):
    """Image files decoded by `square_image` to uint8 `[3, size, size]`. Runs on DataLoader
    workers."""

    def __init__(self, files: list[str], labels: list[int], size: int):
        self.files, self.labels, self.size = files, labels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            return square_image(img, self.size), self.labels[i]


class ArrayImages(Dataset):
    """Images torchvision already decoded (CIFAR, STL-10): uint8 `[N, C, H, W]` and labels."""

    def __init__(self, x: Tensor, y: Tensor, classes: list[str]):
        self.x, self.y, self.classes = x, y, classes

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], int(self.y[i])


def _collate(items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    images, labels = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _collate_images(items: list[tuple[Tensor, int]]) -> Tensor:
    return torch.stack([image for image, _ in items])


@dataclass
class StreamingImageData(StandardisedImages):
    """The data protocol of `ImageData` (spec, to, fingerprint, n_pretrain, pretrain_batch,
    eval_split, eval_batch, raw_features) over datasets decoded on DataLoader workers, plus
    `iter_pretrain`, which streams an epoch. Evaluation splits are decoded once (bounded by the
    eval limits) and kept in host memory."""

    name: str
    pretrain_set: Dataset  # what pretraining sees (STL-10: train + unlabeled)
    train_set: Dataset  # labelled: the probes fit on it
    test_set: Dataset
    classes: list[str] | None  # None: unlabelled (hf: without hf_label), pretraining only
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    patch_size: int
    fingerprint: str
    channels: int = 3
    workers: int = field(default_factory=default_workers)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pin_memory: bool | None = None  # decode into pinned memory (None: when the device is CUDA)
    modality: str = "image"
    decoded: dict[tuple[str, int | None], EvalSplit] = field(default_factory=dict, repr=False)
    skipped: tuple[str, ...] = ()  # "path: reason" of files left out: they do not decode

    @property
    def spec(self) -> DataSpec:
        g = self.image_size // self.patch_size
        return DataSpec("image", (g, g), patch_size=self.patch_size, in_chans=self.channels)

    @property
    def pins(self) -> bool:
        """Whether batches decode into pinned memory: `pin_memory`, else on CUDA only."""
        return self.device.type == "cuda" if self.pin_memory is None else self.pin_memory

    def to(self, device: torch.device | str) -> StreamingImageData:
        return replace(self, device=torch.device(device))  # shares the decoded splits

    def n_pretrain(self) -> int:
        return len(self.pretrain_set)

    def _prepare(
        self, x: Tensor, generator: torch.Generator, aug: bool, batch: int, rows: slice
    ) -> Tensor:
        """Rows `rows` of a global batch of `batch`: normalised and, with `aug`, cropped and
        flipped by the global batch's matrices (the same draws as `augment`)."""
        x = self.normalize(x.to(self.device, non_blocking=True))
        if not aug:
            return x
        return apply_affine(x, crop_flip_params(batch, generator, self.device)[rows])

    def pretrain_batch(self, idx: Tensor, generator: torch.Generator, aug: bool) -> Tensor:
        """One batch decoded in this process (for probes of a few samples; training streams)."""
        x = _collate_images([self.pretrain_set[i] for i in idx.tolist()])
        return self._prepare(x, generator, aug, len(idx), slice(None))

    def iter_pretrain(
        self, index_batches: Tensor, generator: torch.Generator, aug: bool, rows: slice
    ) -> Iterator[Tensor]:
        """Rows `rows` of each global batch `index_batches[i]`, decoded ahead by the workers.

        The index list comes to the host once, before the first step; in the loop each batch
        goes host -> device from pinned memory without blocking.
        """
        local = index_batches[:, rows].cpu().tolist()
        loader = DataLoader(
            self.pretrain_set,
            batch_sampler=local,
            num_workers=self.workers,
            collate_fn=_collate_images,
            pin_memory=self.pins,
            prefetch_factor=4 if self.workers else None,
            worker_init_fn=stopping.ignore_in_worker,
        )
        for x in loader:
            yield self._prepare(x, generator, aug, index_batches.shape[1], rows)

    def validation_units(self) -> int:
        return len(self.train_set)

    def divided(self, val: Tensor) -> StreamingImageData:
        """Training images `val` (in that order) as the test split, the others as the
        training split; decoded afresh (pretraining keeps its own set)."""
        fit = complement(val, len(self.train_set)).tolist()
        return replace(self, train_set=Subset(self.train_set, fit),
                       test_set=Subset(self.train_set, val.tolist()), decoded={})

    def eval_split(self, split: str, limit: int | None = None) -> EvalSplit:
        """The first `limit` images of a split as uint8 on the host, decoded once."""
        key = (split, limit)
        if key not in self.decoded:
            source = self.train_set if split == "train" else self.test_set
            n = len(source) if limit is None else min(limit, len(source))
            loader = DataLoader(
                Subset(source, range(n)),
                batch_size=EVAL_DECODE_BATCH,
                num_workers=self.workers,
                collate_fn=_collate,
                worker_init_fn=stopping.ignore_in_worker,
            )
            parts = list(progress.bar(loader, desc=f"decode {self.name} {split}", leave=False, unit="batch"))
            self.decoded[key] = EvalSplit(
                torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
            )
        return self.decoded[key]


def pretrain_batches(
    data: Any, index_batches: Tensor, generator: torch.Generator, aug: bool, rows: slice
) -> Iterator[Tensor]:
    """An epoch's training inputs: rows `rows` of each global batch `index_batches[i]`, in order.

    Streaming data (`iter_pretrain`) decodes only those rows on its workers; in-memory data builds
    each global batch on the device and keeps the rows. Either way the randomness of a sample
    depends on its place in the global batch only, not on how many ranks share the batch.
    """
    stream = getattr(data, "iter_pretrain", None)
    if stream is not None:
        return stream(index_batches, generator, aug, rows)
    return (data.pretrain_batch(idx, generator, aug)[rows] for idx in index_batches)


def _stable_order(paths: list[str]) -> list[int]:
    """Indices of `paths` sorted by a hash of each path: classes interleave, so "the first N"
    (the eval limits) is a mixed sample, independent of the order the filesystem lists."""
    key = [stable_hash(p) for p in paths]
    return sorted(range(len(paths)), key=key.__getitem__)



def _folder_split(
    root: Path, samples: list[tuple[str, int]], size: int, bad: dict[str, str]
) -> tuple[FolderImages, list[str]]:
    """A split's images (`_class_images`) in a stable mixed order, and their paths from root;
    the files in `bad` (they do not decode) are left out."""
    samples = [s for s in samples if s[0] not in bad]
    rel = [os.path.relpath(f, root) for f, _ in samples]
    order = _stable_order(rel)
    images = FolderImages([samples[i][0] for i in order], [samples[i][1] for i in order], size)
    return images, [rel[i] for i in order]


def _class_images(
    root: Path, folder: Path, class_to_idx: dict[str, int]
) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) of every image under `folder/<class>/`, at any depth, and the links
    to folders met inside the class folders, which are not followed ("train/a/loop -> .."): a
    link that leaves the class folder or points back into the tree would add images from
    elsewhere, count them twice or label them with the wrong class (a loop to the split
    folder once made 24 images 1,464). A class folder may itself be a link (classes on
    another disk), but not to a folder inside or above the image folder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    samples: list[tuple[str, int]] = []
    links: list[str] = []
    tree = root.resolve()
    for name in sorted(class_to_idx):
        if not (folder / name).is_dir():
            raise DataNotFoundError(f"imagefolder:{root}: {folder} has no {name}/ folder, which "
                                    f"{root / 'train'} has; every split needs every class")
    for name in sorted(class_to_idx):
        top = folder / name
        target = top.resolve()
        if top.is_symlink() and (target == tree or tree in target.parents
                                 or target in tree.parents):
            raise DataNotFoundError(
                f"imagefolder:{root}: class folder {os.path.relpath(top, root)} links to "
                f"{target}, inside or above the image folder: its images would be counted "
                "twice or under the wrong class; remove the link")
        found = 0
        for here, dirs, names in os.walk(top):  # links to folders are listed, not entered
            dirs.sort()
            links += [f"{os.path.relpath(os.path.join(here, d), root)} -> "
                      f"{os.readlink(os.path.join(here, d))}"
                      for d in dirs if os.path.islink(os.path.join(here, d))]
            for f in sorted(names):
                if f.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(here, f), class_to_idx[name]))
                    found += 1
        if not found:
            raise DataNotFoundError(
                f"imagefolder:{root}: class folder {top} holds no image "
                f"({', '.join(IMG_EXTENSIONS)}); add images or remove it")
    return samples, links


def load_imagefolder(
    path: str, image_size: int | None = None, patch_size: int | None = None
) -> StreamingImageData:
    """`PATH/train/<class>/*` and `PATH/val/<class>/*` (or `test/`), ImageNet's layout.

    Images are decoded at `image_size` (default: the card's, 224) with `patch_size` patches.
    """
    from torchvision.datasets.folder import find_classes

    card = load_card("imagefolder")
    size = image_size or card["image_size"]
    patch = patch_size or card["patch_size"]
    if size % patch:
        raise ConfigError(f"image size {size} is not a multiple of the patch size {patch}")
    root = Path(path).expanduser()
    test_dir = next((root / d for d in card["test_dirs"] if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataNotFoundError(
            f"imagefolder:{path}: expected {root}/train/<class>/<image> and "
            f"{root}/{{{','.join(card['test_dirs'])}}}/<class>/<image> ({card['layout']})"
        )
    classes, class_to_idx = find_classes(str(root / "train"))
    train_samples, train_links = _class_images(root, root / "train", class_to_idx)
    test_samples, test_links = _class_images(root, test_dir, class_to_idx)
    links = train_links + test_links
    if links:
        log.warning("imagefolder:%s: %d link(s) to folders inside class folders not followed "
                    "(first: %s); move or copy those images in if they belong there", path,
                    len(links), "; ".join(links[:3]))
    files = sorted(f for f, _ in train_samples + test_samples)
    bad = unreadable(files, cache_root(), default_workers(), f"imagefolder:{path}")
    if bad:
        first = "; ".join(f"{os.path.relpath(f, root)} ({r})" for f, r in list(bad.items())[:3])
        log.warning("imagefolder:%s: %d unreadable image(s) skipped (first: %s)", path,
                    len(bad), first)
    train, train_rel = _folder_split(root, train_samples, size, bad)
    test, test_rel = _folder_split(root, test_samples, size, bad)
    return StreamingImageData(
        name=f"imagefolder:{path}",
        pretrain_set=train,
        train_set=train,
        test_set=test,
        classes=classes,
        mean=tuple(card["mean"]),
        std=tuple(card["std"]),
        image_size=size,
        patch_size=patch,
        fingerprint=fingerprint(size, train_rel, train.labels, test_rel, test.labels),
        skipped=tuple(f"{os.path.relpath(f, root)}: {r}" for f, r in bad.items()),
    )


def _candidate_roots(card: dict[str, Any], data_root: str | None) -> list[Path]:
    """An explicit `data_root` alone (never replaced by another folder), else $MASKBENCH_DATA
    and the card's default location."""
    bases = (data_root,) if data_root else (os.environ.get(card["env_var"]), card["default_location"])
    return [Path(b).expanduser() for b in bases if b]


def find_torchvision_root(card: dict[str, Any], data_root: str | None) -> Path:
    """First of --data-root, $MASKBENCH_DATA, the card's default holding every expected file
    under torchvision's folder for the set (e.g. `cifar-10-batches-py/`)."""
    candidates = _candidate_roots(card, data_root)
    for root in candidates:
        if all((root / card["folder"] / f).is_file() for f in card["files"]):
            return root
    raise DataNotFoundError(
        f"{card['name']} not found: expected {card['folder']}/{{{', '.join(card['files'])}}} "
        f"under one of {', '.join(map(str, candidates))}. Download it with "
        f"`python -m bench download {card['name']} --data-root DIR` (needs the network), or "
        f"put torchvision's files there"
    )


def _torchvision_split(card: dict[str, Any], root: Path, split: str, download: bool) -> ArrayImages:
    import torchvision

    cls = getattr(torchvision.datasets, card["torchvision_class"])
    ds = cls(str(root), download=download, **card["splits"][split])
    x = torch.from_numpy(np.ascontiguousarray(ds.data))
    if x.shape[-1] == 3:  # CIFAR stores NHWC
        x = x.permute(0, 3, 1, 2).contiguous()
    labels = ds.targets if hasattr(ds, "targets") else ds.labels
    return ArrayImages(x, torch.as_tensor(np.asarray(labels), dtype=torch.int64), list(ds.classes))


def download(name: str, data_root: str | None = None) -> Path:
    """Fetch a torchvision set into the first candidate root (the user asked for it)."""
    if name not in TORCHVISION_SETS:
        raise ConfigError(f"only {', '.join(TORCHVISION_SETS)} can be downloaded, not {name!r}")
    card = load_card(name)
    root = _candidate_roots(card, data_root)[0]
    try:
        for split in card["splits"]:
            _torchvision_split(card, root, split, download=True)
    except (OSError, RuntimeError) as err:  # no network, refused, checksum mismatch
        raise DataNotFoundError(f"downloading {name} into {root} failed: {err}") from None
    return root


def load_torchvision(name: str, data_root: str | None = None) -> StreamingImageData:
    """CIFAR-10/100 or STL-10 from torchvision's files; never downloads (see `download`)."""
    card = load_card(name)
    root = find_torchvision_root(card, data_root)
    get = cache(lambda split: _torchvision_split(card, root, split, download=False))
    try:
        sets = {role: get(split) for role, split in card["roles"].items()}
    except RuntimeError as err:  # torchvision's md5 check: a partial copy, another release
        reason = str(err).split(". You can use download=True")[0]
        raise DataNotFoundError(
            f"{name} under {root / card['folder']} is unreadable ({reason}): its files do not "
            f"match torchvision's checksums. Download it again with "
            f"`python -m bench download {name} --data-root {root}` (needs the network)"
        ) from None
    return StreamingImageData(
        name=name,
        pretrain_set=sets["pretrain"],
        train_set=sets["train"],
        test_set=sets["test"],
        classes=sets["train"].classes,
        mean=tuple(card["mean"]),
        std=tuple(card["std"]),
        image_size=card["image_size"],
        patch_size=card["patch_size"],
        fingerprint=fingerprint(*[t for s in sets.values() for t in (s.y, s.x[:64])]),
    )
