"""`bench export`: the exported file loads in timm by the printed command, and timm's model
gives the trained encoder's own features; unfinished, failed and reference runs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from bench.cli import main
from bench.core import files, store
from bench.core.exports import export_command
from bench.export import METADATA_KEY, _encoder
from bench.plan.sweep import resolve_run
from bench.report.analysis import analyse
from bench.report.build import _blocks
from bench.report.document import render_markdown
from bench.run.records import write_failure
from bench.run.train import train_run
from tests.helpers import tiny_config

TOLERANCE = 1e-6  # max |timm - ours| on float32 CPU features (the same kernels: 0.0 in practice)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits) -> dict[str, Path]:
    """One finished run per encoder kind, one epoch each."""
    out = tmp_path_factory.mktemp("export")
    made = {}
    for kind, method, encoder in (("vit", "mae", "vit-micro"), ("cnn", "qbheat", "cnn-resnet-micro")):
        cfg = resolve_run(tiny_config(method=method, encoder=encoder, epochs=1, probe_steps=5,
                                      eval_train_limit=64, eval_test_limit=32))
        train_run(cfg, out / cfg.run_id, progress=False, data=digits)
        made[kind] = out / cfg.run_id
    return made


def export(run_dir: Path, to: str, out: Path, capsys) -> str:
    assert main(["export", str(run_dir), "--to", to, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (")
    return printed.split("load it with:\n", 1)[1]


def batch() -> torch.Tensor:
    """A batch of normalised 32 x 32 grey images (what the encoders take)."""
    return torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def test_vit_loads_in_timm_and_gives_the_encoders_features(runs, tmp_path, capsys):
    file = tmp_path / "vit.safetensors"
    load = export(runs["vit"], "timm", file, capsys)
    assert "pretrained=True, pretrained_cfg_overlay=dict(file=" in load
    namespace: dict = {}
    exec(load.split("\nfeatures =")[0], namespace)  # the printed command, as a user runs it
    model = namespace["model"]
    assert type(model).__name__ == "VisionTransformer"
    assert model.cls_token is None and model.global_pool == "avg"
    encoder, _ = _encoder(runs["vit"], store.read_json(runs["vit"] / files.CONFIG))
    x = batch()
    with torch.no_grad():
        assert (model(x) - encoder.pooled(x)).abs().max() <= TOLERANCE
        assert (model.forward_features(x) - encoder.forward_tokens(x)).abs().max() <= TOLERANCE
    trained = store.load_torch(runs["vit"] / files.CHECKPOINT)["model"]["encoder.blocks.0.attn.qkv.weight"]
    assert torch.equal(model.blocks[0].attn.qkv.weight, trained)  # the trained weights, not init
    # timm's data config is the run's: input size and normalisation.
    import timm.data

    data_cfg = timm.data.resolve_data_config(model=model)
    spec = store.read_json(runs["vit"] / files.CONFIG)["data_spec"]
    assert data_cfg["input_size"] == (1, 32, 32) and data_cfg["mean"] == tuple(spec["mean"])
    with safe_open(file, "pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    assert meta["run_id"] == runs["vit"].name and meta["timm"]["model_name"] == "vit_tiny_patch16_224"


def test_cnn_exports_its_timm_trunk(runs, tmp_path, capsys):
    file = tmp_path / "cnn.safetensors"
    load = export(runs["cnn"], "timm", file, capsys)
    encoder, _ = _encoder(runs["cnn"], store.read_json(runs["cnn"] / files.CONFIG))
    x = batch()
    namespace: dict = {"x": x}
    with torch.no_grad():
        exec(load, namespace)  # the printed recipe, as a user runs it: timm, then the file
        fmap = namespace["fmap"]
        assert fmap.shape == (6, 32, 8, 8)  # stride 4 = the patch size: one vector per token
        (own,) = encoder.trunk.forward_intermediates(x, indices=[encoder.stage],
                                                     intermediates_only=True)
        assert (fmap - own).abs().max() <= TOLERANCE
        # The full encoder is the trunk + the run's Linear + LayerNorm (in --to safetensors).
        tokens = encoder.norm(encoder.proj(fmap.flatten(2).transpose(1, 2)))
        assert (tokens - encoder.forward_tokens(x)).abs().max() <= TOLERANCE


def test_safetensors_is_the_encoders_own_state_dict(runs, tmp_path, capsys):
    file = tmp_path / "own.safetensors"
    export(runs["cnn"], "safetensors", file, capsys)
    trained = {k.removeprefix("encoder."): v for k, v in
               store.load_torch(runs["cnn"] / files.CHECKPOINT)["model"].items()
               if k.startswith("encoder.")}
    saved = load_file(file)
    assert saved.keys() == trained.keys()
    assert all(torch.equal(saved[k], trained[k]) for k in saved)


def test_report_lists_each_finished_runs_export_command(runs):
    """The report's document (as report.md renders it; figures left out, they take long)."""
    dirs = [runs["vit"].parent]
    md = render_markdown(_blocks(analyse(dirs, "mae"), dirs, {}, []))
    assert "## Export the encoders" in md
    for run_dir in runs.values():
        assert f"| {export_command(run_dir, 'timm')} |" in md


