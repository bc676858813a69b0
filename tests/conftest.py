"""Fixtures shared by the test folders (helpers.py has the plain functions)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch

from bench.data import load_dataset
from bench.data.samples import write_image_folder
from tests.helpers import IMAGE_CLASSES, ROOT, SLURM_SCRIPT

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """The cluster answers `status`; otherwise skip (fail in CI)."""
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    try:
        proc = subprocess.run(
            ["bash", str(SLURM_SCRIPT), "status"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        ok, output = proc.returncode == 0, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        ok, output = False, f"status timed out: {exc}"
    if not ok:
        msg = (
            "SLURM test cluster not usable; start it with "
            f"`sudo {SLURM_SCRIPT.relative_to(ROOT)} start`.\n{output}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """train/<class>/ 8 images and val/<class>/ 3 each, odd sizes, PNG and JPEG; each class has
    its own colour channel so labels are learnable; and a file that is not an image."""
    root = write_image_folder(tmp_path_factory.mktemp("imagefolder"), IMAGE_CLASSES)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that compile with inductor are slow ones (`make test-slow`)."""
    for item in items:
        if item.get_closest_marker("inductor") is not None:
            item.add_marker(pytest.mark.slow)
