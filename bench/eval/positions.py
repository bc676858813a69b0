"""Per-position features of what a row's probes read: the frozen encoder's tokens
(`forward_tokens`: ViT tokens after the final norm, or the CNN's feature map at stride = patch
size), or, for the `raw-input` row, the input's own features at each position: an image
patch's standardised pixels (p x p x C values), a text token's one-hot over the
`RAW_TEXT_SLOTS - 1` most frequent ids of the training texts (every other id shares the last
slot: a one-hot over a full 8,000-id vocabulary is too wide for the ridge fits).

The dense probe and linear predictability read these; the pooled probes read the mean."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.eval.heldout import evaluating
from bench.models.parts import Encoder
from bench.ops.patches import patchify
from bench.runtime import precision, progress

RAW_TEXT_SLOTS = 256


@dataclass
class PositionFeatures:
    """Reads `[B, N, D]` float32 features of a batch of inputs (as stored: uint8 images or
    token ids); `slots` maps a vocabulary id to its one-hot slot (text raw-input only)."""

    encoder: Encoder | None
    data: Any
    slots: Tensor | None = None

    @classmethod
    def of(cls, encoder: Encoder | None, data: Any, train_ids: Tensor | None = None
           ) -> PositionFeatures:
        """The reader of `encoder` (None: the raw input); text raw-input ranks ids by their
        count in `train_ids` (the training texts, padding excluded)."""
        if encoder is not None or data.modality != "text":
            return cls(encoder, data)
        real = train_ids[train_ids != data.pad_id]
        counts = torch.bincount(real.flatten().cpu(), minlength=data.vocab_size)
        top = counts.argsort(descending=True, stable=True)[: RAW_TEXT_SLOTS - 1]
        slots = torch.full((data.vocab_size,), RAW_TEXT_SLOTS - 1, dtype=torch.long)
        slots[top] = torch.arange(len(top))
        return cls(encoder, data, slots.to(train_ids.device))

    @property
    def what(self) -> str:
        if self.encoder is not None:
            return "encoder tokens"
        return "patch pixels" if self.data.modality == "image" else "token one-hots"

    def tokens(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        """Features `[B, N, D]` of every position of `x` (on the encoder's device)."""
        if self.encoder is None:
            if self.data.modality == "image":
                return patchify(self.data.eval_batch(x), self.data.spec.patch_size)
            return F.one_hot(self.slots[x], RAW_TEXT_SLOTS).float()
        with precision.autocast(x.device):
            return self.encoder.forward_tokens(self.data.eval_batch(x), pad).float()

    def pooled(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        """One vector per input `[B, D]`: the encoder's pooled features; raw: an image's
        standardised pixels (as the pooled probes read them), a text's one-hots summed over
        real positions (bag of words over the slots)."""
        if self.encoder is None and self.data.modality == "text":
            real = (x != self.data.pad_id) if pad is None else pad
            return (self.tokens(x) * real.unsqueeze(-1)).sum(1)
        if self.encoder is None:
            return self.data.raw_features(x)
        with precision.autocast(x.device):
            return self.encoder.pooled(self.data.eval_batch(x), pad).float()


def batches(x: Tensor, pad: Tensor | None, batch_size: int, device: torch.device, desc: str
            ) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """`(start, x[start:end], pad[start:end])` on `device`, with a progress bar."""
    for i in progress.bar(range(0, len(x), batch_size), desc=desc, leave=False, unit="batch"):
        yield (i, x[i : i + batch_size].to(device),
               None if pad is None else pad[i : i + batch_size].to(device))


@torch.no_grad()
def read_all(reader: PositionFeatures, x: Tensor, pad: Tensor | None, batch_size: int,
             device: torch.device, desc: str, pooled: bool = False) -> Tensor:
    """Every input's features at once: tokens `[N, P, D]`, or with `pooled` vectors `[N, D]`."""
    out = []
    with frozen(reader):
        for _, xb, pb in batches(x, pad, batch_size, device, desc):
            out.append(reader.pooled(xb, pb) if pooled else reader.tokens(xb, pb))
    return torch.cat(out)


def frozen(reader: PositionFeatures) -> AbstractContextManager:
    """The encoder in eval mode for the block (nothing to do for the raw input)."""
    return nullcontext() if reader.encoder is None else evaluating(reader.encoder)
