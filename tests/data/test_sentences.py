"""Text at the sentence level, data side: sentence splitting, documents (KJV chapters, text-dir
files), the split by document, windows that keep order and never cross a document, the
tensors and their cache, and the one-line refusals (WordNet, images, options of the other
level)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core import store
from bench.core.config import RunConfig
from bench.core.errors import ConfigError
from bench.data import check_granularity, load_dataset
from bench.data import corpora as C
from bench.data import packing as P
from bench.data import sentences as S
from bench.data import tokenizer as Tok
from bench.data.cards import load_card
from bench.plan.sweep import expand
from bench.run.train import train_run

# Six books, one of each genre, in canonical order; their words tell the genres apart.
BOOKS = {"Ge": "law", "Josh": "history", "Psa": "poetry", "Isa": "prophets", "Mat": "gospels",
         "Rom": "epistles"}
GENRE_WORDS = {"law": "statute ordinance offering", "history": "king battle city",
               "poetry": "praise song harp", "prophets": "woe vision saith",
               "gospels": "disciples parable multitude", "epistles": "grace brethren faith"}

HEAT_1D = {"heat_norm_A", "heat_radius_right", "heat_radius_left"}  # QB-Heat on 1-D grids
INTERP_SHARES = {"interp_share_inside", "interp_share_outside"}  # interp: which rule filled


def bible_lines(chapters: int = 10, verses: int = 7) -> list[str]:
    """`bible -f`-style lines: every book has `chapters` chapters of `verses` verses, each verse
    unique (its reference is in its words) and built from its book's genre words."""
    lines = []
    for book, genre in BOOKS.items():
        words = GENRE_WORDS[genre].split()
        for c in range(1, chapters + 1):
            for v in range(1, verses + 1):
                text = " ".join(words[(c + v + k) % 3] for k in range(2 + v % 4))
                lines.append(f"{book}{c}:{v} And {text} chapter{c} verse{v} of {book.lower()}.")
    return lines


@pytest.fixture(scope="module")
def corpus() -> S.DocumentCorpus:
    return S.make_documents("kjv-verses", S.kjv_chapters(C.read_kjv_verses(bible_lines())),
                            list(C.KJV_GENRES))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def data(corpus: S.DocumentCorpus, cache: Path) -> S.SentenceData:
    return S.sentence_data(corpus, vocab_size=120, sentences=3, sentence_length=6, cache_dir=cache)


def test_split_sentences_gives_exact_substrings_in_order() -> None:
    text = ("Dr. Smith arrived at 3 p.m. on Monday. It cost $3.50, e.g. a coffee! "
            "\"Where are you going?\" she asked. Version 1.2 was out in Jan. 2020.")
    got = S.split_sentences(text)
    assert got == ["Dr. Smith arrived at 3 p.m. on Monday.", "It cost $3.50, e.g. a coffee!",
                   "\"Where are you going?\" she asked.", "Version 1.2 was out in Jan. 2020."]
    position = 0
    for sentence in got:  # each one is the text itself, found in order
        position = text.index(sentence, position) + len(sentence)
    assert S.split_sentences("") == []


def test_windows_keep_order_and_never_cross_a_document() -> None:
    lengths = torch.tensor([3, 7, 1, 8, 4, 0, 9])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    w = S.document_windows(offsets, 4)
    # Hand result: 7 -> starts 3, 6 (the last one ends at the document's end); 8 -> 11, 15;
    # 4 -> 19; 9 -> 23, 27, 28; documents of 3, 1 and 0 sentences give none.
    assert w[:, 0].tolist() == [3, 6, 11, 15, 19, 23, 27, 28]
    assert torch.equal(w.diff(dim=1), torch.ones(len(w), 3, dtype=torch.long))  # consecutive
    doc = torch.bucketize(w, offsets[1:], right=True)  # the document of each position
    assert (doc == doc[:, :1]).all()  # one document per window
    for d in range(len(lengths)):  # every sentence of a long enough document is in a window
        inside = set(range(int(offsets[d]), int(offsets[d + 1])))
        covered = set(w[doc[:, 0] == d].flatten().tolist())
        assert covered == (inside if lengths[d] >= 4 else set())
    assert S.document_windows(offsets, 10).shape == (0, 10)


