"""What a trained fill did, beyond one loss: the method's own named figures
(`MaskingMethod.diagnostics`, e.g. QB-Heat's operator norms, step growth and commutator) and
the held-out reconstruction loss split by how far each hidden position lies from what the
encoder saw, so a reader sees where a fill (QB-Heat's extrapolation above all) breaks down.

Distance is the Chebyshev (king-move) distance in tokens from a position to the nearest
visible one: for QB-Heat's block, the number of unit steps along the farther axis (a
position d steps right and e steps down of the block is max(d, e) away). Bins: 1, 2, 3+, and
on grids that reach it 5+ (a part of 3+). Distances are in tokens of the run's grid, so they
follow its patch size.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from bench.eval.heldout import Batches, heldout_outputs
from bench.models.pretrainer import MaskedPretrainer
from bench.models.sentences import SentencePretrainer
from bench.ops.masking import Visible

# (smallest distance, metric name); the last bin holds every farther position too.
DISTANCE_BINS = ((1, "recon_loss_d1"), (2, "recon_loss_d2"), (3, "recon_loss_d3plus"))
# Bigger grids (16x16 at 2-px patches, 28x28 at 8-px) reach farther: the positions at least
# this far, a part of the last bin, reported apart where a grid has any.
FAR = (5, "recon_loss_d5plus")


def visible_distance(visible: Visible, grid: tuple[int, ...]) -> Tensor:
    """`[B, N]` Chebyshev distance (tokens) from each grid position to the nearest visible
    one: 0 at visible positions, 1 on the ring around them, and so on (any grid, any
    layout)."""
    device = visible.index.device
    axes = torch.meshgrid(*[torch.arange(g, device=device) for g in grid], indexing="ij")
    coords = torch.stack([a.reshape(-1) for a in axes], dim=-1)  # [N, ndim]
    seen = coords[visible.index]  # [B, K, ndim]
    return (coords[None, :, None] - seen[:, None]).abs().amax(-1).amin(-1)


def heldout_batches(model: MaskedPretrainer, data, limit: int | None, batch_size: int,
                    device: torch.device) -> Batches:
    """The held-out inputs the run's own held-out metrics score: the first `limit` test images
    (normalised), the held-out text blocks, or at sentence level the held-out windows."""
    if isinstance(model, SentencePretrainer):
        return Batches(data.heldout_windows(limit), batch_size, device)
    if model.spec.modality == "text":
        return Batches(data.heldout_blocks(limit), batch_size, device)
    return Batches(data.eval_split("test", limit).x, batch_size, device, data.eval_batch)


@torch.no_grad()
def recon_loss_by_distance(model: MaskedPretrainer, batches: Iterable[Tensor],
                           device: torch.device, seed: int) -> dict[str, float]:
    """Mean per-position loss (`MaskedPretrainer.position_loss`) over the scored positions of
    each distance bin (and of `FAR`, where a grid reaches it), under the method's own masking
    drawn from `seed` (the draws `reconstruction_loss` makes). A bin no position falls in is
    left out."""
    bins = (*DISTANCE_BINS, FAR)
    sums = torch.zeros(len(bins), dtype=torch.float64, device=device)
    counts = torch.zeros(len(bins), dtype=torch.long, device=device)
    for x, out in heldout_outputs(model, batches, device, seed, "recon by distance"):
        loss = model.position_loss(x, out.pred)
        scored = model.scored(x, out.visible)
        distance = visible_distance(out.visible, model.spec.grid)
        bin_of = distance.clamp_max(DISTANCE_BINS[-1][0])
        for i, (d, _) in enumerate(bins):
            where = scored & ((bin_of == d) if i < len(DISTANCE_BINS) else (distance >= d))
            sums[i] += loss[where].double().sum()
            counts[i] += where.sum()
    return {name: (s / c).item()
            for (_, name), s, c in zip(bins, sums.cpu(), counts.cpu()) if c > 0}


def fill_diagnostics(model: MaskedPretrainer, data, limit: int | None, batch_size: int,
                     device: torch.device, seed: int) -> dict[str, float]:
    """The method's `diagnostics()` and `recon_loss_by_distance` on the held-out inputs (that
    first: it draws masks, so a method whose figures depend on its grid has seen it, even in
    a run resumed after its last epoch)."""
    batches = heldout_batches(model, data, limit, batch_size, device)
    by_distance = recon_loss_by_distance(model, batches, device, seed)
    return {**model.method.diagnostics(), **by_distance}
