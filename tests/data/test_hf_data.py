"""`hf:PATH[:split]` on small datasets built here with the real `datasets` library (saved to
disk, and in a hub-cache layout), read offline by the built-in corpora's and imagefolder's
rules; names that would need the hub, and bad column settings, are one-line errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.core.errors import ConfigError, DataNotFoundError, IncompatibleError
from bench.data import load_dataset
from bench.data.corpora import make_corpus
from bench.data.hf import HFColumns, image_geometry, square_image
from bench.data.images import channel_stats
from bench.data.text import text_data
from bench.plan.sweep import expand
from bench.run.train import train_run
from tests.helpers import require_module

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi".split()
TEXT = dict(vocab_size=64, block_length=16)
TINY_RUN = dict(epochs=1, batch_size=16, decoder_dim=32, decoder_depth=1, decoder_heads=2,
                device="cpu", probe_steps=5)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MASKBENCH_DATA_WORKERS", "0")


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A labelled text DatasetDict, and an image Dataset of 40 x 36 grey pictures with integer
    labels, both saved with save_to_disk; the texts as plain lists too."""
    datasets = require_module("datasets")
    from PIL import Image

    root = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(240)]
    labels = [int(t.split()[0] in WORDS[:7]) for t in texts]
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "topic": datasets.ClassLabel(names=["first", "second"])})
    split = lambda a, b: datasets.Dataset.from_dict(  # noqa: E731
        {"sentence": texts[a:b], "topic": labels[a:b]}, features=features)
    datasets.DatasetDict({"train": split(0, 200), "test": split(200, 240)}).save_to_disk(root / "text")
    pictures = [Image.fromarray(rng.integers(0, 256, (40, 36), dtype=np.uint8), "L")
                for _ in range(60)]
    images = datasets.Dataset.from_dict(
        {"img": pictures, "y": [i % 3 + 5 for i in range(60)]},
        features=datasets.Features({"img": datasets.Image(), "y": datasets.Value("int64")}))
    images.save_to_disk(root / "images")
    return {"root": root, "texts": texts, "labels": labels, "images": images}


def test_text_follows_the_built_in_corpus_rules(hf):
    """Pooled splits, hash split, tokenizer, packing: what text_data makes of the same lists."""
    name = f"hf:{hf['root'] / 'text'}"
    data = load_dataset(name, **TEXT, columns=HFColumns(text="sentence", label="topic"))
    same = text_data(make_corpus(name, hf["texts"], hf["labels"], ["first", "second"]), **TEXT)
    assert data.classes == ["first", "second"] and data.fingerprint == same.fingerprint
    for key in ("train_blocks", "test_blocks", "train_x", "test_x", "train_y", "test_y"):
        assert torch.equal(getattr(data, key), getattr(same, key)), key
    cached = sorted(os.listdir(os.environ["MASKBENCH_CACHE"]))
    again = load_dataset(name, **TEXT, columns=HFColumns(text="sentence", label="topic"))
    assert sorted(os.listdir(os.environ["MASKBENCH_CACHE"])) == cached  # nothing re-made
    assert torch.equal(again.train_blocks, data.train_blocks)
    # :split takes one split only.
    test_only = load_dataset(f"{name}:test", **TEXT, columns=HFColumns(text="sentence"))
    assert len(test_only.train_x) + len(test_only.test_x) == 40


def test_unlabelled_text_behaves_like_text_dir(hf, tmp_path):
    name = f"hf:{hf['root'] / 'text'}"
    with pytest.raises(IncompatibleError, match="no labels"):
        expand({"dataset": name, "hf_text": "sentence"}, {"method": ["random-init"]})
    data = load_dataset(name, **TEXT, columns=HFColumns(text="sentence"))
    assert data.classes is None and data.train_y is None
    (cfg,) = expand({"dataset": name, "hf_text": "sentence", **TEXT, **TINY_RUN},
                    {"method": ["mae"]})
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "ok"
    linpred = {m for m in summary["metrics"] if m.startswith("linpred_")}
    assert "linpred_r2_d1" in linpred  # unlabelled text: no probes, but its blocks are read
    assert set(summary["metrics"]) - linpred == {"recon_loss", "masked_token_acc", "perplexity",
                                       "pretrain_loss", "recon_loss_d1", "recon_loss_d2",
                                       "recon_loss_d3plus", "recon_loss_fill_const",
                                       "recon_loss_d5plus"}  # 1-D blocks reach d >= 5


def test_images_follow_the_imagefolder_protocol(hf, tmp_path):
    """One split: 1 in 10 rows to test by row hash, each split in hash order; decoded to the
    first image's square, grey; normalised by the training images' own statistics."""
    name = f"hf:{hf['root'] / 'images'}"
    data = load_dataset(name, columns=HFColumns(image="img", label="y"))
    assert image_geometry(36, 40) == (36, 4)
    assert (data.image_size, data.patch_size, data.spec.grid, data.spec.in_chans) == (36, 4, (9, 9), 1)
    assert data.classes == ["5", "6", "7"]
    train, test = data.train_set, data.test_set
    assert sorted(train.rows + test.rows) == list(range(60)) and not set(train.rows) & set(test.rows)
    source = hf["images"]
    for split in (train, test):
        for i in (0, len(split) - 1):
            x, label = split[i]
            row = split.rows[i]
            assert torch.equal(x, square_image(source[row]["img"], 36, "L"))
            assert data.classes[label] == str(source[row]["y"])
    decoded = torch.stack([train[i][0] for i in range(len(train))])
    mean, std = channel_stats(decoded)
    assert data.mean == pytest.approx(mean, abs=1e-4) and data.std == pytest.approx(std, abs=1e-4)
    # Unlabelled images pretrain only.
    assert load_dataset(name, columns=HFColumns(image="img")).classes is None
    (cfg,) = expand({"dataset": name, "hf_image": "img", "hf_label": "y", **TINY_RUN},
                    {"method": ["qbheat"]})
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "ok" and 0 <= summary["metrics"]["linear_top1"] <= 1