def test_kjv_chapters_are_documents_in_canonical_order() -> None:
    verses = C.read_kjv_verses(bible_lines(chapters=2, verses=3))
    chapters = S.kjv_chapters(verses)
    assert len(chapters) == 2 * len(BOOKS)
    assert [s for d in chapters for s in d.sentences] == [text for _, text in verses]
    assert chapters[0].sentences[1].endswith("chapter1 verse2 of ge.")
    assert [C.KJV_GENRES[d.label] for d in chapters[::2]] == list(BOOKS.values())
    shuffled = verses[:2] + verses[3:4] + verses[2:3] + verses[4:]  # Ge1:3 after Ge2:1
    with pytest.raises(ConfigError, match="chapter Ge1 are not contiguous"):
        S.kjv_chapters(shuffled)


def test_no_document_is_in_two_splits(corpus: S.DocumentCorpus) -> None:
    assert len(corpus.train) + len(corpus.test) == 10 * len(BOOKS)
    assert len(corpus.test) >= 2
    assert all(d.key % 10 == 0 for d in corpus.test) and all(d.key % 10 for d in corpus.train)
    train, test = ({s for d in split for s in d.sentences} for split in (corpus.train,
                                                                          corpus.test))
    assert not train & test  # verses are unique here, so no verse sits in both splits
    assert [d.key for d in corpus.train] == sorted(d.key for d in corpus.train)


def test_pretraining_windows_are_consecutive_sentences_of_one_document(
    corpus: S.DocumentCorpus, data: S.SentenceData, cache: Path
) -> None:
    tok = Tok.get_tokenizer(C.TextCorpus("kjv-verses", [s for d in corpus.train for s in d.sentences],
                                       None, [], None, None, corpus.fingerprint), 120, cache)

    def encoded(sentences: list[str]) -> torch.Tensor:
        return P.pad_ids([e.ids for e in tok.encode_batch(sentences)], 6, 0)[0]

    expected = []
    for d in corpus.train:  # 7 verses, windows of 3: starts 0, 3 and 4 (ends at the last)
        ids = encoded(list(d.sentences))
        expected += [ids[0:3], ids[3:6], ids[4:7]]
    assert data.n_pretrain() == len(expected) == 3 * len(corpus.train)
    batch = data.pretrain_batch(torch.arange(data.n_pretrain()), torch.Generator(), aug=True)
    assert batch.shape == (data.n_pretrain(), 3, 6)
    assert torch.equal(batch, torch.stack(expected))
    assert data.spec.grid == (6,) and data.sentences == 3  # the encoder reads one sentence

    # Probes: every sentence alone, in sentence-hash order, labelled by its document's genre.
    probe = data.eval_split("train")
    sentences = [s for d in corpus.train for s in d.sentences]
    labels = {s: d.label for d in corpus.train for s in d.sentences}
    ordered = sorted(sentences, key=C.text_hash)
    assert torch.equal(probe.x, encoded(ordered))
    assert probe.y.tolist() == [labels[s] for s in ordered]
    assert torch.equal(data.raw_features(probe.x, probe.pad_mask).sum(1),
                       probe.pad_mask.sum(1).float())  # bag of words per verse

    # Documents for the next-sentence check and the held-out windows: whole test documents.
    docs = data.document_split(10)  # 10 sentences hold one 7-verse document: two are taken
    assert data.test_documents(10) == 2 and data.test_documents(None) == len(corpus.test)
    first_two = [s for d in corpus.test[:2] for s in d.sentences]
    assert torch.equal(docs.x, encoded(first_two))
    assert docs.y.tolist() == [0] * 7 + [1] * 7
    held = data.heldout_windows(14)
    assert held.shape == (6, 3, 6) and torch.equal(held[1], encoded(first_two[3:6]))


