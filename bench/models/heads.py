"""Prediction heads: the decoder's last layer, which owns what it predicts and how that is
scored (mmpretrain's head split), so the pretrainer never asks which modality it serves.

Each head is the Linear it always was (`decoder.head.weight` / `.bias` in checkpoints) with
`construct_target`, `position_loss` and `real` (the positions a loss may score) added.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.spec import DataSpec
from bench.ops.patches import normalized_patches


class PixelHead(nn.Linear):
    """Per-patch pixels, scored against MAE's per-patch normalised pixels (norm_pix_loss) by
    the mean squared error over the patch."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__(dim, spec.patch_size * spec.patch_size * spec.in_chans)
        self.patch = spec.patch_size

    def construct_target(self, images: Tensor) -> Tensor:
        return normalized_patches(images, self.patch)

    def position_loss(self, images: Tensor, pred: Tensor) -> Tensor:
        """`[B, N]` float32: each patch's MSE to its normalised pixels."""
        return (pred.float() - self.construct_target(images)).pow(2).mean(dim=-1)

    def real(self, images: Tensor) -> Tensor | None:
        """Every patch is real (images have no padding)."""
        return None


class TokenHead(nn.Linear):
    """Logits over the vocabulary, scored by the cross-entropy of the token itself."""

    def __init__(self, spec: DataSpec, dim: int):
        super().__init__(dim, spec.vocab_size)
        self.pad_id = spec.pad_id

    def construct_target(self, ids: Tensor) -> Tensor:
        return ids

    def position_loss(self, ids: Tensor, pred: Tensor) -> Tensor:
        """`[B, N]` float32: -log p(token) at every position."""
        return F.cross_entropy(pred.float().transpose(1, 2), self.construct_target(ids),
                               reduction="none")

    def real(self, ids: Tensor) -> Tensor | None:
        """BoolTensor[B, N]: the positions that are not [PAD]."""
        return ids != self.pad_id


HEADS: dict[str, type[PixelHead] | type[TokenHead]] = {"image": PixelHead, "text": TokenHead}


def build_head(spec: DataSpec, dim: int) -> PixelHead | TokenHead:
    """The head for `spec`'s data (the one place that reads the modality)."""
    return HEADS[spec.modality](spec, dim)
