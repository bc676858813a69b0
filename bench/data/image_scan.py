"""Image files that cannot be decoded (truncated, corrupt, not an image), found before any run
uses a folder, so a bad file is skipped and counted instead of ending a run mid-epoch.

Each file is decoded once in full (JPEG at reduced DCT scale: every byte is still read, so a
truncated file fails) on DataLoader workers; the verdicts are cached by path, size and mtime
under the cache folder, so later loads only decode new or changed files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from bench.core import store
from bench.data.fingerprint import stable_hash
from bench.runtime import progress, stopping

SCAN_FORMAT = 1  # part of the cache's file name: bump when the check changes


def decode_error(path: str) -> str | None:
    """Why `path` does not decode as an image (one line), or None when it does."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale; other formats ignore it
            img.load()
    except Exception as err:  # noqa: BLE001  PIL raises many kinds; each means unusable
        first = (str(err).strip().splitlines() or [""])[0]
        return f"{type(err).__name__}: {first}"
    return None


class _Verdicts(Dataset):
    def __init__(self, files: list[str]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> str:
        return decode_error(self.files[i]) or ""


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def unreadable(files: list[str], cache_dir: Path, workers: int, name: str) -> dict[str, str]:
    """{path: reason} of the files among `files` that do not decode."""
    listing = "\n".join(sorted(files))
    key = f"{stable_hash(listing):016x}"
    cache = cache_dir / f"image-scan{SCAN_FORMAT}-{key}.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    stamps = {f: _stamp(f) for f in files}
    todo = [f for f in files if known.get(f, [None])[0] != stamps[f]]
    if todo:
        loader = DataLoader(_Verdicts(todo), batch_size=64, num_workers=workers,
                            collate_fn=list, worker_init_fn=stopping.ignore_in_worker)
        verdicts = [v for batch in progress.bar(loader, desc=f"check {name}", leave=False,
                                                unit="batch") for v in batch]
        known.update({f: [stamps[f], v] for f, v in zip(todo, verdicts)})
        try:
            store.write_json(cache, {f: known[f] for f in files})
        except OSError:
            pass  # an unwritable cache only costs the next load a rescan
    return {f: known[f][1] for f in files if known[f][1]}
