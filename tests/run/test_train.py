import json

import pytest
import torch

from bench.core import files, store
from bench.eval.probes import knn_top1, linear_probe
from bench.launch.jobs import checkpoint_position
from bench.plan.sweep import resolve_run
from bench.run.hooks import StopAfterEpoch
from bench.run.loop import RunInterrupted
from bench.run.train import train_run
from bench.runtime.optim import lr_at
from tests.helpers import StepRecorder, kill_at_step, tiny_config


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_knn_exact_small_case():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_top1(train, labels, test, torch.tensor([0, 1]), k=1) == 1.0
    # k=3: votes exp(sim/T) favour the two close class-0 points for the first query
    assert knn_top1(train, labels, test, torch.tensor([0, 0]), k=3) == 0.5


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    assert linear_probe(x[:300], y[:300], x[300:], y[300:], seed=0) > 0.95


def test_resume_equals_uninterrupted(tmp_path, digits):
    cfg = resolve_run(tiny_config(epochs=3))
    full = train_run(cfg, tmp_path / "full", progress=False, data=digits)
    with pytest.raises(RunInterrupted):
        train_run(cfg, tmp_path / "cut", progress=False, data=digits, hooks=[StopAfterEpoch(1)])
    assert store.load_torch(tmp_path / "cut" / files.CHECKPOINT)["state"]["epoch"] == 1
    assert not (tmp_path / "cut" / files.SUMMARY).exists()
    resumed = train_run(cfg, tmp_path / "cut", progress=False, data=digits)
    assert resumed["metrics"] == full["metrics"]
    lines = (tmp_path / "cut" / files.METRICS).read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert lines == (tmp_path / "full" / files.METRICS).read_text().splitlines()


@pytest.mark.parametrize("killed_at", [2, 6])  # inside epoch 1, inside epoch 2 (4 steps each)
def test_mid_epoch_resume_equals_uninterrupted(tmp_path, digits, killed_at):
    """With a checkpoint after every step, a run killed inside an epoch resumes at that step
    (generator state and running loss sums restored): the metrics, the per-epoch losses and
    the per-step losses are the uninterrupted run's, bit for bit."""
    cfg = resolve_run(tiny_config(epochs=2, log_every=3, checkpoint_every_min=1e-9))
    full = train_run(cfg, tmp_path / "full", progress=False, data=digits)
    kill_at_step(killed_at, lambda: train_run(cfg, tmp_path / "cut", progress=False, data=digits))
    assert checkpoint_position(tmp_path / "cut") == divmod(killed_at, 4)
    resumed = train_run(cfg, tmp_path / "cut", progress=False, data=digits)
    assert resumed["metrics"] == full["metrics"]
    for name in (files.METRICS, files.STEPS):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "full" / name).read_text()
    assert resumed["compute"]["train_samples_per_s"] > 0


def test_summary_matches_design(tmp_path, digits):
    cfg = resolve_run(tiny_config(epochs=1))
    s = train_run(cfg, tmp_path / cfg.run_id, progress=False, data=digits)
    assert s == store.read_json(tmp_path / cfg.run_id / files.SUMMARY)
    assert {"run_id", "method", "dataset", "encoder", "seed", "status", "metrics", "compute"} <= set(s)
    assert s["status"] == "ok" and s["run_id"] == cfg.run_id
    assert {"linear_top1", "knn_top1", "recon_loss"} <= set(s["metrics"])
    c = s["compute"]
    assert {"pretrain_flops_per_sample", "train_samples_per_s", "peak_mem_bytes", "wall_s", "device"} <= set(c)
    assert c["pretrain_flops_per_sample"] > 1e6 and c["train_samples_per_s"] > 0
    config = store.read_json(tmp_path / cfg.run_id / files.CONFIG)
    assert config["run_id"] == cfg.run_id and "versions" in config and "data_fingerprint" in config
    rec = store.load_torch(tmp_path / cfg.run_id / files.RECONSTRUCTIONS)
    assert rec["images"].shape == rec["recon"].shape == (8, 1, 32, 32)


@pytest.mark.parametrize("reference", ["random-init", "raw-input"])
def test_reference_rows(tmp_path, digits, reference):
    cfg = resolve_run(tiny_config(method=reference))
    s = train_run(cfg, tmp_path / cfg.run_id, progress=False, data=digits)
    assert 0.3 < s["metrics"]["knn_top1"] <= 1.0
    assert not (tmp_path / cfg.run_id / files.CHECKPOINT).exists()


def test_train_limit_is_one_subset_for_the_whole_run(tmp_path, digits):
    """`train_limit=N` pretrains on N samples drawn once from the seed: over 3 epochs exactly N
    distinct samples are seen (each epoch a new order of the same N), the very same steps after
    a kill and resume, and the same N for another method of the same seed."""
    cfg = resolve_run(tiny_config(epochs=3, batch_size=32, train_limit=96, protocols="knn",
                                  checkpoint_every_min=1e-9))
    full = StepRecorder()
    train_run(cfg, tmp_path / "full", progress=False, hooks=[full], data=digits)
    epochs = [[i for e, _, samples in full.steps if e == k for i in samples] for k in range(3)]
    assert all(len(e) == len(set(e)) == 96 for e in epochs)
    assert set(epochs[0]) == set(epochs[1]) == set(epochs[2]) and epochs[0] != epochs[1]

    cut = StepRecorder()
    kill_at_step(4, lambda: train_run(cfg, tmp_path / "cut", progress=False, hooks=[cut],
                                      data=digits))
    train_run(cfg, tmp_path / "cut", progress=False, hooks=[cut], data=digits)
    # step 4 (epoch 2, step 2) was seen, then killed before it ran; the resumed run starts
    # there and draws exactly what the uninterrupted one did
    assert cut.steps[4] == cut.steps[5] and cut.steps[:4] + cut.steps[5:] == full.steps

    other = resolve_run(tiny_config(method="interp", epochs=1, batch_size=32, train_limit=96,
                                    protocols="knn"))
    interp = StepRecorder()
    train_run(other, tmp_path / "interp", progress=False, hooks=[interp], data=digits)
    assert {i for *_, samples in interp.steps for i in samples} == set(epochs[0])


class LandsWhenWaitedFor:
    """A device-to-host copy in flight, as a CUDA event sees it: not done when queried, and its
    value lands in the (pinned) host tensor only once the event is synchronised."""

    def __init__(self, host: torch.Tensor, value: float):
        self.host, self.value = host, value

    def query(self) -> bool:
        return False

    def synchronize(self) -> None:
        self.host.fill_(self.value)


def test_step_log_waits_for_each_copy_before_reading_it(tmp_path):
    """The mid-epoch flush (wait=True) synchronises a pending copy's event before reading the
    host tensor; a flush that does not wait leaves pending copies alone."""
    from bench.run.step import StepLog

    log = StepLog(tmp_path / "steps.jsonl", every=1, device=torch.device("cpu"), write=True)
    host = torch.zeros(())  # what the pinned buffer holds before the copy lands
    log.pending.append(({"epoch": 1, "step": 1}, host, LandsWhenWaitedFor(host, 2.5)))
    log.flush(wait=False)
    assert len(log.pending) == 1 and not (tmp_path / "steps.jsonl").exists()
    log.flush(wait=True)
    assert store.read_jsonl(tmp_path / "steps.jsonl") == [{"epoch": 1, "step": 1, "loss": 2.5}]
    assert log.pending == []
