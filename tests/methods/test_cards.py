"""A method is one small folder found without torch: its card plans runs, `bench list`,
dry runs and reports read it unimported, its class is imported when a run builds it, and its
diagnostics get a report section of their own, all without editing a core file. Folders named
in $MASKBENCH_METHODS are searched too; a single-file method is planned by importing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, TINY

CARD = '''"""Wide: hidden positions get one learned vector, scaled by a learned gain."""

from bench.core.cards import Diagnostic, MethodCard
from bench.core.options import LayoutOptions

CARD = MethodCard(
    name="wide",
    summary="Random visible subset; hidden positions get a learned vector times a gain.",
    modalities=frozenset({"image"}),
    Options=LayoutOptions,
    diagnostics=(Diagnostic("wide_gain", "gain g", "x"),),
    diagnostics_title="Wide: its learned gain",
    diagnostics_note="The gain the fill learned.",
)
'''
METHOD = '''import torch
from torch import nn

from bench.ops.masking import grid_size, scatter_tokens
from methods.base import MaskingMethod, register_method
from methods.wide import CARD


@register_method(CARD)
class Wide(MaskingMethod):
    """Random visible subset; hidden positions get a learned vector times a gain."""

    def __init__(self, options, dim, modality):
        super().__init__(options, dim, modality)
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        self.gain = nn.Parameter(torch.ones(()))

    def fill(self, latent, visible, grid):
        base = (self.gain * self.token).to(latent.dtype).expand(len(latent), grid_size(grid), -1)
        return scatter_tokens(base, visible.index, latent)

    def diagnostics(self):
        return {"wide_gain": self.gain.item()}
'''
SINGLE_FILE = '''import torch

from bench.ops.masking import grid_size, scatter_tokens
from methods.base import MaskingMethod, register_method


@register_method("narrow")
class Narrow(MaskingMethod):
    """Random visible subset; hidden positions are zeros."""

    modalities = frozenset({"image"})

    def fill(self, latent, visible, grid):
        base = latent.new_zeros(len(latent), grid_size(grid), latent.shape[-1])
        return scatter_tokens(base, visible.index, latent)
'''
PROBE = """
import json, sys
from bench.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def bench(folder: Path, *argv: str) -> tuple[dict, str]:
    env = {**os.environ, "MASKBENCH_METHODS": str(folder), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


def test_a_method_folder_outside_the_package_plans_runs_and_reports(tmp_path):
    folder = tmp_path / "mine"
    (folder / "wide").mkdir(parents=True)
    (folder / "wide" / "__init__.py").write_text(CARD)
    (folder / "wide" / "method.py").write_text(METHOD)
    said, printed = bench(folder, "list")
    assert said == {"code": 0, "torch": False} and "wide" in printed
    said, _ = bench(folder, "run", "--methods", "wide", "--dry-run", "wide.mask_ratio=0.5")
    assert said == {"code": 0, "torch": False}
    said, _ = bench(folder, "run", "--methods", "wide", "wide.width=3", "--dry-run")
    assert said["code"] == 2  # its options are checked from the card
    out = tmp_path / "out"
    said, _ = bench(folder, "run", "--methods", "wide", "--seeds", "0", "--out", str(out),
                    *TINY)
    assert said["code"] == 0
    summary = next(json.loads(p.read_text()) for p in out.glob("*/summary.json")
                   if json.loads(p.read_text())["method"] == "wide")
    assert summary["status"] == "ok" and summary["metrics"]["wide_gain"] > 0
    said, _ = bench(folder, "report", str(out), "--out", str(tmp_path / "report"))
    assert said == {"code": 0, "torch": False}
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Wide: its learned gain" in md and "The gain the fill learned." in md
    assert "| row | gain g (x) |" in md


def test_a_single_file_method_is_planned_by_importing_it(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "narrow.py").write_text(SINGLE_FILE)
    said, printed = bench(folder, "list")
    assert said == {"code": 0, "torch": True}  # its card comes from its imported class
    assert "Random visible subset; hidden positions are zeros." in printed
    said, _ = bench(folder, "run", "--methods", "narrow", "--dry-run")
    assert said["code"] == 0
