"""A run's checkpoints: written atomically keeping the last two, read back with a fallback.

`checkpoint.pt` is the newest, `checkpoint.prev.pt` the one before. A file that cannot be read
(empty, truncated, garbage: a disk that filled up, a copy cut short) is moved aside as
`checkpoint.corrupt-N.pt` with a warning naming it, and the run resumes from the previous good
one, or from scratch when none is left: a bad file never fails every retry the same way.
A checkpoint that does not fit on the disk is a one-line `DiskFullError` naming the file, the
bytes it needs and the space left; the previous checkpoints stay as they were.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from bench.core import files, store
from bench.core.errors import DiskFullError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "optimizer", "state")
NEWEST_FIRST = (files.CHECKPOINT, files.PREVIOUS_CHECKPOINT)  # where a resume looks, in order


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a checkpoint object: about its size on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch's zip writer reports a short write as "unexpected pos" / "file write failed"
    return isinstance(err, RuntimeError) and any(
        s in str(err) for s in ("unexpected pos", "write failed", "No space left"))


def save(run_dir: Path, obj: dict[str, Any]) -> None:
    """Write `obj` as the run's newest checkpoint; the newest until now becomes the previous."""
    path, new = run_dir / files.CHECKPOINT, run_dir / f".{files.CHECKPOINT}.new"
    try:
        store.save_torch(new, obj)
    except (OSError, RuntimeError) as err:
        if not _is_disk_full(err):
            raise
        new.unlink(missing_ok=True)
        free = shutil.disk_usage(run_dir).free
        raise DiskFullError(
            f"cannot write {path}: the disk is full (it needs about "
            f"{_tensor_bytes(obj) / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free); the "
            "previous checkpoint is intact: free some space and rerun to resume") from None
    if path.exists():
        path.replace(run_dir / files.PREVIOUS_CHECKPOINT)
    new.replace(path)


def _read(path: Path) -> dict[str, Any]:
    obj = store.load_torch(path)
    if not isinstance(obj, dict) or any(k not in obj for k in REQUIRED_KEYS):
        raise ValueError("not a Maskbench checkpoint")
    return obj


def _move_aside(path: Path, reason: BaseException) -> Path:
    n = 1
    while (aside := path.with_name(f"checkpoint.corrupt-{n}.pt")).exists():
        n += 1
    path.replace(aside)
    first = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
    log.warning("%s is unreadable (%s): moved to %s", path, first[:120], aside.name)
    return aside


def load(run_dir: Path, move_aside: bool = True) -> dict[str, Any] | None:
    """The newest readable checkpoint of the run (None: none, start from scratch). Unreadable
    ones are moved aside (`move_aside`) or just skipped (readers that must not change the
    folder, e.g. `bench status`)."""
    for name in NEWEST_FIRST:
        path = run_dir / name
        if not path.exists():
            continue
        try:
            return _read(path)
        except Exception as err:  # noqa: BLE001  any unreadable file: never fatal
            if move_aside:
                _move_aside(path, err)
    return None


def peek(run_dir: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint's `state` and `device_type`, read without loading its
    tensors (mmap) and without changing the folder; None when there is none."""
    for name in NEWEST_FIRST:
        path = run_dir / name
        if not path.exists():
            continue
        try:
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            return {"state": dict(obj["state"]), "device_type": obj.get("device_type")}
        except Exception:  # noqa: BLE001  unreadable: the trainer moves it aside later
            continue
    return None
