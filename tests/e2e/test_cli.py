"""The CLI end to end on `digits`, and every bad-input case: one line, exit 2, nothing written."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.core import files, store
from tests.helpers import TINY, run_dirs


def test_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["run", "--methods", "mae,random-init,raw-input", "--seeds", "0,1", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed
    dirs = run_dirs(out)
    assert len(dirs) == 6
    for d in dirs:
        assert store.read_json(d / "summary.json")["status"] == "ok"
    report = (out / "report" / "report.md").read_text()
    assert "| mae |" in report and "(n=2)" in report and "random-init" in report and "raw-input" in report
    assert (out / "report" / "reconstructions.png").stat().st_size > 1000
    # Running the same command again trains nothing.
    mtimes = {d: (d / "summary.json").stat().st_mtime_ns for d in dirs}
    assert main(["run", "--methods", "mae,random-init,raw-input", "--seeds", "0,1", "--out", str(out), *TINY]) == 0
    assert "6 already done" in capsys.readouterr().out
    assert mtimes == {d: (d / "summary.json").stat().st_mtime_ns for d in dirs}


def test_every_row_says_its_options(tmp_path, capsys):
    """Options not at their defaults (mae 0.6, qbheat yx) are shown for every run in the dry
    run, in `bench status` and in the report's rows, even where all runs of a method share
    them (they used to show only where a method's runs differed); the run prints the main
    table after the report's path."""
    out = tmp_path / "opts"
    argv = ["run", "--methods", "mae,qbheat,raw-input", "--out", str(out), *TINY, "--epochs", "1",
            "mae.mask_ratio=0.6", "qbheat.order=yx"]
    assert main([*argv, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "method=mae mae.mask_ratio=0.6" in plan and "method=qbheat qbheat.order=yx" in plan
    assert "raw-input" in plan and not out.exists()
    assert main(argv) == 0
    printed = capsys.readouterr().out  # ends with the report and its main table, row by row
    assert "report: " in printed and "digits · vit-micro: main table" in printed
    assert printed.splitlines()[-3].startswith("| mae mask_ratio=0.6 | ")
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "method=mae mae.mask_ratio=0.6" in status and "method=qbheat qbheat.order=yx" in status
    rows = [line.split(" | ")[0] for line in (out / "report" / "report.md").read_text().splitlines()
            if line.startswith("| ")]
    assert {"| mae mask_ratio=0.6", "| qbheat order=yx", "| raw-input"} <= set(rows)


def test_no_progress_silences_every_bar(tmp_path, capsys):
    """`--no-progress` reaches the bars inside training, feature extraction and probes; without
    it they are drawn (to stderr)."""
    quiet = [a for a in TINY if a != "--no-progress"]
    for flag, out in (([], tmp_path / "a"), (["--no-progress"], tmp_path / "b")):
        assert main(["run", "--methods", "mae", "--out", str(out), *quiet,
                     *flag]) == 0
        err = capsys.readouterr().err
        if flag:
            assert err == ""
        else:
            assert "mae seed 0" in err and "features train" in err and "recon" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--methods", "qbheta"], "unknown method 'qbheta'; known: interp, mae, qbheat"),
        (["--encoder", "vit-huge"], "unknown encoder 'vit-huge'; known:"),
        (["--dataset", "cifar-1"], "unknown dataset 'cifar-1'; known:"),
        (["mae.mask_ratio=1.5"], "mask_ratio must be in (0, 1)"),
        (["mae.mask_ratio=abc"], "mae.mask_ratio='abc': expected float"),
        (["mae.colour=red"], "unknown option mae.colour; valid: mae.block_position, mae.mask_ratio"),
        (["epochz=3"], "unknown option epochz; valid:"),
        (["notakeyvalue"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["run", "--dataset", "digits", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_incompatible_encoder_names_the_ones_that_work(tmp_path, capsys, extra):
    """A random subset on a CNN without masked convolution: one line naming the encoders that
    would do (token and masked-convolution ones) and the block alternative; nothing written."""
    out = tmp_path / "o"
    code = main(["run", "--methods", "mae", "--encoder", "cnn-mobilenetv3", "--dataset", "digits",
                 "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not out.exists()
    assert "needs a masked-convolution or token encoder" in err
    assert "vit-micro" in err and "cnn-resnet-micro" in err and "mae.visible=block" in err


def test_missing_data_names_three_ways(tmp_path, capsys, monkeypatch):
    import bench.data.images as images

    card = dict(images.load_card("fashion-mnist"), default_location=str(tmp_path / "nope"))
    monkeypatch.setattr(images, "load_card", lambda name: card)
    monkeypatch.delenv("MASKBENCH_DATA", raising=False)
    out = tmp_path / "out"
    assert main(["run", "--dataset", "fashion-mnist", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--data-root" in err and "$MASKBENCH_DATA" in err and "apt-get install dataset-fashion-mnist" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    assert main(["run", "--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()  # an explicit folder: only it, and what it lacks
    assert str(tmp_path) in err and "train-images-idx3-ubyte" in err and "check --data-root" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--out", str(blocker / "sub"), *TINY]) == 2
    assert "cannot write to" in capsys.readouterr().err


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    cat = json.loads(capsys.readouterr().out)
    assert {"mae", "qbheat", "interp"} <= set(cat["methods"])
    assert {"random-init", "raw-input"} == set(cat["references"])
    assert "vit-micro" in cat["encoders"] and "fashion-mnist" in cat["datasets"]


@pytest.mark.slow
def test_killed_mid_epoch_resumes_to_same_numbers(tmp_path):
    """SIGKILL (no `finally` runs) a real `python -m bench run` inside its second epoch, after a
    mid-epoch checkpoint; the rerun resumes at that step and ends with the numbers of an
    uninterrupted run: metrics, per-epoch and per-step losses."""
    from bench.launch.jobs import checkpoint_position

    args = ["run", "--methods", "mae", "--out"]
    tiny = [*TINY, "--epochs", "2", "--batch-size", "32", "checkpoint_every_min=1e-9",
            "log_every=2"]  # 8 steps per epoch, a checkpoint after every step
    assert main([*args, str(tmp_path / "full"), *tiny]) == 0
    cmd = [sys.executable, "-m", "bench", *args, str(tmp_path / "cut"), *tiny]
    env = {**os.environ, "OMP_NUM_THREADS": str(__import__("torch").get_num_threads())}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    position = (0, 0)
    while position < (1, 3) and time.time() < deadline and proc.poll() is None:
        dirs = run_dirs(tmp_path / "cut")
        if dirs and (dirs[0] / files.CHECKPOINT).exists():
            try:
                position = checkpoint_position(dirs[0])
            except (RuntimeError, OSError, EOFError):  # replaced while being read
                pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = run_dirs(tmp_path / "cut")
    assert not (run_dir / "summary.json").exists()
    epoch, step = checkpoint_position(run_dir)
    assert epoch == 1 and 0 < step < 8  # killed inside the second epoch
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    full_dir = run_dirs(tmp_path / "full")[0]
    assert store.read_json(run_dir / "summary.json")["metrics"] == store.read_json(
        full_dir / "summary.json")["metrics"]
    for name in (files.METRICS, files.STEPS):
        assert (run_dir / name).read_text() == (full_dir / name).read_text()
    attempts = store.read_jsonl(run_dir / "attempts.jsonl")
    assert [(a["start_epoch"], a["start_step"]) for a in attempts] == [(0, 0), (epoch, step)]


def test_help_says_what_each_flag_does_and_its_default(capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--methods", "default mae,random-init"),
                          ("--dataset", "default fashion-mnist"), ("--encoder", "default vit-micro"),
                          ("--epochs", "default 5"), ("--batch-size", "default 256"),
                          ("--seeds", "default 0"), ("--out", "default results/run"),
                          ("--launcher", "local (default)"), ("--workers", "default 1")):
        assert flag in text and default in text, flag
    for command, words in (("report", "results folders"), ("status", "a results folder"),
                           ("list", "the same catalogue as JSON")):
        assert main([command, "--help"]) == 0
        assert words in " ".join(capsys.readouterr().out.split())
    assert main(["sweep"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: the following arguments are required: spec; see "
                   "`python -m bench sweep --help`")


def test_progress_counts_steps_and_runs(tmp_path, capsys):
    """The pretraining bar moves with every step (not once an epoch), and the local launcher
    says which run of how many it starts."""
    quiet = [a for a in TINY if a != "--no-progress"]
    assert main(["run", "--methods", "mae,raw-input", "--out", str(tmp_path), *quiet]) == 0
    err = capsys.readouterr().err
    assert "run 1 of 2:" in err and "run 2 of 2:" in err
    assert "8/8 [" in err and "step" in err  # 2 epochs x 4 steps of 64 on 256 samples
