"""The fault catalogue, as a table: every bad input or fault a new user meets, the exit code, a
fragment of the one line it prints, and the check that nothing already written was lost (the
other runs' summaries, configs and checkpoints unchanged, byte for byte). The README's "When
things go wrong" table is generated from these rows (test_readme_table_matches_the_catalogue).

Faults that need more than one command: a full disk (a real tmpfs), a real SIGTERM, and the
file modes of what a run writes.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import api
from bench.cli import main
from bench.core import store
from bench.launch.jobs import RunJob
from bench.run.hooks import Hook, StepAt, StopAfterEpoch, watching
from tests.helpers import require

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = dict(dataset="digits", epochs=2, batch_size=64, train_limit=128, eval_train_limit=128,
                eval_test_limit=64, probe_steps=10, decoder_dim=64, decoder_depth=1,
                decoder_heads=2, device="cpu", protocols="knn", checkpoint_every_min=1e-9)
FLAGS = ("dataset", "epochs", "batch_size", "train_limit", "eval_train_limit", "eval_test_limit")
# The settings as a user types them: flags, so that a row's later flag replaces one of them.
ARGS = ["--no-progress",
        *(a for k in FLAGS for a in (f"--{k.replace('_', '-')}", str(SETTINGS[k]))),
        *(f"{k}={v}" for k, v in SETTINGS.items() if k not in FLAGS)]
KEPT = ("summary.json", "config.json", "checkpoint.pt", "checkpoint.prev.pt")


def mae_run():
    (cfg,) = api.plan(["mae"], **SETTINGS)
    return cfg


def finished_mae_run():
    """The finished mae run of `existing` (seed 1, one epoch)."""
    (cfg,) = api.plan(["mae"], seeds=[1], **{**SETTINGS, "epochs": 1})
    return cfg


CHANGES = {"mae": mae_run, "finished mae": finished_mae_run}  # Fault.changes: which run


@pytest.fixture(scope="module")
def existing(tmp_path_factory) -> Path:
    """A results folder as a user has it: finished runs (mae seed 1 for one epoch, raw-input)
    and a mae run (seed 0) stopped after epoch 1, its newest and previous checkpoints on
    disk; and, beside it, that mae run uninterrupted (the numbers a resumed run must end
    with)."""
    base = tmp_path_factory.mktemp("existing")
    out = base / "out"
    assert main(["run", "--methods", "mae,raw-input", "--seeds", "1", "--out", str(out), *ARGS,
                 "--epochs", "1"]) == 0
    cfg = mae_run()
    RunJob(cfg, out / cfg.run_id, hooks=[StopAfterEpoch(1)]).run()
    assert (out / cfg.run_id / "checkpoint.prev.pt").exists()
    RunJob(cfg, base / "full" / cfg.run_id).run()
    return base


@dataclass(frozen=True)
class Fault:
    """One row: what the user does or meets, what happens. `argv` may name OUT (the results
    folder, a copy of `existing`), FINISHED (its finished mae run) and TMP (a scratch folder); `setup` prepares the fault and
    `hooks` watch the training loop of the command's runs; `changes` is the one run folder the
    command may rewrite (the run it resumes)."""

    see: str  # what the user sees / did (the README's first column)
    do: str  # what to do about it (the README's second column)
    argv: tuple[str, ...]
    code: int
    message: str
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    changes: str | None = None
    check: Callable[[Path, Path], None] | None = None  # (OUT, existing) after the command
    hooks: tuple[Hook, ...] = ()


def run_cmd(*extra: str, methods: str = "mae") -> tuple[str, ...]:
    return ("run", "--methods", methods, "--out", "OUT", *ARGS, *extra)


def folder(name: str):
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / name).mkdir()

    return setup


def write(name: str, text: str):
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / name).write_text(text)

    return setup


def corrupt_checkpoint(how: str):
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp / "out" / mae_run().run_id / "checkpoint.pt"
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "garbage": b"\x00not a checkpoint" * 64,
                          "truncated": data[: len(data) // 2]}[how])

    return setup


def cuda_checkpoint(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        path = tmp / "out" / mae_run().run_id / name
        store.save_torch(path, {**store.load_torch(path), "device_type": "cuda"})


class FailingStep(Hook):
    def on_step_start(self, at: StepAt) -> None:
        raise RuntimeError("boom in the training step")


def image_folder(bad: str | None):
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from PIL import Image

        monkeypatch.setenv("MASKBENCH_CACHE", str(tmp / "cache"))
        for split in ("train", "val"):
            for c in ("a", "b"):
                (tmp / "images" / split / c).mkdir(parents=True)
                for i in range(3):
                    Image.new("RGB", (20, 20), (80 * i, 200 if c == "a" else 0, 0)).save(
                        tmp / "images" / split / c / f"{i}.png")
        if bad == "corrupt":
            (tmp / "images" / "train" / "a" / "0.png").write_bytes(b"\x89PNG broken")
        elif bad == "empty class":
            (tmp / "images" / "train" / "c").mkdir()
        elif bad == "link loop":
            (tmp / "images" / "train" / "a" / "loop").symlink_to("..")

    return setup


def env(name: str, value: str, *first):
    """Set $name to `value` (TMP in it names the scratch folder), after the setups `first`."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        for before in first:
            before(tmp, monkeypatch)
        monkeypatch.setenv(name, value.replace("TMP", str(tmp)))

    return setup


