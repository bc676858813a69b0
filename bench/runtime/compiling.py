"""torch.compile of the pretraining step: the mode (CUDA graphs for launch-bound tiny models) and
one inductor cache per results folder, so the runs of a sweep compile each shape once.

Tiny models are launch-bound on a GPU (a 1 s Fashion-MNIST epoch leaves about 4 ms per step):
`compile_mode=reduce-overhead` replays the compiled step as a CUDA graph, one launch instead of
hundreds. On a CPU inductor skips the CUDA graphs: reduce-overhead compiles as default there.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # inductor's FX-graph, autograd and Triton caches
CACHE_DIR = ".inductor-cache"  # OUT/.inductor-cache, beside OUT/.submitit


def compile_step(net: nn.Module, mode: str = "default", backend: str = "inductor") -> nn.Module:
    """`net` compiled in `mode`. `backend` is for checks and tests only: `aot_eager` traces
    (dynamo + AOT autograd) without generating code, in seconds on a CPU."""
    return torch.compile(net, mode=mode, backend=backend)


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    """The compiled step replays CUDA graphs (outputs live in reused static buffers)."""
    return mode in CUDA_GRAPH_MODES and device.type == "cuda"


def sweep_cache(out: Path) -> str:
    """The inductor cache of the runs in results folder `out`: the folder the user chose
    ($TORCHINDUCTOR_CACHE_DIR when bench was first imported), else OUT/.inductor-cache, where
    every worker process and SLURM task of a sweep reuses what the first run compiled for the
    same shapes (on a shared filesystem, across nodes too). Runs inside the launching process
    keep that process's cache (torch's default: one per user and machine)."""
    import bench

    return bench.USER_INDUCTOR_CACHE or str(Path(out).resolve() / CACHE_DIR)


def use_cache(folder: str | None) -> None:
    """Compile into `folder` from now on in this process (None: leave the cache as it is).
    torch reads the variable at every cache access, so this works after torch's import."""
    if folder is not None:
        os.environ[CACHE_ENV] = folder
