"""What a finished run exports to and the command that does it, importing no torch (the
report names the commands; bench.export does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core.references import REFERENCE_ROWS

FORMATS = ("timm", "safetensors")


def default_out(run_dir: Path, to: str) -> Path:
    return Path(run_dir) / f"encoder-{to}.safetensors"


def export_format(config: dict[str, Any]) -> str | None:
    """The format a run's encoder exports best to: timm for images, safetensors for text; None
    for a reference row or a run that predates the export (no data_spec in config.json)."""
    spec = config.get("data_spec")
    if config.get("method") in REFERENCE_ROWS or not isinstance(spec, dict):
        return None
    return "timm" if spec.get("modality") == "image" else "safetensors"


def export_command(run_dir: Path, to: str) -> str:
    return f"python -m bench export {run_dir} --to {to} --out {default_out(run_dir, to)}"
