"""Masked language modelling on text: the TextData protocol, padding kept out of pooling, loss
and bag-of-words, the held-out masked-token metrics, and the CLI end to end on WordNet."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.core import store
from bench.core.config import RunConfig
from bench.core.errors import ConfigError, IncompatibleError
from bench.core.spec import DataSpec
from bench.data import corpora as C
from bench.data import load_dataset
from bench.data import packing as P
from bench.data import text as T
from bench.data import tokenizer as Tok
from bench.data.cards import load_card
from bench.data.protocol import EvalSplit
from bench.eval.diagnostics import DISTANCE_BINS, FAR
from bench.eval.pretext import masked_token_metrics
from bench.eval.probes import extract_features, linear_probe
from bench.models.heads import TokenHead
from bench.models.pretrainer import MaskedPretrainer, PretrainOutput
from bench.models.vit import TransformerEncoder
from bench.ops.masking import Visible
from bench.plan.sweep import expand
from bench.run.train import train_run
from methods.base import build_method
from tests.helpers import require_wordnet, tiny_text_corpus


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny(cache: Path) -> T.TextData:
    return T.text_data(tiny_text_corpus(), vocab_size=200, block_length=16, cache_dir=cache)


def test_text_data_protocol_shapes(tiny: T.TextData) -> None:
    corpus = tiny_text_corpus()
    spec = tiny.spec
    assert (spec.modality, spec.grid, spec.pad_id) == ("text", (16,), 0)
    assert spec.vocab_size == tiny.vocab_size <= 200
    assert tiny.n_pretrain() == len(tiny.train_blocks) > 0
    idx = torch.tensor([3, 0, 3])
    batch = tiny.pretrain_batch(idx, torch.Generator().manual_seed(0), aug=True)
    assert batch.dtype == torch.long and batch.shape == (3, 16)
    assert torch.equal(batch, tiny.train_blocks[idx])  # no augmentation for text
    assert not (tiny.train_blocks == spec.pad_id).any()  # packed blocks hold no padding
    for split, texts in (("train", corpus.train_texts), ("test", corpus.test_texts)):
        full = tiny.eval_split(split)
        assert len(full) == len(texts) and full.x.shape == (len(texts), 16)
        assert torch.equal(full.pad_mask, full.x != spec.pad_id)
        part = tiny.eval_split(split, 10)
        assert len(part) == 10 and torch.equal(part.x, full.x[:10])
        assert torch.equal(tiny.eval_batch(part.x), part.x)
    # Splits are in text-hash order, so a limit is a random sample, not the first file's class.
    ordered = C.hash_ordered(corpus)
    assert [C.text_hash(t) for t in ordered.train_texts] == sorted(
        map(C.text_hash, corpus.train_texts)
    )
    assert sorted(ordered.train_texts) == sorted(corpus.train_texts)
    assert tiny.eval_split("train").y.tolist() == ordered.train_labels
    assert tiny.eval_split("test").y.tolist() == ordered.test_labels


def test_heldout_blocks_are_the_first_test_texts_packed(tiny: T.TextData, cache: Path) -> None:
    tok = Tok.get_tokenizer(tiny_text_corpus(), 200, cache)
    sep = Tok.special_ids(tok).sep
    test = C.hash_ordered(tiny_text_corpus()).test_texts
    seqs = [e.ids for e in tok.encode_batch(test)]
    assert torch.equal(tiny.heldout_blocks(), P.pack_blocks(seqs, 16, sep))
    for n in (4, 7, len(test)):
        assert torch.equal(tiny.heldout_blocks(n), P.pack_blocks(seqs[:n], 16, sep))
    with pytest.raises(ConfigError, match="raise eval_test_limit"):
        tiny.heldout_blocks(0)


def test_tensors_come_from_the_cache_the_second_time(
    tiny: T.TextData, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_encoding(*args: object) -> None:
        raise AssertionError("re-encoded despite a cached copy")

    monkeypatch.setattr(T, "encode_corpus", no_encoding)
    again = T.text_data(tiny_text_corpus(), vocab_size=200, block_length=16, cache_dir=cache)
    assert again.fingerprint == tiny.fingerprint
    assert torch.equal(again.train_blocks, tiny.train_blocks)
    assert torch.equal(again.test_x, tiny.test_x)
    with pytest.raises(AssertionError, match="re-encoded"):  # another length: another entry
        T.text_data(tiny_text_corpus(), vocab_size=200, block_length=8, cache_dir=cache)


def test_racing_processes_agree_on_the_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training is not reproducible, so when two processes (DDP ranks) train on a cold cache,
    the first tokenizer published wins and both use it."""
    corpus = tiny_text_corpus()
    path = Tok.tokenizer_path(corpus, 200, tmp_path)
    winner = Tok._train_tokenizer(corpus.train_texts, 200)
    mine = Tok._train_tokenizer(corpus.train_texts, 120)  # stands for a different training

    def train_while_another_process_publishes(texts: list[str], vocab_size: int):
        path.write_text(winner.to_str())
        return mine

    monkeypatch.setattr(Tok, "_train_tokenizer", train_while_another_process_publishes)
    got = Tok.get_tokenizer(corpus, 200, tmp_path)
    assert got.get_vocab() == winner.get_vocab() != mine.get_vocab()
    assert path.read_text() == winner.to_str()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_raw_features_are_bag_of_words_without_padding(tiny: T.TextData) -> None:
    split = tiny.eval_split("test")
    bow = tiny.raw_features(split.x, split.pad_mask)
    assert bow.shape == (len(split), tiny.vocab_size)
    assert torch.equal(bow.sum(1), split.pad_mask.sum(1).float())  # one count per real token
    assert (bow[:, tiny.pad_id] == 0).all()
    wider = torch.cat([split.x, torch.zeros_like(split.x)], dim=1)  # 16 more [PAD] each
    assert torch.equal(tiny.raw_features(wider), bow)


