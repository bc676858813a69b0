"""The run's device: resolving the `device` setting (refusing what this machine lacks), its
name and peak memory for summary.json, and the rule that a checkpoint resumes only on the
device type that wrote it."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

import torch

from bench.core.errors import ConfigError, ResumeError


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str) -> torch.device:
    """The torch device of a `device` setting (auto: CUDA when present); a CUDA or MPS device
    this machine does not have is refused with a one-line ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={name}: this machine has no CUDA device (torch sees "
                              "none); use device=cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device={name}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}: MPS is not available here; use device=cpu or auto")
    return device


def check_device_type(written: str | None, device: torch.device, path: Path) -> None:
    """A checkpoint resumes only where it was written: generator states differ between CPU
    and CUDA, and so would the rest of the run's numbers."""
    if written is not None and written != device.type:
        raise ResumeError(
            f"{path} was written on {written} and this run is on {device.type}: resume it with "
            f"device={written}, or move the run folder aside to start it again here")


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the largest allocation so far; CPU: the process's maximum resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
