"""`bench perf`: samples/s of a full pretraining step (the training loop's own step, fed by the
real data path and by synthetic on-device data), FLOPs/sample, achieved FLOP/s, MFU against the
device's dense bf16 peak, peak memory, and the time of the method's `fill` per step (forward +
backward) and its share of the step, on the run's grid: `patch_size=2` times Fashion-MNIST's
16x16 grid, `--image-size 224 patch_size=8` a 28x28 one, where QB-Heat propagates farther.

It runs anywhere; CPU figures (small presets) compare changes on one machine, and depend on its
load, which the table states.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from bench.core.config import RunConfig, apply_overrides
from bench.core.errors import ConfigError
from bench.core.spec import DataSpec
from bench.data import dataset_entry, dataset_key, load_dataset
from bench.data.streaming import pretrain_batches
from bench.models.build import build_model
from bench.plan.sweep import resolve_run, split_settings
from bench.run.hooks import Hook, StepAt, hooks_of_run
from bench.run.sampling import epoch_generator
from bench.run.step import TrainStep, prepare_model, pretrain_flops_per_sample, use_compile
from bench.runtime import precision
from bench.runtime.devices import device_name, peak_memory_bytes, resolve_device, synchronize
from bench.runtime.optim import build_optimizer
from bench.runtime.progress import bar

# Dense bf16 peak TFLOP/s of known accelerators (vendor figures, no sparsity; H100 = SXM).
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
    compile: bool | None = None  # None: on CUDA only, as in training
    data_root: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # run fields: decoder_depth=4 ...
    compile_mode: str = "default"  # bench.runtime.compiling (reduce-overhead: CUDA graphs)
    precision: str = "auto"  # bench.runtime.precision (auto: bf16 on CUDA only)


def _time_steps(
    step: Callable[[Tensor], object], inputs: Iterator[Tensor], device: torch.device,
    steps: int, warmup: int,
) -> float:
    """Seconds per step, averaged over `steps` after `warmup` untimed ones (compilation, caches)."""
    for _ in range(warmup):
        step(next(inputs))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(next(inputs))
    synchronize(device)
    return (time.perf_counter() - start) / steps


def _fill_seconds(model, x: Tensor, device: torch.device, steps: int) -> float:
    """Forward + backward of the method's fill alone, on the shapes of a real step."""
    gen = torch.Generator(device=device).manual_seed(0)
    visible = model.method.choose_visible(x.shape[0], model.spec.grid, gen)
    latent = torch.randn(x.shape[0], visible.count, model.method.dim, device=device,
                         requires_grad=True)

    def step(_):
        with precision.autocast(device):
            out = model.fill(latent, visible)  # float32, as in the training step
        out.sum().backward()

    return _time_steps(step, itertools.repeat(x), device, steps, 2)


