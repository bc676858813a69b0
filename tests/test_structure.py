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

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom; a module may import its own layer and the layers below it. Patterns are
# fnmatch patterns on dotted module names; the first layer that matches a module is its own.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("bench.__main__", "bench.cli", "bench.api", "bench.gpucheck")),
    ("launching", ("bench.launch", "bench.jobs", "bench.perf")),
    ("planning", ("bench.sweep",)),
    ("one run", ("bench.train", "bench.validate", "bench.probes", "bench.diagnostics",
                 "bench.evaluate", "bench.evaluate_sentences",
                 "bench.checkpoint", "bench.trackers", "bench.trackers.*")),
    ("reporting", ("bench.report", "bench.export", "bench.figures", "bench.html", "bench.cells",
                   "bench.metrics",
                   "bench.document", "bench.tables", "bench.verdict", "bench.aggregate",
                   "bench.provenance", "bench.stats")),
    ("models", ("bench.models.build", "bench.models.sizes", "bench.models.encoders",
                "bench.models.sentences", "bench.models.pretrainer", "bench.models.vit",
                "bench.models.cnn", "bench.models.heads", "bench.models.layers",
                "bench.models.patches", "bench.models.posembed", "bench.models")),
    ("methods", ("methods", "methods.*")),
    ("data", ("bench.data", "bench.data.*")),
    ("run infrastructure", ("bench.status", "bench.lock", "bench.slurm", "bench.distributed",
                            "bench.devices", "bench.compiling", "bench.precision", "bench.optim",
                            "bench.flops", "bench.masking", "bench.stopping", "bench.progress")),
    ("plain data, no torch", ("bench.models.registry", "bench.catalog", "bench.config",
                              "bench.spec", "bench.files", "bench.store", "bench.registry",
                              "bench.errors", "bench")),
]
# What `bench list`, `status` and `report` read: these load without torch.
TORCH_FREE = ("bench.cli", "bench.status", "bench.report", "bench.data", "bench.catalog",
              "bench.models.registry", "bench.config", "bench.spec")


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
    bad.write_text("def f():\n    from bench.train import train_run\n")
    known = {**modules(), "bench.store": bad}
    assert imported("bench.store", bad, known) == {"bench.train"}
    assert layer_of("bench.train") < layer_of("bench.store")
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("bench.brand_new_module")


def _imports_after(code: str) -> dict:
    """Run `code` in a fresh interpreter; the top-level packages it ended up importing."""
    probe = (f"{code}\nimport json, sys\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_names_files_and_reports_need_no_torch(tmp_path):
    """The torch-free modules, and `bench list`, `bench status` and `bench report` run end to
    end (on a results folder with one finished run), load neither torch nor timm."""
    run = tmp_path / "res" / "abc"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "run_id": "abc", "method": "mae", "options": {}, "dataset": "digits",
        "encoder": "vit-micro", "seed": 0, "epochs": 1}))
    (run / "summary.json").write_text(json.dumps({
        "run_id": "abc", "method": "mae", "options": {}, "dataset": "digits",
        "encoder": "vit-micro", "seed": 0, "status": "ok",
        "metrics": {"linear_top1": 0.5, "knn_top1": 0.4}}))
    res = tmp_path / "res"
    loaded = _imports_after(
        "import " + ", ".join(TORCH_FREE) + "\n"
        "from bench.cli import main\n"
        f"assert main(['list']) == 0\n"
        f"assert main(['status', {str(res)!r}]) == 0\n"
        f"assert main(['report', {str(res)!r}, '--out', {str(tmp_path / 'rep')!r}]) == 0\n")
    assert (tmp_path / "rep" / "report.html").exists()
    assert not loaded & {"torch", "timm", "torchvision"}
    assert "torch" in _imports_after("import bench.train")  # the probe does see torch


def test_method_cards_read_from_source_equal_the_registry():
    """`bench list` reads the methods from their files without importing them: what it reads
    is what the imported registry holds."""
    import methods
    from bench.catalog import method_cards

    cards = method_cards()
    assert list(cards) == methods.METHODS.names()
    for name, card in cards.items():
        cls = methods.METHODS.get(name)
        assert card.summary == (cls.__doc__ or "").strip().splitlines()[0]
        assert (card.modalities, card.encoder_kinds) == (cls.modalities, cls.encoder_kinds)