def test_probe_is_not_thrown_by_a_word_absent_from_its_train_set() -> None:
    """Bag-of-words columns are often all zero on the probe's train subset; standardising them
    by ~0 would turn one test occurrence into an untrained logit of ~1e6."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    y = (x[:, 0] > 0).long()
    x[:, 1] = 0.0
    test = x[300:].clone()
    test[:, 1] = 1.0
    assert linear_probe(x[:300], y[:300], test, y[300:], seed=0) > 0.95


def test_pooled_features_ignore_padding(tiny: T.TextData) -> None:
    """A text's pooled features do not change when more padding is appended to it."""
    spec = DataSpec("text", (24,), vocab_size=40)
    torch.manual_seed(0)
    encoder = TransformerEncoder(spec, 32, 2, 2)
    ids = torch.randint(4, 40, (3, 24))
    lengths = torch.tensor([5, 16, 9])
    feats = []
    for width in (16, 24):
        x = ids[:, :width].clone()
        real = P.real_positions(lengths, width)
        x[~real] = spec.pad_id
        split = EvalSplit(x, torch.zeros(3, dtype=torch.long), real)
        feats.append(extract_features(encoder, tiny, split, 2, torch.device("cpu"), "f"))
    torch.testing.assert_close(feats[0], feats[1], rtol=1e-5, atol=1e-5)
    # Without the mask the padding would count: the check above is not vacuous.
    x = torch.zeros(1, 24, dtype=torch.long)
    x[0, :5] = ids[0, :5]
    assert not torch.allclose(encoder.pooled(x), feats[0][:1], atol=1e-3)


def test_a_text_without_tokens_gets_finite_features(tiny: T.TextData) -> None:
    empty = replace(
        tiny, test_x=torch.zeros_like(tiny.test_x), test_len=torch.zeros_like(tiny.test_len)
    )
    split = empty.eval_split("test", 2)
    assert split.pad_mask.sum(1).tolist() == [1, 1]  # read as one [PAD]
    encoder = TransformerEncoder(empty.spec, 32, 1, 2)
    assert torch.isfinite(
        extract_features(encoder, empty, split, 2, torch.device("cpu"), "f")
    ).all()


def test_loss_ignores_padding() -> None:
    spec = DataSpec("text", (12,), vocab_size=30)
    torch.manual_seed(0)
    model = MaskedPretrainer(
        spec,
        TransformerEncoder(spec, 32, 1, 2),
        build_method("mae", {}, 16, "text", "token"),
        16,
        1,
        2,
    )
    x = torch.randint(4, 30, (4, 12))
    x[:, 7:] = spec.pad_id
    out = model(x, torch.Generator().manual_seed(0))
    hidden = ~out.visible.mask(12)
    assert (hidden & (x == spec.pad_id)).any()  # some padding is hidden, yet not scored
    scored = hidden & (x != spec.pad_id)
    expected = nn.functional.cross_entropy(out.pred[scored], x[scored])
    torch.testing.assert_close(out.loss, expected)


class FixedPredictor(nn.Module):
    """Predicts log-probabilities LOGP[true token] at every position; position 0 is visible."""

    spec = DataSpec("text", (4,), vocab_size=8)
    decoder = SimpleNamespace(head=TokenHead(spec, 1))  # the head says which tokens are real
    scored = MaskedPretrainer.scored

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> PretrainOutput:
        visible = Visible(torch.zeros(len(x), 1, dtype=torch.long))
        return PretrainOutput(torch.zeros(()), LOGP[x], visible)


