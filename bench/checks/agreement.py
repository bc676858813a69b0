"""The GPU check's correctness part: a compiled bf16 step against eager float32 on the same
weights, batch and masks; the step log against the losses the steps returned; streamed batches
against the ones decoded in this process."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from bench.core import files, store
from bench.core.config import RunConfig
from bench.core.spec import DataSpec
from bench.data.streaming import load_imagefolder, pretrain_batches
from bench.models.build import build_model
from bench.models.pretrainer import MaskedPretrainer
from bench.run.hooks import Hook, StepAt
from bench.run.sampling import epoch_generator
from bench.run.step import TrainStep, prepare_model
from bench.run.train import train_run
from bench.runtime import precision
from bench.runtime.devices import synchronize

# bf16 autocast against float32 on one step of freshly initialised models: bf16 keeps 8 bits of
# mantissa (relative rounding 2^-9 = 0.2 %); the loss and gradient norms sum over the batch,
# which averages it out. Measured on the CPU (eager bf16 autocast, 3 draws, every case above at
# batch 32 for vit-tiny and 2 at 224 px): at most 0.27 % (loss) and 0.30 % (any gradient
# norm), so these tolerances leave a margin of 7x and more for CUDA's kernels.
LOSS_RTOL = 0.02


GRAD_RTOL = 0.05


DRAWS = 3  # mask draws per case: the first compiles, the others must not recompile


class GradNorms:
    """Stands in for the optimiser of a TrainStep: records the gradient norms the step made and
    changes no weight, so every mask draw is checked on the same weights."""

    def __init__(self, model: MaskedPretrainer):
        self.model = model
        self.seen: list[dict[str, float]] = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.seen.append(grad_norms(self.model))


PARTS = ("encoder", "proj", "method", "decoder")


def grad_norms(model: MaskedPretrainer) -> dict[str, float]:
    """L2 norm of the gradient of each part of the model that has one, and of all of it."""
    out, total = {}, 0.0
    for part in PARTS:
        grads = [p.grad.float().norm() for p in getattr(model, part).parameters()
                 if p.grad is not None]
        if grads:
            out[f"grad_{part}"] = torch.stack(grads).norm().item()
            total += out[f"grad_{part}"] ** 2
    out["grad_total"] = total**0.5
    return out


def step_agreement(cfg: RunConfig, spec: DataSpec, device: torch.device,
                   backend: str = "inductor", compiled_precision: str = "bf16",
                   loss_rtol: float = LOSS_RTOL, grad_rtol: float = GRAD_RTOL) -> dict[str, Any]:
    """The training step of `cfg` compiled (by `backend`) at `compiled_precision`, against the
    same model eager in float32, on one seeded batch and `DRAWS` mask draws (the same draws on
    both sides). Passes when the loss and every gradient norm agree within the tolerances and
    the later draws neither recompile nor break the graph."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model = prepare_model(build_model(cfg, spec), device)
    x = torch.randn(cfg.batch_size, spec.in_chans, *spec.image_size,
                    generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    recorder = GradNorms(model)
    step = TrainStep(model, recorder, device, compile=True, backend=backend)  # type: ignore[arg-type]
    reference_gen, step_gen = (epoch_generator(cfg.seed, 0, device) for _ in range(2))
    breaks = sum(counters["graph_break"].values())
    worst = {"loss": 0.0, "grad": 0.0}
    draws, recompiled = [], None
    for k in range(DRAWS):
        visible = model.method.choose_visible(cfg.batch_size, spec.grid, reference_gen)
        model.zero_grad(set_to_none=True)
        with precision.chosen("fp32"):
            eager_loss = model(x, None, visible).loss
        eager_loss.backward()
        eager = {"loss": eager_loss.item(), **grad_norms(model)}
        guard = torch._dynamo.config.patch(error_on_recompile=k > 0)
        start = time.perf_counter()
        try:
            with guard, precision.chosen(compiled_precision):
                loss = step(x, step_gen)
            synchronize(device)
        except torch._dynamo.exc.RecompileError as err:
            recompiled = f"draw {k + 1}: {str(err).splitlines()[0]}"
            break
        seconds = time.perf_counter() - start
        compiled = {"loss": loss.item(), **recorder.seen[-1]}
        rel = {key: abs(compiled[key] - eager[key]) / max(abs(eager[key]), 1e-12) for key in eager}
        worst["loss"] = max(worst["loss"], rel["loss"])
        worst["grad"] = max(worst["grad"], *(v for key, v in rel.items() if key != "loss"))
        draws.append({"eager": eager, "compiled": compiled, "step_s": seconds})
    graph_breaks = sum(counters["graph_break"].values()) - breaks
    ok = (recompiled is None and graph_breaks == 0 and worst["loss"] <= loss_rtol
          and worst["grad"] <= grad_rtol)
    result = {"pass": ok, "loss_rel": worst["loss"], "grad_rel": worst["grad"],
              "loss_rtol": loss_rtol, "grad_rtol": grad_rtol, "backend": backend,
              "compiled_precision": compiled_precision, "recompiled": recompiled,
              "graph_breaks": graph_breaks, "compile_s": draws[0]["step_s"] if draws else None,
              "draws": draws}
    del model, step, recorder
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


class ReturnedLosses(Hook):
    """The loss of every training step, kept on the device (no sync)."""

    def __init__(self):
        self.kept: list[torch.Tensor] = []

    def on_step_end(self, at: StepAt, loss: torch.Tensor) -> None:
        self.kept.append(loss)


def step_log_agreement(cfg: RunConfig, run_dir: Path, data: Any) -> dict[str, Any]:
    """Train `cfg` with `log_every=1` and a checkpoint after every step, so every logged loss is
    written by the mid-epoch flush that waits for its copy; `steps.jsonl` must then hold exactly
    the losses the steps returned."""
    cfg = dataclasses.replace(cfg, log_every=1, checkpoint_every_min=1e-9)
    returned = ReturnedLosses()
    summary = train_run(cfg, run_dir, progress=False, hooks=[returned], data=data)
    expected = [t.item() for t in returned.kept]  # .item() synchronises: the true values
    logged = [r["loss"] for r in store.read_jsonl(run_dir / files.STEPS)]
    return {"pass": summary["status"] == "ok" and logged == expected and len(logged) > 0,
            "steps": len(expected), "logged": logged, "returned": expected}


def streaming_agreement(folder: Path, device: torch.device, workers: int) -> dict[str, Any]:
    """Batches streamed by `workers` DataLoader workers (pinned memory on CUDA) equal the ones
    decoded in this process, augmentation included, for one process and for two ranks' rows."""
    data = load_imagefolder(str(folder), image_size=32, patch_size=4).to(device)
    streamed = dataclasses.replace(data, workers=workers)
    batch = 8
    n = data.n_pretrain() // batch * batch
    batches = torch.randperm(data.n_pretrain(), generator=torch.Generator().manual_seed(0))
    batches = batches[:n].view(-1, batch)

    def epoch(d: Any, rows: slice = slice(None)) -> list[torch.Tensor]:
        gen = torch.Generator(device=device).manual_seed(1)
        return list(pretrain_batches(d, batches, gen, True, rows))

    gen = torch.Generator(device=device).manual_seed(1)
    direct = [data.pretrain_batch(b, gen, True) for b in batches]
    whole = epoch(streamed)
    halves = [epoch(streamed, slice(0, batch // 2)), epoch(streamed, slice(batch // 2, batch))]
    equal = len(whole) == len(direct) and all(torch.equal(a, b) for a, b in zip(whole, direct))
    split = all(torch.equal(torch.cat([h0, h1]), w) for h0, h1, w in zip(*halves, whole))
    return {"pass": equal and split, "batches": len(whole), "equal": equal,
            "ranks_concatenate": split, "workers": workers,
            "pin_memory": data.pins}
