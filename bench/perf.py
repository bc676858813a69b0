"""`bench perf`: samples/s of a full pretraining step (real data path and synthetic on-device
data), FLOPs/sample, achieved FLOP/s, MFU against the device's dense bf16 peak, peak memory,
and the share of the step spent in the method's `fill`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bench.config import RunConfig
from bench.data import load_dataset
from bench.evaluate import autocast
from bench.models.encoders import DataSpec
from bench.sweep import resolve_run
from bench.train import (
    build_model,
    build_optimizer,
    device_name,
    epoch_generator,
    pretrain_flops_per_sample,
    resolve_device,
)

# Dense bf16 peak TFLOP/s of known accelerators (vendor figures, no sparsity).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


@dataclass
class PerfOptions:
    methods: list[str]
    encoder: str = "vit-micro"
    dataset: str = "fashion-mnist"
    batch: int = 256
    steps: int = 10
    warmup: int = 3
    device: str = "auto"
    image_size: int | None = None  # synthetic images of this size instead of the dataset's
    compile: bool = False
    data_root: str | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, batches, device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per step, averaged over `steps` after `warmup` untimed ones."""
    for i in range(warmup):
        step(batches(i))
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(batches(warmup + i))
    _sync(device)
    return (time.perf_counter() - start) / steps


def _fill_seconds(model, x: torch.Tensor, device: torch.device, steps: int) -> float:
    """Forward + backward of the method's fill alone, on the shapes of a real step."""
    gen = torch.Generator(device=device).manual_seed(0)
    visible = model.method.choose_visible(x.shape[0], model.spec.grid, gen)
    latent = torch.randn(x.shape[0], visible.count, model.proj.out_features, device=device,
                         requires_grad=True)

    def step(_):
        with autocast(device):
            out = model.method.fill(latent, visible, model.spec.grid)
        out.float().sum().backward()

    return _time_steps(step, lambda i: None, device, steps, 2)


def measure(opts: PerfOptions) -> list[dict]:
    device = resolve_device(opts.device)
    if opts.image_size:
        p = 16 if opts.image_size >= 128 else 4
        spec = DataSpec("image", (opts.image_size // p,) * 2, patch_size=p, in_chans=3)
        data = None
    else:
        data = load_dataset(opts.dataset, opts.data_root).to(device)
        spec = data.spec
    return [_measure_one(method, opts, device, spec, data) for method in opts.methods]


def _measure_one(method: str, opts: PerfOptions, device: torch.device, spec: DataSpec, data) -> dict:
    cfg = resolve_run(RunConfig(method=method, encoder=opts.encoder, dataset=opts.dataset,
                                batch_size=opts.batch, device=str(device)))
    model = build_model(cfg, spec).to(device)
    opt = build_optimizer(model, cfg, device)
    step_fn = torch.compile(model) if opts.compile else model
    gen = epoch_generator(0, 0, device)
    synthetic = torch.randn(opts.batch, spec.in_chans, *spec.image_size, device=device)

    def step(x):
        with autocast(device):
            loss = step_fn(x, gen).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_synth = _time_steps(step, lambda i: synthetic, device, opts.steps, opts.warmup)
    t_data = None
    if data is not None:
        n = data.n_pretrain()
        perm = torch.randperm(n, generator=gen, device=device)

        def real_batch(i):
            idx = perm[(i * opts.batch) % (n - opts.batch):][: opts.batch]
            return data.pretrain_batch(idx, gen, True)

        t_data = _time_steps(step, real_batch, device, opts.steps, opts.warmup)
    flops = pretrain_flops_per_sample(model, synthetic[:2])
    t_fill = _fill_seconds(model, synthetic, device, opts.steps)
    achieved = flops * opts.batch / t_synth
    peak = peak_tflops(device)
    return {
        "method": method,
        "encoder": opts.encoder,
        "batch": opts.batch,
        "device": device_name(device),
        "samples_per_s_synthetic": opts.batch / t_synth,
        "samples_per_s_data": None if t_data is None else opts.batch / t_data,
        "gflops_per_sample": flops / 1e9,
        "achieved_tflops": achieved / 1e12,
        "mfu": None if peak is None else achieved / (peak * 1e12),
        "peak_mem_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        "fill_share": t_fill / t_synth,
    }


def format_table(rows: list[dict]) -> str:
    head = (f"{'method':<8} {'samples/s data':>15} {'samples/s synth':>16} {'GFLOPs/sample':>14} "
            f"{'TFLOP/s':>8} {'MFU':>6} {'fill %':>7}  device")
    lines = [head]
    for r in rows:
        data = "n/a" if r["samples_per_s_data"] is None else f"{r['samples_per_s_data']:.1f}"
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(
            f"{r['method']:<8} {data:>15} {r['samples_per_s_synthetic']:>16.1f} "
            f"{r['gflops_per_sample']:>14.3f} {r['achieved_tflops']:>8.3f} {mfu:>6} "
            f"{100 * r['fill_share']:>6.1f}%  {r['device']}"
        )
    return "\n".join(lines)
