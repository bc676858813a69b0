"""The data protocol the trainer and the evaluation use, whatever the data (in-memory or
streamed images, packed text, sentence windows): one typed interface instead of a docstring,
and the plain `EvalSplit` every protocol returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from bench.core.spec import DataSpec


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
    (bench.data.streaming.pretrain_batches uses whichever there is)."""

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

    def eval_batch(self, x: Tensor) -> Tensor: ...

    def raw_features(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor: ...
