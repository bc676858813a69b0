"""The layer order holds (ARCHITECTURE.md): every import in bench/ and methods/, at the top of
a module or inside a function, goes to a module of the same layer or one below; and the
commands that only read names and files (`bench list`, `status`, `report`) import neither
torch nor timm. A new module must be given a layer here, so the table cannot rot."""

from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core import files, store

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom; a module may import its own layer and the layers below it. Patterns are
# fnmatch patterns on dotted module names; the first layer that matches a module is its own.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("old import paths", ("bench.config", "bench.errors", "bench.options", "bench.masking",
                          "bench.jobs")),
    ("entry points", ("bench.__main__", "bench.cli", "bench.cli.*", "bench.api", "bench.export",
                      "bench.checks", "bench.checks.*")),
    ("planning", ("bench.plan", "bench.plan.*")),
    ("launching", ("bench.launch", "bench.launch.*")),
    ("one run", ("bench.run", "bench.run.*")),
    ("evaluation", ("bench.eval", "bench.eval.*")),
    ("reporting", ("bench.report", "bench.report.*")),
    ("models", ("bench.models", "bench.models.*")),
    ("methods", ("methods", "methods.*")),
    ("data", ("bench.data", "bench.data.*")),
    ("tensor ops", ("bench.ops", "bench.ops.*")),
    ("runtime", ("bench.runtime", "bench.runtime.*")),
    ("plain data, no torch", ("bench.core", "bench.core.*", "bench")),
]
# What `bench list`, `status`, `report` and a dry run read: these load without torch (whole
# packages by pattern, then single modules of packages that also hold torch code).
TORCH_FREE = ("bench.core.*", "bench.plan.*", "bench.report.*", "bench.cli", "bench.cli.*",
              "bench.api",
              "bench.launch.launchers", "bench.launch.status", "bench.launch.slurm",
              "bench.launch.lock", "bench.data", "bench.models.presets", "bench.run.hooks",
              "methods", "methods.mae", "methods.qbheat", "methods.interp")


def modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("methods/*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer_of(name: str) -> int:
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return rank
    raise AssertionError(f"{name} has no layer: add it to LAYERS (and to ARCHITECTURE.md)")


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules `name` imports anywhere in its file (`from pkg import sub` counts as
    importing `pkg.sub` alone when `sub` is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            out.update(subs if len(subs) == len(node.names) else [base, *subs])
    return {m for m in out if m in known and m != name}


def test_every_import_goes_down_the_layers():
    known = modules()
    upward = []
    for name, path in sorted(known.items()):
        for target in sorted(imported(name, path, known)):
            if layer_of(target) < layer_of(name):
                upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check itself: an import from a lower layer to a higher one is reported."""
    bad = tmp_path / "store.py"
    bad.write_text("def f():\n    from bench.run.train import train_run\n")
    known = {**modules(), "bench.core.store": bad}
    assert imported("bench.core.store", bad, known) == {"bench.run.train"}
    assert layer_of("bench.run.train") < layer_of("bench.core.store")
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("bench.brand_new_module")


def torch_free_modules() -> list[str]:
    return sorted(m for m in modules() if any(fnmatch.fnmatchcase(m, p) for p in TORCH_FREE))


def _imports_after(code: str) -> dict:
    """Run `code` in a fresh interpreter; the top-level packages it ended up importing."""
    probe = (f"{code}\nimport json, sys\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_names_files_and_reports_need_no_torch(tmp_path):
    """The torch-free modules, and `bench list`, `bench status`, `bench report` (on a results
    folder with one finished run) and dry runs of `bench run` and `bench sweep` (every run
    checked: names, option values, compatibility), load neither torch nor timm."""
    run = tmp_path / "res" / "abc"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "run_id": "abc", "method": "mae", "options": {}, "dataset": "digits",
        "encoder": "vit-micro", "seed": 0, "epochs": 1}))
    (run / "summary.json").write_text(json.dumps({
        "run_id": "abc", "method": "mae", "options": {}, "dataset": "digits",
        "encoder": "vit-micro", "seed": 0, "status": "ok",
        "metrics": {"linear_top1": 0.5, "knn_top1": 0.4}}))
    import torch

    store.save_torch(run / files.RECONSTRUCTIONS, {  # the report draws it from numpy
        "images": torch.rand(2, 1, 8, 8), "visible": torch.rand(2, 16) > 0.5,
        "recon": torch.rand(2, 1, 8, 8), "patch_size": 2, "grid": (4, 4)})
    res = tmp_path / "res"
    loaded = _imports_after(
        "import " + ", ".join(torch_free_modules()) + "\n"
        "from bench.cli import main\n"
        f"assert main(['list']) == 0\n"
        f"assert main(['status', {str(res)!r}]) == 0\n"
        f"assert main(['report', {str(res)!r}, '--out', {str(tmp_path / 'rep')!r}]) == 0\n"
        f"assert main(['sweep', 'sweeps/qbheat-readings.toml', '--dry-run', '--out', {str(res)!r}]) == 0\n"
        f"assert main(['run', '--methods', 'qbheat,mae,interp', 'qbheat.param=lowrank:4', "
        f"'--dry-run', '--out', {str(res)!r}]) == 0\n"
        f"assert main(['run', '--methods', 'qbheat', 'qbheat.param=bogus', '--dry-run']) == 2\n")
    assert (tmp_path / "rep" / "report.html").exists()
    assert list((tmp_path / "rep").rglob("reconstructions.*"))
    assert not loaded & {"torch", "timm", "torchvision"}
    assert "torch" in _imports_after("import bench.run.train")  # the probe does see torch
