"""In-memory image datasets (Fashion-MNIST from IDX files, scikit-learn digits) and batched
on-device augmentation. Data that fits in memory lives on the training device as uint8."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.errors import DataNotFoundError
from bench.core.spec import DataSpec
from bench.data.cards import load_card
from bench.data.fingerprint import fingerprint
from bench.data.protocol import EvalSplit, recut


class StandardisedImages:
    """The part of the data protocol every image dataset shares: uint8 images standardised per
    channel by the dataset's `mean` and `std` (on the device), for evaluation as they are, and
    flattened for the `raw-input` reference row."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, x: Tensor) -> Tensor:
        return normalize_images(x, self.mean, self.std)

    def eval_batch(self, x: Tensor) -> Tensor:
        return self.normalize(x)

    def raw_features(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Standardised input pixels, flattened: the `raw-input` reference row's features."""
        return self.normalize(x).flatten(1)


@dataclass
class ImageData(StandardisedImages):
    """Train/test images as uint8 `[N, C, H, W]` with int64 labels, plus normalisation facts."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    patch_size: int
    fingerprint: str
    modality: str = "image"
    split_fields: ClassVar[tuple[str, ...]] = ("x", "y")  # train_<f> / test_<f>: the splits

    @property
    def spec(self) -> DataSpec:
        _, c, h, w = self.train_x.shape
        p = self.patch_size
        return DataSpec("image", (h // p, w // p), patch_size=p, in_chans=c)

    def to(self, device: torch.device) -> ImageData:
        """A copy (of the same class: a subclass keeps its own fields) on `device`."""
        moved = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, Tensor)}
        return replace(self, **moved)

    def n_pretrain(self) -> int:
        return len(self.train_x)

    def pretrain_batch(self, idx: Tensor, generator: torch.Generator, aug: bool) -> Tensor:
        x = self.normalize(self.train_x[idx])
        return augment(x, generator) if aug else x

    def eval_split(self, split: str, limit: int | None = None) -> EvalSplit:
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        return EvalSplit(x[:limit], y[:limit])

    def validation_units(self) -> int:
        return len(self.train_y)

    def divided(self, val: Tensor) -> ImageData:
        """Training images `val` as the test split, the others as the training split."""
        return replace(self, **recut(self, self.split_fields, val))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian dims after a magic number. A file
    that is not one (a broken download, garbage) raises ValueError saying what is wrong."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    try:
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (struct.error, ValueError):
        raise ValueError(f"{path}: truncated IDX file (its header and size disagree)") from None


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_idx_root(card: dict, data_root: str | None) -> Path:
    """The folder holding all four IDX files (each possibly gzipped): an explicit `data_root`
    only (the folder itself or its torchvision layout `<root>/FashionMNIST/raw`: an explicit
    path is never replaced by another); else $MASKBENCH_DATA likewise, then Debian's path."""
    bases = [data_root] if data_root else [os.environ.get(card["env_var"])]
    candidates = [p for b in bases if b for p in (Path(b), Path(b) / card["torchvision_subdir"])]
    if not data_root:
        candidates.append(Path(card["default_location"]))
    for folder in candidates:
        if all(_find_file(folder, stem) for stem in card["files"].values()):
            return folder
    looked = " or ".join(str(c) for c in candidates)
    expected = ", ".join(card["files"].values())
    hint = ("check --data-root" if data_root else
            f"provide it with --data-root DIR, ${card['env_var']}=DIR, or `{card['install']}`")
    raise DataNotFoundError(
        f"{card['name']} not found: expected {expected} (each may end in .gz) in {looked}; {hint}"
    )


def _found_through(card: dict, data_root: str | None, folder: Path) -> str:
    """Which setting led `find_idx_root` to `folder`, as the user would write it."""
    env = os.environ.get(card["env_var"])
    if data_root:
        return f"--data-root {data_root}"
    if env and folder in (Path(env), Path(env) / card["torchvision_subdir"]):
        return f"${card['env_var']}={env}"
    return f"the default location {folder}"


def _pad_to(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = x.shape[-2:]
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    out = np.zeros(x.shape[:-2] + tuple(size), dtype=x.dtype)
    out[..., top : top + h, left : left + w] = x
    return out



def idx_files(card: dict, data_root: str | None) -> dict[str, np.ndarray]:
    """The card's IDX files, found as `find_idx_root` finds them and read, by their key in the
    card's [files] table; a damaged file raises DataNotFoundError naming where it was found."""
    folder = find_idx_root(card, data_root)
    try:
        return {k: read_idx(_find_file(folder, v)) for k, v in card["files"].items()}
    except ValueError as err:
        raise DataNotFoundError(f"{card['name']}: {err}; found through "
                                f"{_found_through(card, data_root, folder)}: replace the file "
                                f"(`{card['install']}` installs good ones)") from None


def load_fashion_mnist(data_root: str | None = None) -> ImageData:
    card = load_card("fashion-mnist")
    files = idx_files(card, data_root)
    size = tuple(card["padded_size"])
    train_x = _pad_to(files["train_images"], size)[:, None]
    test_x = _pad_to(files["test_images"], size)[:, None]
    return ImageData(
        name="fashion-mnist",
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(files["train_labels"].astype(np.int64)),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(files["test_labels"].astype(np.int64)),
        classes=list(card["classes"]),
        mean=tuple(card["mean"]),
        std=tuple(card["std"]),
        patch_size=card["patch_size"],
        fingerprint=fingerprint(files["train_labels"], files["test_labels"], train_x[:64]),
    )


def load_digits(data_root: str | None = None) -> ImageData:
    from sklearn.datasets import load_digits as sk_digits

    card = load_card("digits")
    d = sk_digits()
    # Bilinear 8x8 -> 32x32: nearest-neighbour would make every 4-px patch constant, and a
    # constant patch has no per-patch-normalised target to learn.
    small = torch.from_numpy(d.images).float()[:, None] / 16.0
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    x = (big * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    y = d.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 0
    return ImageData(
        name="digits",
        train_x=torch.from_numpy(x[~test]),
        train_y=torch.from_numpy(y[~test]),
        test_x=torch.from_numpy(x[test]),
        test_y=torch.from_numpy(y[test]),
        classes=list(card["classes"]),
        mean=tuple(card["mean"]),
        std=tuple(card["std"]),
        patch_size=card["patch_size"],
        fingerprint=fingerprint(x, y),
    )


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of uint8 images in [0, 1] (how the cards' numbers were made)."""
    f = x.double() / 255.0
    return f.mean(dim=(0, 2, 3)).tolist(), f.std(dim=(0, 2, 3)).tolist()


# log(3/4) and log(16/9) as float32 (the bounds of the crop's log aspect ratio): Python floats,
# so no tensor is copied to the device per batch.
_LOG_3_4, _LOG_16_9 = torch.log(torch.tensor([3 / 4, 16 / 9])).tolist()


@cache
def _per_channel(values: tuple[float, ...], device: torch.device) -> Tensor:
    """`values` as a `[1, C, 1, 1]` tensor on `device`, made once: a host-to-device copy per
    batch would synchronise the host with the GPU inside the training loop."""
    return torch.tensor(values, device=device).view(1, -1, 1, 1)


def normalize_images(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 `[B, C, H, W]` -> standardised float (per channel), on x's device."""
    return (x.float() / 255.0 - _per_channel(mean, x.device)) / _per_channel(std, x.device)


def crop_flip_params(
    b: int, generator: torch.Generator, device: torch.device, scale: tuple[float, float] = (0.35, 1.0)
) -> Tensor:
    """Affine matrices `[b, 2, 3]` of `augment`: random-resized-crop (area in `scale`, aspect
    3/4..4/3) + horizontal flip. Drawn per batch, so a data-parallel rank can draw the global
    batch's matrices and keep its own rows."""

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=generator.device).to(device)

    area = scale[0] + (scale[1] - scale[0]) * rand(b)
    ratio = (_LOG_3_4 + rand(b) * _LOG_16_9).exp()
    sw = (area * ratio).sqrt().clamp(max=1.0)  # crop width / image width
    sh = (area / ratio).sqrt().clamp(max=1.0)
    cx = (rand(b) * 2 - 1) * (1 - sw)  # crop centre in [-1, 1] coordinates, inside the image
    cy = (rand(b) * 2 - 1) * (1 - sh)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    return theta


def apply_affine(x: Tensor, theta: Tensor) -> Tensor:
    """One bilinear grid-sample of the batch by per-sample `theta`: no per-sample Python work."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(
    x: Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.35, 1.0)
) -> Tensor:
    """Batched random-resized-crop + horizontal flip on x's device (see `crop_flip_params`)."""
    return apply_affine(x, crop_flip_params(x.shape[0], generator, x.device, scale))