def test_unfinished_failed_and_reference_runs_are_refused(runs, tmp_path, capsys):
    def refused(run_dir: Path, *extra: str) -> str:
        assert main(["export", str(run_dir), "--out", str(tmp_path / "x.safetensors"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and not (tmp_path / "x.safetensors").exists()
        return err

    assert "not a run folder" in refused(tmp_path)
    cfg = resolve_run(tiny_config())
    unfinished = tmp_path / "unfinished"
    store.write_json(unfinished / files.CONFIG, cfg.to_dict())
    assert "has not finished" in refused(unfinished)
    write_failure(cfg, unfinished, ValueError("loss is nan"))
    assert "failed: ValueError: loss is nan" in refused(unfinished)
    reference = tmp_path / "reference"
    store.write_json(reference / files.CONFIG, {**cfg.to_dict(), "method": "random-init"})
    store.write_json(reference / files.SUMMARY, {"status": "ok"})
    assert "reference row" in refused(reference)
    text = tmp_path / "text"
    config = store.read_json(runs["vit"] / files.CONFIG)
    store.write_json(text / files.CONFIG, {**config, "data_spec": {**config["data_spec"],
                                                                    "modality": "text"}})
    store.write_json(text / files.SUMMARY, {"status": "ok"})
    (text / files.CHECKPOINT).symlink_to(runs["vit"] / files.CHECKPOINT)
    assert "no timm counterpart" in refused(text, "--to", "timm")


def test_export_never_overwrites_a_run_and_asks_before_overwriting_elsewhere(runs, tmp_path,
                                                                            capsys):
    """`--out RUN/config.json` used to overwrite the run's config (exit 0: the run dropped out
    of every report) and `--out FOLDER` was a traceback. A run folder's files are never
    overwritten (not even with --force), nor is anything written into another run's folder;
    the default file, inside the run folder, is rewritten on a second export; an existing
    file elsewhere needs --force."""
    run_dir, other = runs["vit"], runs["cnn"]
    before = {f.name: f.read_bytes() for f in (*run_dir.iterdir(), *other.iterdir()) if f.is_file()}

    def refused(*argv: str) -> str:
        assert main(["export", str(run_dir), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    assert "never overwrites a run's files" in refused("--out", str(run_dir / "config.json"),
                                                       "--force")
    assert "is a folder; name the file to write" in refused("--out", str(tmp_path))
    assert "another run's" in refused("--out", str(other / "mine.safetensors"))
    for _ in range(2):  # the default: this run's own export file, rewritten
        assert main(["export", str(run_dir)]) == 0
        assert capsys.readouterr().out.startswith(f"wrote {run_dir / 'encoder-timm.safetensors'}")
    elsewhere = tmp_path / "taken.safetensors"
    elsewhere.write_text("someone's file")
    assert "add --force to overwrite it" in refused("--out", str(elsewhere))
    assert elsewhere.read_text() == "someone's file"
    assert main(["export", str(run_dir), "--out", str(elsewhere), "--force"]) == 0
    assert {f.name: f.read_bytes() for f in (*run_dir.iterdir(), *other.iterdir())
            if f.is_file() and f.name in before} == before


def test_export_commands_in_the_report_are_relative_and_quoted(tmp_path, monkeypatch):
    """The report lists commands a user pastes: relative to the current folder where the
    run is under it, shell-quoted (a results folder with a space), writing the default file."""
    from bench.core.exports import export_command

    run_dir = tmp_path / "my results" / "abc123"
    monkeypatch.chdir(tmp_path)
    assert export_command(run_dir, "timm") == "python -m bench export 'my results/abc123' --to timm"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not under it: the absolute path
    assert export_command(run_dir, "timm") == (f"python -m bench export "
                                               f"'{tmp_path}/my results/abc123' --to timm")
