"""What a finished run exports to and the command that does it, importing no torch (the
report names the commands; bench.export does the work)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from bench.core.files import CONFIG, SUMMARY
from bench.core.references import REFERENCE_ROWS

FORMATS = ("timm", "safetensors")


def default_out(run_dir: Path, to: str) -> Path:
    """Where `bench export` writes without --out: inside the run folder, beside what the run
    wrote (the one kind of file it adds there)."""
    return Path(run_dir) / export_name(to)


def export_name(to: str) -> str:
    return f"encoder-{to}.safetensors"


def run_folder_of(path: Path) -> Path | None:
    """The run folder (a folder holding config.json or summary.json) that `path` is or lies
    in."""
    absolute = Path(path).absolute()
    for folder in (absolute, *absolute.parents):
        if (folder / CONFIG).is_file() or (folder / SUMMARY).is_file():
            return folder
    return None


def shown_path(path: Path) -> str:
    """`path` as a command shows it: relative to the current folder when inside it, and
    quoted for the shell."""
    absolute = Path(path).absolute()
    try:
        text = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        text = str(absolute)
    return shlex.quote(text)


def export_format(config: dict[str, Any]) -> str | None:
    """The format a run's encoder exports best to: timm for images, safetensors for text; None
    for a reference row or a run that predates the export (no data_spec in config.json)."""
    spec = config.get("data_spec")
    if config.get("method") in REFERENCE_ROWS or not isinstance(spec, dict):
        return None
    return "timm" if spec.get("modality") == "image" else "safetensors"


def export_command(run_dir: Path, to: str) -> str:
    """The command a report lists for a run (it writes `default_out`)."""
    return f"python -m bench export {shown_path(run_dir)} --to {to}"
