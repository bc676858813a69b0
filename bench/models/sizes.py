"""`bench encoders`: what each encoder preset is on the dataset it will run on: parameters and
forward FLOPs per sample, on the full input (what the probes see) and on the visible block
(what a pretraining step's encoder sees). A preset's name does not say this: a CNN cut at
stride = patch size keeps few of its network's stages on 4-px patches.

The presets are built (torch, timm) on the dataset's `DataSpec` read from its card, so no
data is loaded: the figures hold for any copy of the dataset.
"""

from __future__ import annotations

import torch

from bench.core.spec import DataSpec
from bench.data import dataset_entry
from bench.data.cards import load_card
from bench.data.text import DEFAULT_BLOCK_LENGTH, DEFAULT_VOCAB_SIZE
from bench.models.encoders import build_encoder
from bench.models.presets import ENCODERS
from bench.ops.masking import block_visible, contiguous_block_shape
from bench.runtime.flops import flop_counter

MASK_RATIO = 0.75  # every method's default: the visible part is a quarter (bench.ops.masking)


def card_spec(dataset: str) -> DataSpec:
    """The `DataSpec` a run on `dataset` gets, from its card: image grid = (padded) image
    size / patch size; text: the default block length and vocabulary (bench.data.text)."""
    entry, _ = dataset_entry(dataset)
    if entry.modality == "text":
        return DataSpec("text", (DEFAULT_BLOCK_LENGTH,), vocab_size=DEFAULT_VOCAB_SIZE)
    card = load_card(entry.name)
    size = card.get("padded_size", card["image_size"])
    h, w = (size, size) if isinstance(size, int) else size
    p = card["patch_size"]
    return DataSpec("image", (h // p, w // p), patch_size=p, in_chans=card["channels"])


def _forward_flops(fn) -> int:
    counter = flop_counter()
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops()


def preset_size(name: str, spec: DataSpec) -> dict:
    """Preset `name` on `spec`: kind, grid, parameters (the whole encoder module's) and
    forward FLOPs per sample on the full input and on the visible block at mask ratio 0.75
    (torch's flop counter: a multiply-add counts 2)."""
    shape = contiguous_block_shape(spec.grid, MASK_RATIO)
    visible = block_visible(1, spec.grid, shape, "center", torch.Generator())
    if spec.modality == "image":
        x = torch.randn(1, spec.in_chans, *spec.image_size)
    else:
        x = torch.randint(0, spec.vocab_size, (1, *spec.grid))
    torch.manual_seed(0)
    encoder = build_encoder(name, spec).eval()
    return {
        "encoder": name,
        "kind": ENCODERS.get(name).kind,
        "grid": "x".join(map(str, spec.grid)),
        "params": sum(p.numel() for p in encoder.parameters()),
        "flops_full": _forward_flops(lambda: encoder.forward_tokens(x)),
        "flops_block": _forward_flops(lambda: encoder.forward_visible(x, visible)),
        "block": "x".join(map(str, shape)),
    }


def preset_sizes(dataset: str) -> list[dict]:
    """`preset_size` of every preset that takes the dataset's modality, on its card's spec."""
    spec = card_spec(dataset)
    return [{**preset_size(name, spec), "dataset": dataset} for name in ENCODERS.names()
            if spec.modality in ENCODERS.get(name).modalities]


def format_sizes(rows: list[dict]) -> str:
    lines = [f"{'encoder':<20} {'kind':<6} {'params':>9} {'GFLOPs full':>12} "
             f"{'GFLOPs block':>13}"]
    for r in rows:
        lines.append(f"{r['encoder']:<20} {r['kind']:<6} {r['params'] / 1e6:>8.3f}M "
                     f"{r['flops_full'] / 1e9:>12.4f} {r['flops_block'] / 1e9:>13.4f}")
    if rows:
        r = rows[0]
        lines.append(f"{r['dataset']}: {r['grid']} grid; forward FLOPs per sample on the full "
                     f"input and on the visible {r['block']} block (mask ratio {MASK_RATIO}), "
                     "parameters of the whole encoder module")
    return "\n".join(lines)