def test_hub_cache_folders_and_ids_load_offline(hf, tmp_path, monkeypatch):
    """The layout huggingface_hub leaves (datasets--OWNER--NAME/snapshots/REV/data/*.parquet):
    by its folder, or by its id found in $HF_HUB_CACHE; an id not there needs the hub."""
    datasets = require_module("datasets")
    hub = tmp_path / "hub"
    repo = hub / "datasets--someone--tiny-text"
    files = repo / "snapshots" / "0123abcd" / "data"
    files.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    rows = {"text": hf["texts"][:120], "label": hf["labels"][:120]}
    datasets.Dataset.from_dict(rows).to_parquet(str(files / "train-00000-of-00001.parquet"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    by_id = load_dataset("hf:someone/tiny-text", **TEXT, columns=HFColumns(label="label"))
    by_folder = load_dataset(f"hf:{repo}", **TEXT, columns=HFColumns(label="label"))
    same = text_data(make_corpus("x", rows["text"], rows["label"], ["0", "1"]), **TEXT)
    for data in (by_id, by_folder):
        assert torch.equal(data.train_blocks, same.train_blocks) and data.classes == ["0", "1"]
    assert os.environ["HF_DATASETS_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(DataNotFoundError, match="would need the Hugging Face hub, and Maskbench "
                                                "never downloads"):
        load_dataset("hf:someone/not-here", columns=HFColumns())


def test_bad_settings_are_one_line_errors(hf, tmp_path, capsys):
    name = f"hf:{hf['root'] / 'text'}"
    cases = {
        ("hf_text=nope",): "no column 'nope' (set by hf_text); columns: sentence, topic",
        ("hf_text=sentence", "hf_image=img"): "a run reads one input column",
        ("hf_text=sentence", "hf_label=missing"): "no column 'missing' (set by hf_label)",
    }
    for settings, message in cases.items():
        assert main(["run", "--methods", "mae", "--dataset", name, "--out", str(tmp_path),
                     "--epochs", "1", *settings]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("*/config.json"))
    with pytest.raises(ConfigError, match="no split 'validation'; splits: test, train"):
        load_dataset(f"{name}:validation", columns=HFColumns(text="sentence"))
    with pytest.raises(ConfigError, match="for hf: datasets only"):
        expand({"dataset": "digits", "hf_label": "y"}, {"method": ["mae"]})
    with pytest.raises(ConfigError, match="does not hold images"):
        load_dataset(name, columns=HFColumns(image="sentence"))


def test_text_at_the_sentence_level_reads_each_row_as_a_document(tmp_path):
    """granularity=sentence on hf: text: a row is a document, its paragraphs split into
    sentences by text-dir's rule, labelled by its row; it trains and probes end to end."""
    datasets = require_module("datasets")
    require_module("syntok")
    from bench.data.hf import hf_documents
    from bench.data.sentences import Document, make_documents, sentence_data, split_sentences

    rows = [f"The {a} of row {i} ran far. It slept well.\n\nThen the {a} ate {i} figs. "
            f"It was glad." for i in range(40) for a in ("cat", "owl")]
    topics = [i % 2 for i in range(len(rows))]
    folder = tmp_path / "docs"
    datasets.Dataset.from_dict(
        {"body": rows, "topic": topics},
        features=datasets.Features({"body": datasets.Value("string"),
                                    "topic": datasets.ClassLabel(names=["cat", "owl"])}),
    ).save_to_disk(folder)
    name = f"hf:{folder}"
    columns = HFColumns(text="body", label="topic")
    corpus = hf_documents(str(folder), columns)
    want = make_documents(name, [
        Document(tuple(s for para in row.split("\n\n") for s in split_sentences(para)), y)
        for row, y in zip(rows, topics)], ["cat", "owl"])
    assert corpus == want and all(len(d.sentences) == 4 for d in corpus.train)
    data = load_dataset(name, vocab_size=64, columns=columns, granularity="sentence",
                        sentences=2, sentence_length=8)
    same = sentence_data(want, vocab_size=64, sentences=2, sentence_length=8)
    assert data.n_pretrain() == same.n_pretrain() == 2 * len(corpus.train)
    assert torch.equal(data.pretrain_batch(torch.arange(4), torch.Generator(), aug=False),
                       same.pretrain_batch(torch.arange(4), torch.Generator(), aug=False))
    (cfg,) = expand({"dataset": name, "hf_text": "body", "hf_label": "topic",
                     "granularity": "sentence", "sentences": 2, "sentence_length": 8,
                     "vocab_size": 64, "eval_test_limit": 8, **TINY_RUN}, {"method": ["mae"]})
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "ok"
    assert {"linear_top1", "knn_top1", "next_sentence_top1", "masked_bow_recall"} <= set(
        summary["metrics"])
    with pytest.raises(ConfigError, match="text only"):
        load_dataset(f"hf:{hf_images_folder(tmp_path, datasets)}", granularity="sentence",
                     columns=HFColumns(image="img"))


def hf_images_folder(tmp_path, datasets):
    from PIL import Image

    folder = tmp_path / "pictures"
    datasets.Dataset.from_dict({"img": [Image.new("L", (16, 16)) for _ in range(4)]}).save_to_disk(
        folder)
    return folder
