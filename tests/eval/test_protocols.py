"""Evaluation protocols: selection and validation, the tran1 probe (frozen encoder), fine-tuning
(a copy, layer-wise lr decay), and their wiring into a run's summary."""

from __future__ import annotations

import pytest
import torch

from bench.cli import main
from bench.core.config import PROTOCOLS, RunConfig, apply_overrides, protocol_list
from bench.core.errors import ConfigError
from bench.data.protocol import EvalSplit
from bench.eval.probes import ProbeRecipe, extract_features, linear_probe
from bench.eval.supervised import (
    FinetuneClassifier,
    SupervisedRecipe,
    Tran1Probe,
    batch_order,
    encoder_protocols,
    train_classifier,
)
from bench.models.cnn import CNNEncoder, TimmTrunk
from bench.models.vit import TransformerEncoder
from bench.plan.sweep import resolve_run
from bench.run.train import train_run
from tests.helpers import tiny_config

CPU = torch.device("cpu")


def test_protocol_list_validates_and_names_valid_ones():
    assert protocol_list("linear, knn,tran1") == ("linear", "knn", "tran1")
    assert protocol_list("knn,knn") == ("knn",)
    with pytest.raises(ConfigError, match="unknown evaluation protocol 'probe'.*valid: linear, knn, tran1, finetune"):
        protocol_list("linear,probe")
    with pytest.raises(ConfigError, match="no evaluation protocol"):
        protocol_list(" , ")
    with pytest.raises(ConfigError, match="finetune_layer_decay"):
        RunConfig(finetune_layer_decay=0.0)
    with pytest.raises(ConfigError, match="valid: linear, knn, tran1, finetune"):
        apply_overrides(RunConfig(), {"protocols": "lineer"})
    assert RunConfig().protocols == "linear,knn" and set(PROTOCOLS) == {
        "linear", "knn", "tran1", "finetune", "dense", "fewshot"}


def test_cli_rejects_unknown_protocol_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--dataset", "digits", "--protocols", "linear,tran2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown evaluation protocol 'tran2'" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.fixture(scope="module")
def small_encoder(digits):
    torch.manual_seed(0)
    return TransformerEncoder(digits.spec, 32, 2, 2)


def two_class_split(n: int, seed: int) -> EvalSplit:
    """Black versus white images: any working classifier separates them."""
    y = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed))
    x = (y * 255).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 32, 32).contiguous()
    return EvalSplit(x, y)


@pytest.mark.parametrize("cls", [Tran1Probe, FinetuneClassifier])
def test_classifier_learns_and_leaves_the_encoder_unchanged(digits, small_encoder, cls):
    before = {k: v.clone() for k, v in small_encoder.state_dict().items()}
    small_encoder.train()
    train, test = two_class_split(64, 0), two_class_split(16, 1)
    recipe = SupervisedRecipe(epochs=3, lr=0.02 * 32 / 256, batch_size=32)

    def score() -> float:
        torch.manual_seed(0)
        model = cls(small_encoder, 2)
        correct = train_classifier(model, digits, train, test, recipe, CPU, seed=0, desc="t")
        return correct.float().mean().item()

    first = score()
    assert first == 1.0 and score() == first  # learns; seeded, so repeatable
    after = small_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_schedules_count_steps_with_a_minimum_for_few_labels():
    recipe = SupervisedRecipe(epochs=5, lr=1e-3, batch_size=256, min_steps=1000)
    assert recipe.steps(1000) == 1000  # 5 epochs of 4 batches would be 20 steps
    assert recipe.steps(60000) == 5 * 235  # many labels: the epochs already give more
    assert SupervisedRecipe(5, 1e-3, 256).steps(1000) == 20  # min_steps=0: epochs alone
    # seeded passes over the examples, a new order each, the last cut where the steps end:
    # with as many steps as whole epochs, exactly the batches the epoch loop took
    batches = list(batch_order(10, 4, 7, seed=0))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    gen = torch.Generator().manual_seed(0)
    passes = torch.cat([torch.randperm(10, generator=gen) for _ in range(3)])
    assert torch.equal(torch.cat(batches), passes[:24])
    cfg = tiny_config()
    assert (cfg.tran1_min_steps, cfg.finetune_min_steps) == (1000, 1000)
    assert RunConfig(finetune_min_steps=1000).run_id == RunConfig().run_id  # ids stay


