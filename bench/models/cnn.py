"""Dense (CNN) encoders from timm, cut at the stage whose stride equals the patch size so one
feature vector lands on each grid position.

A CNN cannot drop tokens. Given one contiguous block (QB-Heat's, or any method's
`visible=block`), `forward_visible` crops the block's pixels and runs the CNN on the crop
alone, so no pixel outside the block can reach its features. Given a scattered subset, a
`masked` encoder runs masked convolution on the whole image (bench.models.sparse: hidden
positions stay zero through the network, batch statistics over visible positions, as SparK
and ConvNeXt-V2's FCMAE) and returns the visible positions' features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import Tensor, nn

from bench.core.errors import IncompatibleError
from bench.core.spec import DataSpec
from bench.models.parts import LAYER_NORM, Encoder
from bench.models.sparse import mask_trunk, token_mask
from bench.ops.masking import Visible, gather_tokens


@dataclass(frozen=True)
class TimmTrunk:
    """A timm architecture (with optional overrides, e.g. narrower stages) to cut at a stride."""

    arch: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def build(self, in_chans: int, stride: int) -> tuple[nn.Module, int, int]:
        """The network's stem and stages up to the stage of output stride `stride`, pruned
        of everything after it (timm's `prune_intermediate_layers`: later stages, final norm
        and head are removed, not merely unused, so they cost neither parameters nor
        compute), with that stage's index (for `forward_intermediates`) and channel count."""
        model = timm.create_model(self.arch, **dict(self.overrides), pretrained=False,
                                  num_classes=0, in_chans=in_chans)
        strides = [f["reduction"] for f in model.feature_info]
        if stride not in strides:
            raise IncompatibleError(
                f"{self.arch} has no stage at stride {stride} (the patch size); strides: "
                + ", ".join(map(str, strides))
            )
        if not hasattr(model, "prune_intermediate_layers"):
            raise IncompatibleError(f"timm {self.arch} cannot be cut at a stage")
        stage = strides.index(stride)
        model.prune_intermediate_layers(indices=[stage], prune_norm=True, prune_head=True)
        return model, stage, model.feature_info[stage]["num_chs"]


def crop_blocks(x: Tensor, origin: Tensor, size: tuple[int, int]) -> Tensor:
    """`x [B, C, H, W]` -> `[B, C, size]`: the window at per-sample pixel `origin [B, 2]`,
    gathered along rows then columns (no loop over the batch)."""
    b, c, _, w = x.shape
    rows = origin[:, :1] + torch.arange(size[0], device=x.device)  # [B, hc]
    cols = origin[:, 1:] + torch.arange(size[1], device=x.device)  # [B, wc]
    x = x.gather(2, rows[:, None, :, None].expand(b, c, size[0], w))
    return x.gather(3, cols[:, None, None, :].expand(b, c, size[0], size[1]))


class CNNEncoder(Encoder):
    """timm CNN trunk at stride = patch size, then a linear map to `dim` and a LayerNorm (like
    the ViT's final norm, so probes see features on the same scale). `masked`: it also takes
    a scattered subset, by masked convolution (bench.models.sparse)."""

    kind = "dense"

    def __init__(self, spec: DataSpec, trunk: TimmTrunk, dim: int, masked: bool = False):
        super().__init__()
        if spec.modality != "image":
            raise IncompatibleError("CNN encoders take images only")
        self.dim, self.patch, self.timm_trunk = dim, spec.patch_size, trunk
        self.trunk, self.stage, channels = trunk.build(spec.in_chans, spec.patch_size)
        self.sparse = mask_trunk(self.trunk, trunk.arch) if masked else None
        self.proj = nn.Linear(channels, dim)
        self.norm = LAYER_NORM(dim)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset({"dense", "masked"} if self.sparse is not None else {"dense"})

    def _features(self, images: Tensor, grid: tuple[int, ...]) -> Tensor:
        """`[B, gh * gw, dim]` in row-major order for images covering `grid` tokens."""
        (fmap,) = self.trunk.forward_intermediates(images, indices=[self.stage],
                                                   intermediates_only=True)
        if tuple(fmap.shape[-2:]) != tuple(grid):
            raise IncompatibleError(
                f"CNN gave a {tuple(fmap.shape[-2:])} feature map for a {tuple(grid)} grid"
            )
        return self.norm(self.proj(fmap.flatten(2).transpose(1, 2)))

    def forward_visible(self, x: Tensor, visible: Visible) -> Tensor:
        if visible.origin is not None and visible.shape is not None and len(visible.shape) == 2:
            size = (visible.shape[0] * self.patch, visible.shape[1] * self.patch)
            return self._features(crop_blocks(x, visible.origin * self.patch, size),
                                  visible.shape)
        if self.sparse is None:
            raise IncompatibleError(
                f"{self.timm_trunk.arch} encodes one contiguous 2-D block of visible positions "
                "only; use a token encoder (vit-*) or a masked CNN for scattered masks")
        return gather_tokens(self.forward_masked(x, visible), visible.index)

    def forward_masked(self, x: Tensor, visible: Visible) -> Tensor:
        """`[B, N, dim]` features of the whole grid by masked convolution: hidden pixels zeroed,
        every map re-masked layer by layer (zero at hidden positions until the per-position
        projection), batch statistics over visible positions."""
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        keep = token_mask(visible.index, grid)
        with self.sparse.applied(keep):
            return self._features(x * self.sparse.at(*x.shape[-2:]).to(x.dtype), grid)

    def forward_tokens(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Features of the full image; `pad_mask` is unused (images have no padding)."""
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        return self._features(x, grid)


def build_cnn(spec: DataSpec, *, arch: str, dim: int,
              arch_overrides: Mapping[str, Any] | None = None, masked: bool = False
              ) -> CNNEncoder:
    """The `cnn` family's builder: timm `arch` (with `arch_overrides` of its own arguments,
    e.g. narrower stages) cut at stride = patch size, projected to `dim`; `masked`: with
    masked convolution for scattered subsets."""
    return CNNEncoder(spec, TimmTrunk(arch, tuple((arch_overrides or {}).items())), dim, masked)
