"""Masked (sparse) convolution, as SparK (Tian et al., 2023) and ConvNeXt-V2's FCMAE do it: a
dense (CNN) encoder takes a scattered subset of patches with no leakage from the hidden ones.

The hidden patches' pixels are set to zero, and every feature map inside the trunk is set to
zero again at hidden positions after each layer that could make it non-zero there
(convolutions, normalisations, pooling, per-position linear maps), so a visible position's
features are a function of the visible pixels alone. Batch normalisation in training takes its
statistics over visible positions only (the running statistics too, and across ranks under
data parallelism), so pretraining and evaluation on whole images normalise alike.

How: forward hooks on timm's own layers multiply their output by the token mask upsampled to
the layer's resolution (the trunk is cut at stride = patch size, so every position of every
map lies inside one patch); batch norms are switched, in place, to a subclass that normalises
over the visible positions while a mask is set (the class swap bench.runtime.distributed uses:
same parameters, buffers and state-dict names). Layers that pool over positions
(squeeze-excitation, global response norm, group norm, adaptive pooling) cannot be confined
to visible positions, so a trunk holding one is refused: it encodes blocks only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from timm.layers import DropPath, LayerNorm2d
from timm.layers import activations as timm_act
from torch import Tensor, nn

from bench.core.errors import IncompatibleError
from bench.runtime import distributed

# Layers whose output is laid out [B, C, H, W] (re-masked over dims 2, 3) and those applied per
# position on [B, H, W, C] maps (ConvNeXt's MLP: re-masked over dims 1, 2). LayerNorm2d is an
# nn.LayerNorm, so it is matched first.
CHANNELS_FIRST = (nn.Conv2d, nn.modules.batchnorm._BatchNorm, LayerNorm2d, nn.MaxPool2d,
                  nn.AvgPool2d)
CHANNELS_LAST = (nn.Linear, nn.LayerNorm)
# Layers that map zero to zero position by position: nothing to re-mask after them.
ZERO_PRESERVING = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Tanh,
                   timm_act.GELU, timm_act.GELUTanh, timm_act.QuickGELU, timm_act.Swish,
                   timm_act.HardSwish, timm_act.Mish, timm_act.HardMish, timm_act.Tanh,
                   nn.Identity, nn.Dropout, DropPath,
                   nn.Sequential, nn.ModuleList, nn.ModuleDict)  # (empty containers)
# Composite timm layers that pool over positions in their own forward.
POOLING_CLASSES = ("SqueezeExcite", "SEModule", "EffectiveSEModule", "EcaModule", "CecaModule",
                   "GlobalResponseNorm", "GlobalResponseNormMlp", "CbamModule",
                   "LightCbamModule", "GatherExcite", "SelectiveKernel")


class SparseMask:
    """The visible positions of the batch being encoded (None outside a masked forward), as
    upsampled to each resolution the trunk's layers work at."""

    def __init__(self) -> None:
        self.keep: Tensor | None = None  # bool [B, gh, gw]
        self._up: dict[tuple[int, int], Tensor] = {}

    @contextmanager
    def applied(self, keep: Tensor) -> Iterator[None]:
        """Mask every layer's output with `keep [B, gh, gw]` inside the block."""
        self.keep, self._up = keep, {}
        try:
            yield
        finally:
            self.keep, self._up = None, {}

    def at(self, height: int, width: int) -> Tensor:
        """The mask at a `height x width` map: float `[B, 1, height, width]`."""
        key = (height, width)
        if key not in self._up:
            gh, gw = self.keep.shape[1:]
            if height % gh or width % gw:
                raise IncompatibleError(f"masked convolution: a {height}x{width} map is not a "
                                        f"whole number of patches of the {gh}x{gw} grid")
            m = self.keep.float().repeat_interleave(height // gh, 1)
            self._up[key] = m.repeat_interleave(width // gw, 2).unsqueeze(1)
        return self._up[key]

    def remask(self, module: nn.Module, inputs: tuple, out: Tensor) -> Tensor | None:
        """Forward hook: `out` zeroed at hidden positions (unchanged outside a masked forward,
        and for outputs that are not feature maps)."""
        if self.keep is None or not isinstance(out, Tensor) or out.dim() != 4:
            return None
        if isinstance(module, CHANNELS_FIRST):
            return out * self.at(*out.shape[2:]).to(out.dtype)
        return out * self.at(*out.shape[1:3]).to(out.dtype).permute(0, 2, 3, 1)


class _VisibleBatchNorm:
    """Mixed into a batch-norm class (`mask_trunk`): in training, while a mask is set, the
    statistics are those of the visible positions; in the data-parallel step they are over
    every rank (visible positions or all of them), as bench.runtime.distributed's global batch
    norm does (which leaves this class alone); otherwise the class's own forward."""

    shares_stats_itself = True
    sparse_mask: SparseMask

    def forward(self, x: Tensor) -> Tensor:
        mask, across = self.sparse_mask, distributed.syncing_stats()
        if not self.training or (mask.keep is None and not across):
            return super().forward(x)
        weight = None if mask.keep is None else mask.at(*x.shape[2:])
        y = distributed.normalize_batch(self, x, weight, across_ranks=across)
        return distributed.after_norm(self, y)


_VISIBLE_CLASSES: dict[type, type] = {}


def unmaskable_layers(trunk: nn.Module) -> list[str]:
    """Type names of the layers of `trunk` masking cannot confine to visible positions: known
    pooling composites, and leaves that are neither re-masked nor zero-preserving."""
    bad = []
    for module in trunk.modules():
        name = type(module).__name__
        leaf = next(module.children(), None) is None
        if name in POOLING_CLASSES or (
                leaf and not isinstance(module, CHANNELS_FIRST + CHANNELS_LAST + ZERO_PRESERVING)):
            bad.append(name)
    return sorted(set(bad))


def mask_trunk(trunk: nn.Module, arch: str) -> SparseMask:
    """Make `trunk` maskable in place (hooks on its layers, visible-only batch norms) and return
    the `SparseMask` that switches masking on (`applied`). A trunk with a layer that pools over
    positions raises IncompatibleError."""
    bad = unmaskable_layers(trunk)
    if bad:
        raise IncompatibleError(f"{arch} cannot mask its convolutions (layers that pool over "
                                f"positions or may not keep zero: {', '.join(bad)}); it encodes "
                                "one block only (visible=block)")
    mask = SparseMask()
    for module in trunk.modules():
        if isinstance(module, CHANNELS_FIRST + CHANNELS_LAST):
            module.register_forward_hook(mask.remask)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            cls = type(module)
            if cls not in _VISIBLE_CLASSES:
                _VISIBLE_CLASSES[cls] = type(f"Visible{cls.__name__}", (_VisibleBatchNorm, cls),
                                             {})
            module.__class__ = _VISIBLE_CLASSES[cls]
            module.sparse_mask = mask
    return mask


def token_mask(index: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bool `[B, gh, gw]`: True at the flat positions `index [B, K]`."""
    keep = torch.zeros(index.shape[0], grid[0] * grid[1], dtype=torch.bool, device=index.device)
    return keep.scatter_(1, index, True).view(-1, *grid)
