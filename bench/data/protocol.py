"""The data protocol the trainer and the evaluation use, whatever the data (in-memory or
streamed images, packed text, sentence windows): one typed interface instead of a docstring,
and the plain `EvalSplit` every protocol returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from bench.core.spec import DataSpec


def complement(rows: Tensor, n: int) -> Tensor:
    """The indices of range(n) not in `rows`, in order."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[rows.cpu()] = False
    return keep.nonzero().squeeze(1)


def recut(data: Any, fields: tuple[str, ...], val: Tensor) -> dict[str, Tensor]:
    """`data`'s tensors `train_<f>` and `test_<f>` for each of `fields`, cut again from its
    training rows alone: the rows `val` (in that order) as the test side, the others (in
    order) as the training side (what `TrainingData.divided` returns for row data)."""
    fit = complement(val, len(getattr(data, f"train_{fields[0]}")))
    out = {}
    for f in fields:
        rows = getattr(data, f"train_{f}")
        out[f"train_{f}"], out[f"test_{f}"] = rows[fit.to(rows.device)], rows[val.to(rows.device)]
    return out


@dataclass
class EvalSplit:
    """Inputs and labels of one evaluation split; `pad_mask` marks real tokens (text only)."""

    x: Tensor
    y: Tensor
    pad_mask: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)


@runtime_checkable
class TrainingData(Protocol):
    """What a run needs of its data. `pretrain_batch` draws its augmentation from `generator`
    (so a resumed epoch replays exactly); streamed data also has `iter_pretrain`
    (bench.data.streaming.pretrain_batches uses whichever there is). For tuning trials
    (bench.data.validation): `validation_units`, how many units (inputs; documents at the
    sentence level) its labelled training split has, and `divided(val)`, the same data whose
    evaluation reads units `val` of the training split as its test split and the other
    training units as its training split, with no test data left in it."""

    name: str
    modality: str
    fingerprint: str
    classes: list[str] | None  # None: unlabelled (pretraining only, no probes)

    @property
    def spec(self) -> DataSpec: ...

    def to(self, device: torch.device) -> TrainingData: ...

    def n_pretrain(self) -> int: ...

    def pretrain_batch(self, idx: Tensor, generator: torch.Generator, aug: bool) -> Tensor: ...

    def eval_split(self, split: str, limit: int | None = None) -> EvalSplit: ...

    def validation_units(self) -> int: ...

    def divided(self, val: Tensor) -> TrainingData: ...

    def eval_batch(self, x: Tensor) -> Tensor: ...

    def raw_features(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor: ...