def test_few_labels_fine_tune_long_enough_to_pass_the_linear_probe(digits):
    """200 labels at batch 64: five epochs are 20 steps, after which a fine-tuned (tiny,
    random-init) ViT is near chance, far below the linear probe on its own frozen features:
    a lack of steps, not of features. With at least 300 steps it passes the linear probe."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(digits.spec, 32, 1, 2)
    train, test = digits.eval_split("train", 200), digits.eval_split("test", 200)
    features = [extract_features(encoder, digits, s, 256, CPU, "f") for s in (train, test)]
    linear = linear_probe(features[0], train.y, features[1], test.y, 0, ProbeRecipe(steps=100))

    def finetuned(min_steps: int) -> float:
        cfg = tiny_config(protocols="finetune", finetune_batch_size=64, finetune_lr=0.02,
                          finetune_min_steps=min_steps)
        return encoder_protocols(encoder, digits, train, test, cfg, CPU,
                                 ("finetune",))["finetune_top1"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to thread contention on a busy CPU
    try:
        assert finetuned(0) < linear - 0.3  # 8 % against 72.5 %
        assert finetuned(300) > linear  # 80.5 %
    finally:
        torch.set_num_threads(threads)


def test_tran1_trains_only_its_block_and_head(digits, small_encoder):
    probe = Tran1Probe(small_encoder, 10).train()
    assert not probe.encoder.training  # frozen encoder stays in eval mode
    trained = {id(p) for g in probe.param_groups(SupervisedRecipe(1, 1e-3, 32), 1e-3) for p in g["params"]}
    assert not trained & {id(p) for p in small_encoder.parameters()}
    assert trained == {id(p) for n, p in probe.named_parameters() if not n.startswith("encoder.")}


def test_finetune_layer_decay_groups(digits, small_encoder):
    model = FinetuneClassifier(small_encoder, 10)
    groups = model.param_groups(SupervisedRecipe(1, 1e-3, 32, layer_decay=0.5), 1.0)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters()))  # every parameter, once
    enc = model.encoder  # depth 2: embeddings 0.5^3, block i 0.5^(2-i), final norm and head 1
    assert {lr_of[id(p)] for p in enc.tokens.parameters()} == {0.125}
    assert {lr_of[id(p)] for p in enc.blocks[0].parameters()} == {0.25}
    assert {lr_of[id(p)] for p in enc.blocks[1].parameters()} == {0.5}
    assert {lr_of[id(p)] for p in [*enc.norm.parameters(), *model.head.parameters()]} == {1.0}
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert no_decay == {id(p) for p in model.parameters() if p.ndim == 1}


def test_finetune_dense_encoder_is_one_group(digits):
    trunk = TimmTrunk("resnet18", (("stem_width", 16), ("channels", (16, 32, 64, 128))))
    model = FinetuneClassifier(CNNEncoder(digits.spec, trunk, 32), 10)
    groups = model.param_groups(SupervisedRecipe(1, 1e-3, 32, layer_decay=0.5), 1.0)
    assert {g["lr"] for g in groups} == {1.0}


def test_protocols_select_what_a_run_reports(tmp_path, digits):
    small = dict(eval_train_limit=64, eval_test_limit=32, tran1_epochs=1, finetune_epochs=1,
                 tran1_min_steps=0, finetune_min_steps=0)
    cfg = resolve_run(tiny_config(method="random-init", protocols="knn,tran1,finetune", **small))
    metrics = train_run(cfg, tmp_path / "a", progress=False, data=digits)["metrics"]
    probes = {m: v for m, v in metrics.items() if not m.startswith("linpred_")}
    assert set(probes) == {"knn_top1", "tran1_top1", "finetune_top1"}
    assert all(0.0 <= v <= 1.0 for v in probes.values())
    # raw-input has no encoder: tran1 and finetune do not apply to it
    cfg = resolve_run(tiny_config(method="raw-input", protocols="linear,tran1", **small))
    metrics = train_run(cfg, tmp_path / "b", progress=False, data=digits)["metrics"]
    # the probe's penalty, chosen on a validation share, is recorded beside it
    assert {m for m in metrics if not m.startswith("linpred_")} == {"linear_top1", "linear_l2"}


def test_encoder_protocols_restore_training_mode(digits, small_encoder):
    small_encoder.train()
    cfg = tiny_config(protocols="tran1", tran1_epochs=1, tran1_min_steps=0)
    out = encoder_protocols(small_encoder, digits, two_class_split(32, 0), two_class_split(16, 1),
                            cfg, CPU, ("tran1",))
    assert set(out) == {"tran1_top1"} and small_encoder.training


def test_evaluation_does_not_depend_on_the_pretraining_batch(digits, small_encoder):
    """tran1 and finetune train with their own fixed batch size and lr: two runs that differ
    only in the pretraining batch (or process count) score the same encoder identically."""
    small = dict(protocols="tran1,finetune", tran1_epochs=1, finetune_epochs=1,
                 tran1_min_steps=0, finetune_min_steps=0,
                 tran1_batch_size=16, finetune_batch_size=16)
    train, test = digits.eval_split("train", 96), digits.eval_split("test", 48)
    scores = [encoder_protocols(small_encoder, digits, train, test,
                                tiny_config(batch_size=b, **small), CPU, ("tran1", "finetune"))
              for b in (32, 512)]
    assert scores[0] == scores[1]
    # ... and the recipe's own keys do change it (they are what decides the recipe)
    other = encoder_protocols(small_encoder, digits, train, test,
                              tiny_config(**{**small, "tran1_lr": 0.5, "finetune_lr": 0.5}), CPU,
                              ("tran1", "finetune"))
    assert other != scores[0]


def test_every_kind_of_data_follows_the_training_data_protocol(digits, tmp_path, monkeypatch):
    """In-memory images, streamed image folders, packed text and sentence windows all offer
    what a run reads of its data (bench.data.protocol.TrainingData)."""
    from bench.data import load_dataset
    from bench.data.protocol import TrainingData
    from bench.data.samples import write_image_folder

    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MASKBENCH_DATA_WORKERS", "0")
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(20):
        (texts / f"{i}.txt").write_text(f"The owl {i} flew. It sat down.\n\nThen it slept {i} h.")
    kinds = {
        "images": digits,
        "imagefolder": load_dataset(f"imagefolder:{write_image_folder(tmp_path / 'img')}"),
        "text": load_dataset(f"text-dir:{texts}", vocab_size=60, block_length=8),
        "sentences": load_dataset(f"text-dir:{texts}", vocab_size=60, granularity="sentence",
                                  sentences=2, sentence_length=6),
    }
    for kind, data in kinds.items():
        assert isinstance(data, TrainingData), kind
        assert isinstance(data.to("cpu"), TrainingData), kind
    assert not isinstance(EvalSplit(torch.zeros(1), torch.zeros(1)), TrainingData)