def garbage_idx(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TMP/garbage: the four Fashion-MNIST file names, gzipped garbage inside."""
    (tmp / "garbage").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp / "garbage" / f"{name}.gz").write_bytes(b"\x8a not gzip" * 100)
    monkeypatch.setenv("MASKBENCH_DATA", str(tmp / "garbage"))


def trained_on_the_folder_alone(out: Path, existing: Path) -> None:
    """The run's data is the image folder without what the link leads to."""
    from bench.data.streaming import load_imagefolder

    images = out.parent / "images"
    (config,) = [store.read_json(p) for p in out.glob("*/config.json")
                 if store.read_json(p)["dataset"].startswith("imagefolder:")]
    (images / "train" / "a" / "loop").unlink()
    clean = load_imagefolder(str(images))
    assert config["data_fingerprint"] == clean.fingerprint and clean.n_pretrain() == 6


def resumed_to_full_numbers(out: Path, existing: Path) -> None:
    cfg = mae_run()
    mine = store.read_json(out / cfg.run_id / "summary.json")
    full = store.read_json(existing / "full" / cfg.run_id / "summary.json")
    assert mine["status"] == "ok" and mine["metrics"] == full["metrics"]


def file_at_run_folder(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TMP/fresh/<run id of mae seed 0>: a file where that run's folder goes."""
    (tmp / "fresh").mkdir()
    (tmp / "fresh" / mae_run().run_id).write_text("not a run folder")


def one_line_text_file(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TMP/oneline/a.txt: a text file of one long line (no blank line: one paragraph)."""
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp / "cache"))
    (tmp / "oneline").mkdir()
    (tmp / "oneline" / "a.txt").write_text("word " * 20000 + "\n")


def finished_config(how: str):
    """The finished mae run's config.json truncated (a crash, a full disk) or edited by hand
    (its mask ratio: the run id no longer matches)."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp / "out" / finished_mae_run().run_id / "config.json"
        if how == "truncated":
            path.write_bytes(path.read_bytes()[:100])
        else:
            config = store.read_json(path)
            config["options"]["mask_ratio"] = 0.9
            store.write_json(path, config)

    return setup


def config_repaired(out: Path, existing: Path) -> None:
    from bench.core.runfolder import check_config

    run_dir = out / finished_mae_run().run_id
    assert check_config(run_dir).state == "ok"
    assert "repaired" in store.read_json(run_dir / "config.json")
    assert (run_dir / "config.broken-1.json").read_bytes() == (
        existing / "out" / run_dir.name / "config.json").read_bytes()[:100]
    assert (store.read_json(run_dir / "summary.json")
            == store.read_json(existing / "out" / run_dir.name / "summary.json"))


def rows_without_the_edited_run(out: Path, existing: Path) -> None:
    report = (out / "report" / "report.md").read_text()
    assert "| mae |" not in report and "| raw-input |" in report  # the mae rows' only run


def reference_rows_only(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TMP/refs: a results folder holding only the finished raw-input run."""
    (run,) = [d.parent for d in (tmp / "out").glob("*/config.json")
              if store.read_json(d).get("method") == "raw-input"]
    shutil.copytree(run, tmp / "refs" / run.name)


def killed_report(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OUT/report/.report-*: what a report killed while writing leaves (its lock free, an hour
    old)."""
    stage = tmp / "out" / "report" / ".report-killed"
    stage.mkdir(parents=True)
    (stage / "report.md").write_text("# half")
    (stage / ".lock").touch()
    hour_ago = time.time() - 3600
    for path in (stage / ".lock", stage):
        os.utime(path, (hour_ago, hour_ago))


def no_staging_left(out: Path, existing: Path) -> None:
    assert not list((out / "report").glob(".report-*"))


def nothing_in_the_run_folder(out: Path, existing: Path) -> None:
    run = out / finished_mae_run().run_id
    assert not [f for f in run.iterdir() if f.name.startswith(("report", ".report", "stats"))]


SWEEP_BAD_TOML = write("bad.toml", "epochs = = 2\n")
SWEEP_UNKNOWN_KEY = write("unknown.toml", 'dataset = "digits"\nepochz = 2\n')
SWEEP_UNUSED_OPTION = write("unused.toml", '[grid]\nmethod = ["mae"]\n"interp.mask_ratio" = [0.5, 0.6]\n')

ROWS = [
    Fault("`--batch-size 0` (or negative)", "give a positive batch size",
          run_cmd("--batch-size", "0"), 2, "batch_size must be >= 1"),
    Fault("`--batch-size -5`", "give a positive batch size",
          run_cmd("--batch-size", "-5"), 2, "batch_size must be >= 1"),
    Fault("a batch larger than the data", "lower `--batch-size` (or raise `--train-limit`)",
          run_cmd("--batch-size", "512"), 2, "batch_size 512 exceeds the 128 pretraining samples"),
    Fault("`--epochs -1` or `--epochs 0`", "give at least one epoch",
          run_cmd("--epochs", "-1"), 2, "epochs must be >= 1"),
    Fault("`--epochs 0`", "give at least one epoch", run_cmd("--epochs", "0"), 2,
          "epochs must be >= 1"),
    Fault("`--train-limit 0`", "a positive limit, or none for all the data",
          run_cmd("--train-limit", "0"), 2, "train_limit must be >= 1"),
    Fault("`--eval-test-limit -3`", "a positive limit, or none for all the data",
          run_cmd("--eval-test-limit", "-3"), 2, "eval_test_limit must be >= 1"),
    Fault('`--seeds ""`', "name the seeds, e.g. `--seeds 0,1,2`", run_cmd("--seeds", ""), 2,
          "no seed given"),
    Fault("`--seeds 0,,1`", "remove the empty item", run_cmd("--seeds", "0,,1"), 2,
          "empty seed in '0,,1'"),
    Fault("`--seeds a`", "seeds are integers", run_cmd("--seeds", "a"), 2,
          "seeds must be integers"),
    Fault('`--methods ""`', "name methods, e.g. `--methods qbheat,mae,interp`",
          ("run", "--methods", "", "--out", "OUT", *ARGS), 2, "no method given"),
    Fault("`--seeds 0,0`", "nothing: the duplicate is dropped, and said",
          run_cmd("--seeds", "0,0", "--dry-run"), 0, "note: duplicate seed 0 dropped"),
    Fault("a misspelt method (`qbheta`)", "use a name `bench list` shows",
          run_cmd(methods="qbheta"), 2, "unknown method 'qbheta'; known: interp, mae, qbheat"),
    Fault("a misspelt encoder", "use a name `bench list` shows",
          run_cmd("--encoder", "vit-huge"), 2, "unknown encoder 'vit-huge'; known:"),
    Fault("a misspelt dataset", "use a name `bench list` shows",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "cifar-1"), 2,
          "unknown dataset 'cifar-1'; known:"),
    Fault("`mae.mask_ratio=1.5`", "a ratio in (0, 1)", run_cmd("mae.mask_ratio=1.5"), 2,
          "mask_ratio must be in (0, 1)"),
    Fault("a mask ratio that hides nothing on the grid", "raise the ratio",
          run_cmd("mae.mask_ratio=0.001"), 2, "hides nothing on a (8, 8) grid"),
    Fault("`mae.mask_ratio=0.01` in a dry run", "raise the ratio (a dry run checks what the run "
          "checks)", run_cmd("mae.mask_ratio=0.01", "--dry-run"), 2,
          "mae.mask_ratio: mask_ratio 0.01 hides nothing on a (8, 8) grid"),
    Fault("a seed beyond 64 bits", "seeds from 0 to 4294967295",
          run_cmd("--seeds", "99999999999999999999"), 2,
          "seed 99999999999999999999 is out of range: seeds are integers from 0 to 4294967295"),
    Fault("a seed beyond 64 bits in a dry run", "seeds from 0 to 4294967295",
          run_cmd("--seeds", "99999999999999999999", "--dry-run"), 2,
          "seed 99999999999999999999 is out of range"),
    Fault("a file named like a run id in `--out`", "move the file aside",
          ("run", "--methods", "mae", "--out", "TMP/fresh", *ARGS), 2,
          "is a file where the folder of run", setup=file_at_run_folder),
    Fault("a file named like a run id in `--out`, dry run", "move the file aside",
          ("run", "--methods", "mae", "--out", "TMP/fresh", "--dry-run", *ARGS), 2,
          "is a file where the folder of run", setup=file_at_run_folder),
    Fault("`--out` under a file, dry run", "choose a folder you can write",
          ("run", "--methods", "mae", "--out", "TMP/file/sub", "--dry-run", *ARGS), 2,
          "cannot write to", setup=write("file", "x")),
    Fault("a misspelt option (`mae.colour=red`)", "the message lists the valid ones",
          run_cmd("mae.colour=red"), 2, "unknown option mae.colour; valid:"),
    Fault("a misspelt run field (`epochz=3`)", "the message lists the valid ones",
          run_cmd("epochz=3"), 2, "unknown option epochz; valid:"),
    Fault("a word that is not KEY=VALUE", "write `key=value`", run_cmd("notakeyvalue"), 2,
          "expected KEY=VALUE"),
    Fault("an option of a method no run uses", "add the method or drop the option",
          run_cmd("interp.mask_ratio=0.5"), 2, "interp.mask_ratio sets an option of interp, "
          "which none of these runs uses"),
    Fault("`device=cuda` on a machine without CUDA", "use `device=cpu` or `auto`",
          run_cmd("device=cuda"), 2, "device=cuda: this machine has no CUDA device"),
    Fault("an unknown device (`device=gpu`)", "auto, cpu, cuda or cuda:N",
          run_cmd("device=gpu"), 2, "device='gpu': expected auto, cpu, cuda or cuda:N"),
    Fault("`decoder_heads` that do not divide `decoder_dim`", "pick a divisor",
          run_cmd("decoder_heads=3"), 2, "decoder_heads=3 must divide decoder_dim=64"),
    Fault("an evaluation protocol that does not exist",
          "linear, knn, tran1, finetune, dense, fewshot",
          run_cmd("protocols=linear,tran2"), 2, "unknown evaluation protocol 'tran2'"),
    Fault("`protocols=dense` on data without per-pixel labels",
          "use a dataset with them (fashion-mosaic) or drop dense",
          run_cmd("protocols=dense"), 2, "protocols=dense needs per-pixel labels and digits has none"),
    Fault("a few-shot k above the smallest class of the probe's training split",
          "lower fewshot_k or raise eval_train_limit",
          run_cmd("protocols=fewshot", "fewshot_k=60"), 2,
          "fewshot_k=60: the probe's training split has only"),
    Fault("`probe_layers=all` on a CNN encoder", "use a vit-* encoder, or probe_layers=last",
          run_cmd("--encoder", "cnn-resnet-micro", "probe_layers=all", methods="qbheat"), 2,
          "probe_layers=all probes every block of a ViT"),
    Fault("`--data-root` that lacks the files", "fix the path: it is never replaced by another",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "fashion-mnist",
           "--data-root", "TMP/typo"), 2, "check --data-root"),
    Fault("`--data-root` for a dataset that has no files", "drop it",
          run_cmd("--data-root", "TMP"), 2, "digits is bundled with scikit-learn"),
    Fault("`--out` under a file", "choose a folder you can write",
          ("run", "--methods", "mae", "--out", "TMP/file/sub", *ARGS), 2, "cannot write to",
          setup=write("file", "x")),
    Fault("an image folder with an empty class folder", "add images or remove the folder",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "imagefolder:TMP/images",
           "--no-progress", "epochs=1", "batch_size=4"), 2, "holds no image",
          setup=image_folder("empty class")),
    Fault("an image folder with a link loop (`train/a/loop -> ..`)", "nothing: links to "
          "folders inside class folders are not followed, and said",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "imagefolder:TMP/images",
           "--no-progress", "epochs=1", "batch_size=4", "protocols=knn"), 0,
          "1 link(s) to folders inside class folders not followed (first: train/a/loop -> ..)",
          setup=image_folder("link loop"), check=trained_on_the_folder_alone),
    Fault("an image folder with a corrupt file, `strict_data=true`",
          "replace the file, or drop strict_data to skip it",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "imagefolder:TMP/images",
           "--no-progress", "epochs=1", "batch_size=4", "strict_data=true"), 2,
          "train/a/0.png", setup=image_folder("corrupt")),
    Fault("a huge one-line text file (`text-dir:`)", "split it into paragraphs (blank lines): "
          "one paragraph is one text, and a split needs several",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "text-dir:TMP/oneline",
           "--no-progress", "epochs=1"), 2,
          "its only text went to the train split, so the test split is empty",
          setup=one_line_text_file),
    Fault("`MASKBENCH_DATA` pointing at garbage `.gz` files", "replace the files (or unset the "
          "variable)", ("run", "--methods", "mae", "--out", "OUT", "--dataset", "fashion-mnist",
                        "--no-progress"), 2,
          "train-images-idx3-ubyte.gz: cannot be read (BadGzipFile", setup=garbage_idx),
    Fault("`MASKBENCH_CACHE` naming a file", "point it at a folder",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "imagefolder:TMP/images",
           "--no-progress", "epochs=1", "batch_size=4"), 2,
          "cannot be the cache folder", setup=env("MASKBENCH_CACHE", "TMP/file", write("file", "x"),
                                                  image_folder(None))),
    Fault("`MASKBENCH_DATA_WORKERS=abc`", "a number of worker processes, 0 or more",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "imagefolder:TMP/images",
           "--no-progress", "epochs=1", "batch_size=4"), 2,
          "MASKBENCH_DATA_WORKERS='abc': expected a number of DataLoader worker processes",
          setup=env("MASKBENCH_DATA_WORKERS", "abc", image_folder(None))),
    Fault("`MASKBENCH_DATA_WORKERS=-3`", "a number of worker processes, 0 or more",
          ("run", "--methods", "mae", "--out", "OUT", "--dataset", "imagefolder:TMP/images",
           "--no-progress", "epochs=1", "batch_size=4"), 2,
          "MASKBENCH_DATA_WORKERS='-3': expected a number of DataLoader worker processes",
          setup=env("MASKBENCH_DATA_WORKERS", "-3", image_folder(None))),
    Fault("a checkpoint written on another device type", "resume it there, or move the "
          "folder aside", run_cmd(), 2, "was written on cuda and this run is on cpu",
          setup=cuda_checkpoint),
    Fault("an empty `checkpoint.pt`", "nothing: moved aside, the previous one resumes",
          run_cmd(), 0, "moved to checkpoint.corrupt-1.pt", setup=corrupt_checkpoint("empty"),
          changes="mae", check=resumed_to_full_numbers),
    Fault("a garbage `checkpoint.pt`", "nothing: moved aside, the previous one resumes",
          run_cmd(), 0, "moved to checkpoint.corrupt-1.pt", setup=corrupt_checkpoint("garbage"),
          changes="mae", check=resumed_to_full_numbers),
    Fault("a truncated `checkpoint.pt`", "nothing: moved aside, the previous one resumes",
          run_cmd(), 0, "moved to checkpoint.corrupt-1.pt", changes="mae",
          setup=corrupt_checkpoint("truncated"), check=resumed_to_full_numbers),
    Fault("a run fails while training", "read its error: `bench status OUT`",
          run_cmd(), 1, "1 of 1 runs failed; their errors: python -m bench status",
          hooks=(FailingStep(),), changes="mae"),
    Fault("a sweep file that does not exist", "check the path",
          ("sweep", "TMP/none.toml"), 2, "cannot read sweep spec"),
    Fault("a sweep file that is not TOML", "the message names the line",
          ("sweep", "TMP/bad.toml"), 2, "not valid TOML", setup=SWEEP_BAD_TOML),
    Fault("a misspelt key in a sweep file", "the message lists the valid keys",
          ("sweep", "TMP/unknown.toml"), 2, "unknown key epochz", setup=SWEEP_UNKNOWN_KEY),
    Fault("a grid over an option of a method the sweep does not run",
          "add the method to the grid or drop the option", ("sweep", "TMP/unused.toml"), 2,
          "grid.interp.mask_ratio sets an option of interp", setup=SWEEP_UNUSED_OPTION),
    Fault("`bench sweep` without a file", "give the sweep file", ("sweep",), 2,
          "the following arguments are required: spec"),
    Fault("a finished run's `config.json` truncated: `bench status`", "rerun the command that "
          "made it", ("status", "OUT"), 0, "broken", setup=finished_config("truncated")),
    Fault("a finished run's `config.json` truncated: the rerun", "nothing: it is rewritten "
          "(the old file kept as config.broken-1.json); nothing is trained",
          ("run", "--methods", "mae,raw-input", "--seeds", "1", "--out", "OUT", *ARGS,
           "--epochs", "1"), 0, "its config.json was unreadable or missing: rewritten",
          setup=finished_config("truncated"), changes="finished mae", check=config_repaired),
    Fault("a finished run's `config.json` edited by hand: `bench status`", "restore it, or "
          "move the folder aside", ("status", "OUT"), 0, "mismatched",
          setup=finished_config("edited")),
    Fault("a finished run's `config.json` edited by hand: `bench report`", "restore it: the "
          "run is left out of every table", ("report", "OUT"), 0,
          "1 run folder(s) left out: their config.json does not hash to their run id",
          setup=finished_config("edited"), check=rows_without_the_edited_run),
    Fault("a run's `config.json` edited by hand: resuming it", "restore it, or move the "
          "folder aside", ("run", "--methods", "mae,raw-input", "--seeds", "1", "--out", "OUT",
                           *ARGS, "--epochs", "1"), 2,
          "(mae seed 1): config.json hashes to", setup=finished_config("edited")),
    Fault("a run's `config.json` edited by hand: a dry run", "restore it, or move the folder "
          "aside", ("run", "--methods", "mae", "--seeds", "1", "--out", "OUT", "--dry-run",
                    *ARGS, "--epochs", "1"), 2,
          "(mae seed 1): config.json hashes to", setup=finished_config("edited")),
    Fault("`bench export RUN --out RUN/config.json`", "choose another --out (default: "
          "RUN/encoder-timm.safetensors)", ("export", "FINISHED", "--out", "FINISHED/config.json",
                                            "--force"), 2,
          "bench export never overwrites a run's files"),
    Fault("`bench export RUN --out` an existing folder", "name the file to write",
          ("export", "FINISHED", "--out", "TMP"), 2, "is a folder; name the file to write"),
    Fault("`bench export RUN --out` an existing file", "add `--force`, or choose another --out",
          ("export", "FINISHED", "--out", "TMP/file"), 2, "exists; add --force to overwrite it",
          setup=write("file", "x")),
    Fault("`bench status` on a folder with no runs", "point it at a results folder",
          ("status", "TMP/empty"), 2, "no runs under", setup=folder("empty")),
    Fault("`bench status` on a missing folder", "check the path", ("status", "TMP/none"), 2,
          "no such results folder"),
    Fault("`bench report` on a folder with no runs", "point it at a results folder",
          ("report", "TMP/empty"), 2, "no run folders", setup=folder("empty")),
    Fault("`bench report` on a missing folder", "check the path", ("report", "TMP/none"), 2,
          "no such results folder"),
    Fault("`bench report` on a folder of reference-row runs only", "nothing: a report without "
          "comparisons (it used to be a pandas TypeError)", ("report", "TMP/refs"), 0,
          "report: ", setup=reference_rows_only),
    Fault("a report killed while writing left `report/.report-*`", "nothing: the next report "
          "removes it", ("report", "OUT"), 0, "report: ", setup=killed_report,
          check=no_staging_left),
    Fault("`bench report --baseline maee` (no such row)", "name a row of the report",
          ("report", "OUT", "--baseline", "maee"), 2,
          "baseline 'maee' is not a row of this report; its rows: mae, raw-input"),
    Fault("`bench report OUT --out RUN` (a run folder)", "choose another --out (the results "
          "folder's report/ by default)", ("report", "OUT", "--out", "FINISHED"), 2,
          "a report never writes into a run folder", check=nothing_in_the_run_folder),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.name in KEPT and p.is_file()}


