"""Files written safely and read back: atomic writes (tmp + rename: a reader never sees half a
file), JSON and JSON lines, torch files, a writable output folder; and the provenance every
run records (git sha, package versions)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.core.errors import OutputError


def file_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file under this process's umask (0644
    under the usual 022): what atomic writes give theirs too, instead of mkstemp's private
    0600, so colleagues on a shared cluster can read the results."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it the only other way, and put it back
    os.umask(mask)
    return 0o666 & ~mask


def temporary_file(folder: Path, name: str) -> tuple[int, str]:
    """A new temporary file beside `name` in `folder` (fd, path), with `file_mode()`."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    return fd, tmp


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

def write_once(path: Path, content: str) -> None:
    """Publish `content` at `path` unless a file is there already: written to a temporary file,
    then hard-linked into place, so no reader sees a partial file and, when processes race (DDP
    ranks on a cold cache), the first one wins and all of them read the same tokenizer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    _atomic(path, lambda f: f.write(data))


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def read_json(path: Path) -> Any:
    with path.open() as f:
        return json.load(f)


def save_torch(path: Path, obj: Any) -> None:
    import torch  # here, not at the top: status, report and list never load torch

    _atomic(path, lambda f: torch.save(obj, f))


def load_torch(path: Path) -> Any:
    """A file this package wrote (checkpoint, reconstructions, cached tensors), loaded with
    `weights_only=True`: tensors and plain containers only, so a file a user was handed cannot
    run code."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records; a truncated last line (killed mid-write) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_jsonl(path: Path, keep) -> None:
    """Rewrite `path` keeping records for which `keep(record)` is true (used on resume)."""
    records = [r for r in read_jsonl(path) if keep(r)]
    data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records).encode()
    _atomic(path, lambda f: f.write(data))


def ensure_writable(folder: Path) -> Path:
    """Create `folder` (and parents) and check we can write there, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"cannot write to {folder}: {err.strerror or err}") from None
    return folder


def check_can_create(folder: Path) -> None:
    """What `ensure_writable` would refuse, found without creating anything (a dry run): a
    file where the folder or one of its parents goes, or a folder we may not write in."""
    path = Path(folder).absolute()
    found = next(p for p in (path, *path.parents) if p.exists())  # the root exists
    if not found.is_dir():
        raise OutputError(f"cannot write to {folder}: {found} is a file")
    if not os.access(found, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {folder}: Permission denied")


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("maskbench", "torch", "torchvision", "timm", "numpy", "submitit", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
