"""Precise exceptions raised by library code; only the CLI maps them to exit codes."""

from __future__ import annotations


class BenchError(Exception):
    """Base class of every error Maskbench raises on purpose (bad input, missing data...)."""


class UnknownNameError(BenchError, KeyError):
    """A name looked up in a registry does not exist."""

    kind = "name"

    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, sorted(known)
        super().__init__(name)

    def __str__(self) -> str:
        return f"{self.name!r}; known: {', '.join(self.known) or '(none)'}"


class UnknownMethodError(UnknownNameError):
    kind = "method"


class UnknownEncoderError(UnknownNameError):
    kind = "encoder"


class UnknownDatasetError(UnknownNameError):
    kind = "dataset"


class ConfigError(BenchError, ValueError):
    """A configuration key or value is invalid."""


class IncompatibleError(ConfigError):
    """A combination of method, encoder and dataset that cannot work together."""


class DataNotFoundError(BenchError, FileNotFoundError):
    """The files of a dataset are not where we looked."""


class OutputError(BenchError, OSError):
    """The output folder cannot be written."""


class DiskFullError(OutputError):
    """A checkpoint did not fit on the disk; the run stops, resumable once space is freed."""


class ResumeError(BenchError):
    """A run folder's checkpoint cannot be resumed here (written on another device type)."""


class SchedulerError(BenchError):
    """The batch scheduler (SLURM: sbatch, sacct) refused a job or could not be asked."""


class TrackerError(BenchError):
    """An experiment tracker (TensorBoard, W&B, MLflow) cannot be used: package missing, bad
    URI. Raised before training starts."""


class ExportError(BenchError):
    """A run's encoder cannot be exported (unfinished, failed, a reference row, no timm form)."""
