"""A non-editable `pip install .` into a fresh venv has everything a run needs (every package,
the dataset cards) and works from another folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.helpers import ROOT, TINY


@pytest.mark.slow
def test_an_installed_copy_lists_and_runs_from_another_folder(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, timm, ...) from this environment, not its editable maskbench
    (tmp_path / "venv" / site.split(str(venv) + "/")[1] / "deps.pth").write_text(
        sysconfig.get_path("purelib") + "\n")
    source = tmp_path / "src"  # a copy: the in-tree build leaves build/ behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "results", "build", "*.egg-info", "__pycache__", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", site, str(source)], check=True,
                   cwd=tmp_path, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def bench(*argv: str) -> str:
        out = subprocess.run([python, "-m", "bench", *argv], cwd=elsewhere, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    where = subprocess.run([python, "-c", "import bench, methods.mae; print(bench.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert where.startswith(site)  # the installed copy, not this checkout
    listed = bench("list")
    assert "fashion-mnist" in listed and "qbheat" in listed
    bench("run", "--methods", "qbheat,raw-input", "--out", str(elsewhere / "out"), *TINY)
    assert len(list((elsewhere / "out").glob("*/summary.json"))) == 2