LOGP = torch.full((8, 8), math.log(0.5 / 7))
LOGP[6, 6] = math.log(0.5)  # token 6: p = 1/2, predicted (argmax)
LOGP[7] = math.log(0.25 / 6)
LOGP[7, 7], LOGP[7, 1] = math.log(0.25), math.log(0.5)  # token 7: p = 1/4, argmax is 1
LOGP[0] = torch.arange(8.0) * 100  # padding: confidently wrong, must not count


@pytest.mark.parametrize("batch_size", [1, 2])
def test_masked_token_metrics_hand_case(batch_size: int) -> None:
    blocks = torch.tensor([[5, 7, 0, 7], [6, 6, 6, 6]])  # scored: 7, 7 | 6, 6, 6
    m = masked_token_metrics(FixedPredictor(), blocks, batch_size, torch.device("cpu"), 0)
    # Every scored token counts once: (3 ln 2 + 2 ln 4) / 5 nats (per-batch means would differ).
    assert m["recon_loss"] == pytest.approx(1.4 * math.log(2))
    assert m["masked_token_acc"] == pytest.approx(3 / 5)
    assert m["perplexity"] == pytest.approx(2**1.4)


def test_text_dir_pretrains_and_reports_masked_token_metrics_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(
        "\n\n".join(" ".join(tiny_text_corpus().train_texts[i : i + 4]) for i in range(0, 160, 4))
    )
    name = f"text-dir:{folder}"
    with pytest.raises(IncompatibleError, match="no labels"):
        expand({"dataset": name}, {"method": ["random-init"]})
    (cfg,) = expand(
        {
            "dataset": name,
            "vocab_size": 200,
            "block_length": 16,
            "epochs": 1,
            "batch_size": 16,
            "decoder_dim": 32,
            "decoder_depth": 1,
            "decoder_heads": 2,
            "device": "cpu",
        },
        {"method": ["interp"]},
    )
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "ok"
    by_distance = {name for _, name in (*DISTANCE_BINS, FAR)}
    linpred = {m for m in summary["metrics"] if m.startswith("linpred_")}
    assert {"linpred_r2_d4", "linpred_identity_r2_d4", "linpred_mean_r2_d4"} <= linpred
    assert set(summary["metrics"]) - by_distance - linpred == {
        "recon_loss",
        "masked_token_acc",
        "perplexity",
        "pretrain_loss",
        "interp_share_inside",  # interp's own diagnostics: which rule filled what
        "interp_share_outside",
        "recon_loss_fill_const",  # what the fill contributes (bench.eval.contribution)
    }
    assert "recon_loss_d1" in summary["metrics"]  # the held-out CE by distance to the visible


@pytest.mark.parametrize("name", ["wordnet-glosses", "kjv-verses"])
def test_cards_state_the_block_defaults(name: str) -> None:
    blocks = load_card(name)["blocks"]
    assert blocks["block_length"] == blocks["max_eval_length"] == T.DEFAULT_BLOCK_LENGTH


def test_text_options_only_for_text_datasets() -> None:
    with pytest.raises(ConfigError, match="vocab_size: text datasets only"):
        load_dataset("digits", vocab_size=100)
    assert RunConfig(vocab_size=100).run_id != RunConfig().run_id


def test_cli_end_to_end_on_wordnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require_wordnet()
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    methods = ["qbheat", "mae", "interp", "random-init", "raw-input"]
    args = [
        "run",
        "--methods",
        ",".join(methods),
        "--dataset",
        "wordnet-glosses",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--train-limit",
        "64",
        "--eval-train-limit",
        "200",
        "--eval-test-limit",
        "100",
        "--no-progress",
        "vocab_size=400",
        "block_length=32",
        "decoder_dim=32",
        "decoder_depth=1",
        "decoder_heads=2",
        "probe_steps=20",
        "device=cpu",
    ]
    assert main(args) == 0
    assert "report:" in capsys.readouterr().out
    summaries = {s["method"]: s for s in map(store.read_json, out.glob("*/summary.json"))}
    assert set(summaries) == set(methods)
    for method, s in summaries.items():
        assert s["status"] == "ok", s.get("error")
        m = s["metrics"]
        assert 0 <= m["linear_top1"] <= 1 and 0 <= m["knn_top1"] <= 1
        if method in ("qbheat", "mae", "interp"):
            assert 0 <= m["masked_token_acc"] <= 1
            assert m["perplexity"] == pytest.approx(math.exp(m["recon_loss"]))
            assert m["perplexity"] < 400 * 2  # about uniform over the vocabulary, or better
    report = (out / "report" / "report.md").read_text()
    assert "wordnet-glosses" in report and all(f"| {m} |" in report for m in methods)