def synthetic_spec(image_size: int, patch_size: int | None = None) -> DataSpec:
    """RGB images of `image_size` px in `patch_size`-px patches (default: 16-px from 128 px up,
    ImageNet-like, else 4-px)."""
    p = patch_size or (16 if image_size >= 128 else 4)
    if image_size % p:
        raise ConfigError(f"--image-size {image_size} is not a whole number of {p}-px patches")
    return DataSpec("image", (image_size // p,) * 2, patch_size=p, in_chans=3)


def run_config(method: str, opts: PerfOptions, device: torch.device) -> RunConfig:
    """The training run whose step is timed: the options' method, encoder, dataset and batch,
    and any other run field from `settings`."""
    top, per_method = split_settings(opts.settings)
    base = RunConfig(method=method, encoder=opts.encoder, dataset=opts.dataset,
                     batch_size=opts.batch, device=str(device), data_root=opts.data_root)
    return resolve_run(replace(apply_overrides(base, top), options=per_method.get(method, {})))


def measure(opts: PerfOptions, hooks: Sequence[Hook] = ()) -> list[dict]:
    """One row of figures per method; `hooks` (and the process's, bench.run.hooks.watching)
    see every timed and warm-up step end."""
    hooks = hooks_of_run(hooks)
    device = resolve_device(opts.device)
    if opts.image_size:
        if dataset_entry(opts.dataset)[0].modality != "image":
            raise ConfigError(f"--image-size makes synthetic images; {opts.dataset} is text")
        patch = run_config(opts.methods[0], opts, device).patch_size
        spec, data = synthetic_spec(opts.image_size, patch), None
    else:
        data = load_dataset(*dataset_key(run_config(opts.methods[0], opts, device))).to(device)
        spec = data.spec
    with precision.chosen(opts.precision):
        return [_measure_one(method, opts, device, spec, data, hooks)
                for method in bar(opts.methods, desc="perf", unit="method")]


def synthetic_batch(spec: DataSpec, batch: int, device: torch.device) -> Tensor:
    """On-device inputs of the data's shape: normal pixels, or token ids past the reserved
    ones (text)."""
    if spec.modality == "text":
        return torch.randint(4, spec.vocab_size, (batch, *spec.grid), device=device)
    return torch.randn(batch, spec.in_chans, *spec.image_size, device=device)


def input_size(spec: DataSpec) -> str:
    if spec.modality == "text":
        return f"{spec.grid[0]} tokens"
    return f"{spec.image_size[0]} px"


def grid_text(spec: DataSpec) -> str:
    return "x".join(map(str, spec.grid))


def _real_inputs(data, batch: int, count: int, gen: torch.Generator, device) -> Iterator[Tensor]:
    """`count` augmented batches through the training data path (in-memory or streamed)."""
    n = data.n_pretrain()
    perm = torch.randperm(n, generator=gen, device=device).repeat(math.ceil(count * batch / n))
    return pretrain_batches(data, perm[: count * batch].view(count, batch), gen, True, slice(None))


def _measure_one(method: str, opts: PerfOptions, device: torch.device, spec: DataSpec, data,
                 hooks: Sequence[Hook]) -> dict:
    cfg = run_config(method, opts, device)
    model = prepare_model(build_model(cfg, spec), device)
    compiled = use_compile(opts.compile, device)
    step = TrainStep(model, build_optimizer(model, cfg.lr, cfg.weight_decay, device), device, compiled,
                     opts.compile_mode)
    gen = epoch_generator(0, 0, device)
    synthetic = synthetic_batch(spec, opts.batch, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done = itertools.count()

    def train(x: Tensor) -> None:
        loss = step(x, gen)
        i = next(done)
        for hook in hooks:
            hook.on_step_end(StepAt(0, i, i, None, len(x)), loss)

    t_synth = _time_steps(train, itertools.repeat(synthetic), device, opts.steps, opts.warmup)
    t_data = None
    if data is not None:
        inputs = _real_inputs(data, opts.batch, opts.warmup + opts.steps, gen, device)
        t_data = _time_steps(train, inputs, device, opts.steps, opts.warmup)
    peak_mem = peak_memory_bytes(device)
    flops = pretrain_flops_per_sample(model, synthetic[:2])
    t_fill = _fill_seconds(model, synthetic, device, opts.steps)
    achieved = flops * opts.batch / t_synth
    peak = peak_tflops(device)
    return {
        "method": method,
        "encoder": opts.encoder,
        "dataset": None if data is None else opts.dataset,
        "input": input_size(spec),
        "grid": grid_text(spec),
        "batch": opts.batch,
        "device": device_name(device),
        "compile": compiled,
        "compile_mode": opts.compile_mode if compiled else None,
        "bf16": precision.uses_bf16(device),
        "samples_per_s_synthetic": opts.batch / t_synth,
        "samples_per_s_data": None if t_data is None else opts.batch / t_data,
        "epoch_s_data": None if t_data is None else data.n_pretrain() * t_data / opts.batch,
        "gflops_per_sample": flops / 1e9,
        "achieved_tflops": achieved / 1e12,
        "mfu": None if peak is None else achieved / (peak * 1e12),
        # CUDA: the largest allocation of this method's steps; CPU: the process's max RSS so far.
        "peak_mem_bytes": peak_mem,
        "fill_ms": 1000 * t_fill,  # forward + backward of the fill, per step
        "fill_share": t_fill / t_synth,
        "load_avg": list(os.getloadavg()),
    }


def format_table(rows: list[dict]) -> str:
    head = (f"{'method':<8} {'samples/s data':>15} {'samples/s synth':>16} {'epoch s':>8} "
            f"{'GFLOPs/sample':>14} {'TFLOP/s':>8} {'MFU':>6} {'fill ms':>8} {'fill %':>7} "
            f"{'peak MiB':>9}")
    lines = [head]
    for r in rows:
        data = "n/a" if r["samples_per_s_data"] is None else f"{r['samples_per_s_data']:.1f}"
        epoch = "n/a" if r["epoch_s_data"] is None else f"{r['epoch_s_data']:.1f}"
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(
            f"{r['method']:<8} {data:>15} {r['samples_per_s_synthetic']:>16.1f} {epoch:>8} "
            f"{r['gflops_per_sample']:>14.3f} {r['achieved_tflops']:>8.3f} {mfu:>6} "
            f"{r['fill_ms']:>8.2f} {100 * r['fill_share']:>6.1f}% "
            f"{r['peak_mem_bytes'] / 2**20:>9.0f}"
        )
    if rows:
        r = rows[0]
        memory = "process max RSS" if r["device"].startswith("cpu") else "max allocated"
        lines.append(
            f"{r['encoder']}, {r['input']}, {r['grid']} grid, batch {r['batch']}, "
            f"{r['dataset'] or 'synthetic data only'}, compile {'on' if r['compile'] else 'off'}; "
            f"device {r['device']}; fill ms: the fill's forward + backward per step; "
            f"peak memory = {memory}; "
            f"load average {' '.join(f'{x:.2f}' for x in r['load_avg'])}"
        )
    return "\n".join(lines)
