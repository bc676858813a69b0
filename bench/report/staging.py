"""Writing a report atomically: files are built in a staging folder inside OUT and moved into
place one by one, report.html last; stages left by a killed report are removed."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.core import store
from bench.core.errors import BenchError, OutputError

STAGE_PREFIX = ".report-"  # OUT/.report-*: a report being written (see `staged`)
STAGE_LOCK = ".lock"  # inside a stage, flock()ed by the process writing it
STAGE_GRACE_S = 30.0  # an unlocked stage younger than this may be one being set up


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh folder inside `out` to write into; on success its files replace `out`'s (the
    HTML page last), on error they are dropped, and so is `out` if this call created it.

    The writing process holds an flock on the stage's lock file; the kernel drops it when the
    process dies, so a stage whose lock is free was left by a killed report and is removed
    here, while another report writing into the same folder keeps its stage.

    An OSError while writing (a full disk: Errno 28) is an OutputError naming the folder:
    nothing of `out` has been replaced then, so the previous report stays whole."""
    created = not out.exists()
    store.ensure_writable(out)
    _remove_abandoned_stages(out)
    try:
        stage = Path(tempfile.mkdtemp(dir=out, prefix=STAGE_PREFIX))
    except OSError as err:
        raise _unwritten(out, err) from err
    lock = os.open(stage / STAGE_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield stage
        except BenchError:
            raise
        except OSError as err:
            raise _unwritten(out, err) from err
        files = sorted((f for f in stage.iterdir() if f.name != STAGE_LOCK),
                       key=lambda f: (f.name == "report.html", f.name))
        for f in files:
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        os.close(lock)
        if created and not any(out.iterdir()):
            out.rmdir()


def _unwritten(out: Path, err: OSError) -> OutputError:
    return OutputError(f"cannot write the report into {out}: {err.strerror or err}; the "
                       "previous report there (if any) is unchanged")


def _remove_abandoned_stages(out: Path) -> None:
    """Delete the staging folders of reports that were killed (see `staged`)."""
    for stage in out.glob(STAGE_PREFIX + "*"):
        if stage.is_dir() and _abandoned(stage):
            shutil.rmtree(stage, ignore_errors=True)


def _abandoned(stage: Path) -> bool:
    """No live process holds the stage's lock, and it is not one just being set up (its lock,
    or without one the folder, is older than STAGE_GRACE_S: stages of reports that predate the
    lock have none)."""
    path = stage / STAGE_LOCK
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return _age_s(stage) > STAGE_GRACE_S
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a report is writing there now
        return False
    finally:
        os.close(fd)
    return _age_s(path) > STAGE_GRACE_S


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