@pytest.mark.parametrize("fault", ROWS, ids=[f.see for f in ROWS])
def test_fault_catalogue(fault, existing, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "out"
    shutil.copytree(existing / "out", out)
    if fault.setup is not None:
        fault.setup(tmp_path, monkeypatch)
    before = _snapshot(out)
    finished = str(out / finished_mae_run().run_id)
    argv = [a.replace("FINISHED", finished).replace("OUT", str(out)).replace("TMP", str(tmp_path))
            for a in fault.argv]
    with watching(*fault.hooks):
        code = main(argv)
    printed = capsys.readouterr()
    err = printed.err
    said = printed.out + err + caplog.text
    assert code == fault.code, said[-2000:]
    assert fault.message in said, said[-2000:]
    if code == 2:
        lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
        assert len(lines) == 1, err
    changing = CHANGES[fault.changes]().run_id if fault.changes else None
    after = _snapshot(out)
    for name, data in before.items():
        if changing is None or not name.startswith(changing):
            assert after.get(name) == data, f"{name} changed or lost"
    if fault.check is not None:
        fault.check(out, existing)


def readme_table() -> str:
    lines = ["| what you see | what to do |", "|---|---|"]
    for f in ROWS:
        lines.append(f"| {f.see}: `{f.message}` (exit {f.code}) | {f.do} |")
    return "\n".join(lines)


def test_readme_table_matches_the_catalogue():
    """The README's table is these rows (regenerate: MASKBENCH_UPDATE_GOLDEN=1)."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- faults:start -->\n", "<!-- faults:end -->"
    head, rest = text.split(start)
    table, tail = rest.split(end)
    if os.environ.get("MASKBENCH_UPDATE_GOLDEN") == "1":
        readme.write_text(head + start + readme_table() + "\n" + end + tail)
        return
    assert table.strip() == readme_table()


def test_a_full_disk_is_one_line_and_the_run_resumes_once_freed(tmp_path, capsys):
    """A real 20 MiB tmpfs: the first checkpoint fits, keeping two does not. The run stops
    with one line naming the file, the space it needs and what is free; the previous
    checkpoint is intact; after the disk grows, the same command resumes and finishes with
    the numbers of an uninterrupted run."""
    require(os.geteuid() == 0 and shutil.which("mount") is not None,
            "mounting a tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], check=True)
    try:
        out = disk / "out"
        argv = ["run", "--methods", "mae", "--out", str(out), *ARGS, "checkpoint_every_min=0",
                "epochs=3"]
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
        assert code == 1 and len(lines) == 1, err
        assert "checkpoint.pt: the disk is full" in lines[0] and "MiB are free" in lines[0]
        (cfg,) = api.plan(["mae"], **{**SETTINGS, "checkpoint_every_min": 0, "epochs": 3})
        run_dir = out / cfg.run_id
        assert not (run_dir / "summary.json").exists()
        assert store.load_torch(run_dir / "checkpoint.pt")["state"]["epoch"] >= 1  # intact
        subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
        assert main(argv) == 0
        full = tmp_path / "full"
        assert main([*argv[:4], str(full), *argv[5:]]) == 0
        assert (store.read_json(run_dir / "summary.json")["metrics"]
                == store.read_json(full / cfg.run_id / "summary.json")["metrics"])
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_next_step_and_exits_143(tmp_path):
    """A real SIGTERM (what scancel sends first) to `python -m bench run` inside an epoch: one
    line, exit 143, a checkpoint at the step it was at; the rerun resumes there and ends with
    the numbers of an uninterrupted run."""
    from bench.launch.jobs import checkpoint_position

    argv = ["run", "--methods", "mae", "--out", str(tmp_path / "cut"), *ARGS,
            "checkpoint_every_min=0", "epochs=3", "batch_size=16"]  # 8 steps an epoch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (cfg,) = api.plan(["mae"], **{**SETTINGS, "checkpoint_every_min": 0, "epochs": 3,
                                  "batch_size": 16})
    run_dir = tmp_path / "cut" / cfg.run_id
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)  # epoch 1 is done: the signal comes inside epoch 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "rerun the same command to resume" in err
    assert not (run_dir / "summary.json").exists()
    epoch, step = checkpoint_position(run_dir)
    assert (epoch, step) > (1, 0)  # written at the signal, not at the last epoch's end
    rerun = subprocess.run([sys.executable, "-m", "bench", *argv], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    full = subprocess.run([sys.executable, "-m", "bench", *argv[:3], "--out",
                           str(tmp_path / "full"), *argv[5:]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0
    assert (store.read_json(run_dir / "summary.json")["metrics"]
            == store.read_json(tmp_path / "full" / cfg.run_id / "summary.json")["metrics"])


def children(pid: int, since: float) -> list[int]:
    """The live child processes of `pid` started after time `since` (a time.time(); /proc
    gives start times in clock ticks since boot)."""
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = proc_stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        started = boot + int(fields[19]) / tick
        if int(fields[1]) == pid and fields[0] not in "ZX" and started >= since:
            found.append(int(proc_stat.parent.name))
    return found


def test_sigterm_to_the_process_group_with_streamed_images_resumes(tmp_path):
    """`timeout`, `docker stop`, scancel and a terminal signal the whole process group, so
    the DataLoader workers that decode streamed images get SIGTERM too. They used to die
    first: the run was recorded as failed ("DataLoader worker ... is killed by signal"), and
    the rerun the message advised skipped it. Now the workers ignore it and the run stops at
    its next step with a checkpoint; the rerun resumes there and ends with the numbers of an
    uninterrupted run."""
    from bench.data.samples import write_image_folder
    from bench.launch.jobs import checkpoint_position
    from bench.launch.status import run_states

    images = write_image_folder(tmp_path / "images", counts=(("train", 8), ("val", 2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASKBENCH_DATA_WORKERS": "2",
           "MASKBENCH_CACHE": str(tmp_path / "cache")}
    settings = ["--dataset", f"imagefolder:{images}", "--no-progress", "epochs=3",
                "batch_size=2", "checkpoint_every_min=0", "protocols=knn", "decoder_dim=64",
                "decoder_depth=1", "decoder_heads=2", "device=cpu", "eval_train_limit=12"]

    def bench(out: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bench", "run", "--methods", "mae",
                                 "--out", str(tmp_path / out), *settings], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    # 12 steps an epoch: more than the 2 workers prefetch (8 batches), so a dead worker shows
    proc = bench("cut", start_new_session=True)  # its own process group, workers included
    deadline = time.time() + 300
    while not (done := list((tmp_path / "cut").glob("*/checkpoint.pt"))) and time.time() < deadline:
        time.sleep(0.02)  # epoch 1 is done
    since = done[0].stat().st_mtime if done else 0.0
    while len(children(proc.pid, since)) < 2 and time.time() < deadline:
        time.sleep(0.02)  # epoch 2's workers (started after its checkpoint) decode
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "failed" not in err, err[-2000:]
    (state,) = run_states(tmp_path / "cut")
    assert state.state == "interrupted", (state, err[-2000:])
    run_dir = tmp_path / "cut" / state.run_id
    position = checkpoint_position(run_dir)
    assert position > (1, 0)  # written at the signal, inside epoch 2
    rerun, full = bench("cut"), bench("full")
    for p in (rerun, full):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    starts = [(a["start_epoch"], a["start_step"]) for a in store.read_jsonl(run_dir / "attempts.jsonl")]
    assert starts == [(0, 0), position]
    assert (store.read_json(run_dir / "summary.json")["metrics"]
            == store.read_json(tmp_path / "full" / state.run_id / "summary.json")["metrics"])


def test_files_keep_the_umask_mode(existing):
    """Atomic writes (temporary file + rename) used to leave mkstemp's 0600: colleagues on a
    shared cluster could not read config.json, summary.json or checkpoints."""
    files = [p for p in (existing / "out").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "summary.json", "checkpoint.pt",
                                       "job.json", "metrics.jsonl", "report.md"}
    mode = store.file_mode()
    assert mode == 0o644  # the suite's umask is the usual 022
    for p in files:
        if ".submitit" not in p.parts and p.name != "lock":
            assert stat.S_IMODE(p.stat().st_mode) == mode, p