def test_tensors_come_from_the_cache_the_second_time(
    corpus: S.DocumentCorpus, data: S.SentenceData, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_encoding(*args: object) -> None:
        raise AssertionError("re-encoded despite a cached copy")

    monkeypatch.setattr(S, "encode_documents", no_encoding)
    again = S.sentence_data(corpus, vocab_size=120, sentences=4, sentence_length=6, cache_dir=cache)
    assert torch.equal(again.test_x, data.test_x) and again.sentences == 4  # windows re-cut
    assert again.fingerprint != data.fingerprint
    with pytest.raises(AssertionError, match="re-encoded"):  # another length: another entry
        S.sentence_data(corpus, vocab_size=120, sentences=3, sentence_length=5, cache_dir=cache)


def test_a_text_dir_file_is_a_document_of_its_sentences(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("First one. Second one?\nStill second.\n\nThird, new paragraph.")
    (folder / "b.txt").write_text("Only sentence here")
    (folder / "empty.txt").write_text("\n\n")
    docs = S.text_dir_documents(folder)
    assert [d.sentences for d in docs] == [
        ("First one.", "Second one?", "Still second.", "Third, new paragraph."),
        ("Only sentence here",),
        (),
    ]
    corpus = S.load_documents(f"text-dir:{folder}")
    assert corpus.classes is None and len(corpus.train) + len(corpus.test) == 2  # empty: none
    with pytest.raises(ConfigError, match=r"has [01] test document\(s\)|no train document"):
        S.load_sentence_data(f"text-dir:{folder}", sentences=2, cache_dir=tmp_path / "c")


def test_refusals_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="wordnet-glosses is not a sentence-level corpus "
                                          r"\(each gloss is a single sentence"):
        check_granularity("wordnet-glosses", "sentence")
    with pytest.raises(ConfigError, match="text datasets only, and 'digits' is image"):
        check_granularity("digits", "sentence")
    with pytest.raises(ConfigError, match="block_length: not used at granularity=sentence"):
        check_granularity("kjv-verses", "sentence", block_length=32)
    with pytest.raises(ConfigError, match="sentences, sentence_length: not used at "
                                          "granularity=token"):
        load_dataset("kjv-verses", sentences=4, sentence_length=8)
    with pytest.raises(ConfigError, match="granularity='para'"):
        RunConfig(granularity="para")
    with pytest.raises(ConfigError, match="wordnet-glosses is not a sentence-level corpus"):
        expand({"dataset": "wordnet-glosses", "granularity": "sentence"}, {"method": ["mae"]})
    card = load_card("wordnet-glosses")["sentences"]
    assert card["level"] is False and "single sentence" in card["refused"]


def test_cli_refuses_wordnet_sentences_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["run", "--methods", "mae", "--dataset", "wordnet-glosses", "--out", str(out),
                 "granularity=sentence"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a sentence-level corpus" in err and not out.exists()


def test_granularity_is_part_of_the_run_id_and_earlier_ids_stay() -> None:
    base = RunConfig()
    assert RunConfig(granularity="sentence").run_id != base.run_id
    assert RunConfig(granularity="sentence", sentences=8).run_id != RunConfig(
        granularity="sentence").run_id
    # Runs recorded before the sentence level keep their id: defaults are not hashed.
    old = {k: v for k, v in base.identity().items() if k not in RunConfig.HASHED_UNLESS_DEFAULT}
    blob = json.dumps(old, sort_keys=True, default=str).encode()
    assert base.run_id == hashlib.sha1(blob).hexdigest()[:12]


def test_real_kjv_chapters(tmp_path: Path) -> None:
    """On the real `bible -f` output: 1,189 chapters in canonical order, each in one split,
    the sizes the card states."""
    if shutil.which("bible") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("`bible` absent in CI: .ci/run installs bible-kjv")
        pytest.skip("`bible` absent: sudo apt-get install bible-kjv")
    verses = C.kjv_verses(None, tmp_path)
    chapters = S.kjv_chapters(verses)
    card = load_card("kjv-verses")["sentences"]
    assert len(chapters) == 1189 == card["n_documents"]
    assert [s for d in chapters for s in d.sentences] == [t for _, t in verses]
    assert chapters[0].sentences[0] == "In the beginning God created the heaven and the earth."
    corpus = S.load_documents("kjv-verses", None, tmp_path)
    assert (len(corpus.train), len(corpus.test)) == (card["n_train_documents"],
                                                     card["n_test_documents"])
    for split, name in ((corpus.train, "train"), (corpus.test, "test")):
        assert sum(len(d.sentences) for d in split) == card[f"n_{name}_sentences"]
        assert [sum(len(d.sentences) for d in split if d.label == k) for k in range(6)] == card[
            f"{name}_class_sentence_counts"]
    windows = {}
    for size in (8, 16):
        lengths = torch.tensor([len(d.sentences) for d in corpus.train])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        windows[size] = len(S.document_windows(offsets, size))
    assert windows == {8: card["n_train_windows_8"], 16: card["n_train_windows_16"]}


def test_card_states_the_sentence_defaults() -> None:
    card = load_card("kjv-verses")["sentences"]
    assert (card["sentences"], card["sentence_length"]) == (S.DEFAULT_SENTENCES,
                                                            S.DEFAULT_SENTENCE_LENGTH)


def test_demo_end_to_end_at_tiny_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make demo-sentences` at tiny size on a `bible -f`-style file: every row runs, each
    reports its metrics, and the report names the level and keeps the pretext task apart."""
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    bible = tmp_path / "bible.txt"
    bible.write_text("\n".join(bible_lines()) + "\n")
    out = tmp_path / "out"
    rows = ["qbheat", "mae", "interp", "random-init", "raw-input"]
    assert main([
        "run", "--methods", ",".join(rows), "--dataset", "kjv-verses", "--data-root", str(bible),
        "--out", str(out), "--epochs", "1", "--batch-size", "16", "--train-limit", "32",
        "--eval-train-limit", "200", "--eval-test-limit", "30", "--no-progress",
        "granularity=sentence", "sentences=4", "sentence_length=8", "vocab_size=150",
        "decoder_dim=32", "decoder_depth=1", "decoder_heads=2", "probe_steps=20", "device=cpu",
    ]) == 0
    capsys.readouterr()
    probes = {"linear_top1", "linear_l2", "knn_top1", "next_sentence_top1",
              "next_sentence_same_doc_top1", "previous_sentence_same_doc_top1"}
    summaries = {s["method"]: s for s in map(store.read_json, out.glob("*/summary.json"))}
    assert set(summaries) == set(rows)
    by_distance = {"recon_loss_d1", "recon_loss_d2", "recon_loss_d3plus"}  # 4 slots, 1 visible
    for method, s in summaries.items():
        pretext = {"recon_loss", "perplexity", "masked_bow_recall", "pretrain_loss", *by_distance,
                   "recon_loss_fill_const",  # what the fill contributes (bench.eval.contribution)
                   *(HEAT_1D | {"recon_loss_fill_copy"} if method == "qbheat" else ()),
                   *(INTERP_SHARES if method == "interp" else ())}
        expected = probes | (set() if method in ("random-init", "raw-input") else pretext)
        linpred = {m for m in s["metrics"] if m.startswith("linpred_")}
        assert s["status"] == "ok" and set(s["metrics"]) - linpred == expected, method
        assert {"linpred_r2_d1", "linpred_identity_r2_d1", "linpred_mean_r2_d1"} <= linpred
        assert 0.0 <= s["metrics"]["next_sentence_top1"] <= 1.0
    config = store.read_json(next(out.glob("*/config.json")))
    assert (config["granularity"], config["sentences"], config["sentence_length"]) == (
        "sentence", 4, 8)
    report = (out / "report" / "report.md").read_text()
    assert "## kjv-verses · vit-micro · sentence level" in report
    main_header = next(line for line in report.splitlines() if line.startswith("| row | linear"))
    assert "next-sentence top-1 %" in main_header
    task = report[report.index("sentence level: pretext-task metrics"):]
    assert "masked-sentence word recall %" in task.splitlines()[2]
    assert "masked_bow_recall" in task and "not comparable across methods" in task
    assert "| granularity | sentence |" in report


def test_text_dir_at_the_sentence_level_pretrains_and_checks_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlabelled files: no probes, but the next-sentence check and the masked-sentence
    metrics, which need documents only."""
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "texts"
    folder.mkdir()
    animals = ("cat", "dog", "owl", "fox", "elk", "ram")
    for i in range(30):
        lines = [f"The {a} of tale {i} ran {k + 1} miles." for k, a in enumerate(animals)]
        (folder / f"{i:02d}.txt").write_text(" ".join(lines[:3]) + "\n\n" + " ".join(lines[3:]))
    (cfg,) = expand({
        "dataset": f"text-dir:{folder}", "granularity": "sentence", "sentences": 3,
        "sentence_length": 8, "vocab_size": 150, "epochs": 1, "batch_size": 8, "train_limit": 16,
        "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "device": "cpu",
    }, {"method": ["qbheat"]})
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "ok"
    # 3 slots, QB-Heat's 1 visible sentence at an end: the others 1 and 2 slots away.
    linpred = {m for m in summary["metrics"] if m.startswith("linpred_")}
    assert "linpred_r2_d1" in linpred and "linpred_heat_r2_d1" not in linpred
    assert set(summary["metrics"]) - linpred == {"next_sentence_top1", "next_sentence_same_doc_top1",
                                                 "previous_sentence_same_doc_top1", "recon_loss", "perplexity",
                                       "masked_bow_recall", "pretrain_loss", "recon_loss_d1",
                                       "recon_loss_d2", *HEAT_1D, "recon_loss_fill_const",
                                       "recon_loss_fill_copy"}
