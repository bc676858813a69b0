"""The reconstruction pictures a run saves: the same test images across classes for every
method, with the visible mask and the decoded prediction in pixels."""

from __future__ import annotations

import torch

from bench.core import files, store
from bench.models.pretrainer import MaskedPretrainer
from bench.ops.patches import patchify, unpatchify
from bench.run.records import RunContext

RECON_IMAGES = 8  # test images shown (recon_indices): the same pictures for every method


def recon_indices(labels: torch.Tensor, n: int = RECON_IMAGES) -> torch.Tensor:
    """`n` test positions across classes: the first image of each class (classes in label
    order), then the second of each, and so on; the same positions for the same split."""
    by_class = torch.sort(labels, stable=True).indices  # test order kept within a class
    grouped = labels[by_class]
    rank = torch.arange(len(labels)) - torch.searchsorted(grouped, grouped)  # k-th of its class
    return by_class[torch.sort(rank, stable=True).indices][:n]


@torch.no_grad()
def save_reconstructions(ctx: RunContext, model: MaskedPretrainer) -> None:
    """Original, visible mask and reconstruction of test images across classes (images
    only), from the split the probes were scored on (already decoded)."""
    if model.spec.modality != "image":
        return
    data, spec = ctx.data, model.spec
    test = data.eval_split("test", ctx.cfg.eval_test_limit)
    raw = test.x[recon_indices(test.y.cpu())].to(ctx.device)
    x = data.eval_batch(raw)
    model.eval()
    out = model(x, torch.Generator(device=ctx.device).manual_seed(0))
    # The prediction is in per-patch normalised units: undo that with each patch's own
    # statistics, as MAE's visualisation does, then map back to [0, 1] pixels.
    target = patchify(x, spec.patch_size)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    pred = out.pred.float() * (var + 1e-6).sqrt() + mean
    recon = unpatchify(pred, spec.patch_size, spec.grid, spec.in_chans)
    to_unit = lambda t: (  # noqa: E731
        t * torch.tensor(data.std, device=t.device).view(1, -1, 1, 1)
        + torch.tensor(data.mean, device=t.device).view(1, -1, 1, 1)
    ).clamp(0, 1)
    store.save_torch(
        ctx.run_dir / files.RECONSTRUCTIONS,
        {
            "images": to_unit(x).cpu(),
            "visible": out.visible.mask(spec.num_tokens).cpu(),
            "recon": to_unit(recon).cpu(),
            "patch_size": spec.patch_size,
            "grid": spec.grid,
            "description": model.method.describe(spec.grid),
        },
    )
