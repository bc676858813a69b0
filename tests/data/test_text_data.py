"""Text data layer: real-corpus parsers, split, tokenizer cache, packing, padding, bag-of-words."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bench.core.errors import ConfigError, DataNotFoundError, UnknownDatasetError
from bench.data import corpora as C
from bench.data import packing as P
from bench.data import tokenizer as Tok
from bench.data.cards import load_card
from bench.data.fingerprint import in_test_split
from tests.helpers import require, require_bible, require_wordnet, tiny_text_corpus


@pytest.fixture
def bible() -> None:
    require_bible()


needs_bible = pytest.mark.usefixtures("bible")


@pytest.fixture(scope="module")
def wordnet_raw() -> tuple[list[str], list[int]]:
    require_wordnet()
    return C.read_wordnet_glosses(C.WORDNET_DIR)


@pytest.fixture(scope="module")
def wordnet(wordnet_raw: tuple[list[str], list[int]]) -> C.TextCorpus:
    """The corpus through the public entry point (wordnet_raw supplies the skip)."""
    return C.load_corpus("wordnet-glosses")


@pytest.fixture(scope="module")
def tiny() -> C.TextCorpus:
    """The in-repo corpus the tokenizer tests use (no Debian package needed)."""
    return tiny_text_corpus()


def _assert_card_matches(corpus: C.TextCorpus) -> None:
    """The dataset card states the measured sizes, classes and split rule."""
    card = load_card(corpus.name)
    assert card["kind"] == "text"
    assert (card["n_train"], card["n_test"]) == (len(corpus.train_texts), len(corpus.test_texts))
    assert card["classes"] == corpus.classes and card["n_classes"] == len(card["classes"])
    labels = corpus.train_labels or []
    assert card["train_class_counts"] == [labels.count(i) for i in range(card["n_classes"])]
    assert C.SPLIT_RULE in card["split"]
    assert card["tokenizer"]["vocab_size"] == Tok.DEFAULT_VOCAB_SIZE


# --- WordNet -----------------------------------------------------------------------------------


def test_wordnet_parser_reads_every_synset_gloss(wordnet_raw: tuple[list[str], list[int]]) -> None:
    texts, labels = wordnet_raw
    assert len(texts) == 117659  # synsets of WordNet 3.0: 82115 + 13767 + 18156 + 3621
    assert set(labels) == set(range(45))
    first = texts.index(
        "that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)"
    )
    assert C.LEXNAMES[labels[first]] == "noun.Tops"  # synset 00001740 'entity'
    assert all(t and " | " not in t and t == t.strip() for t in texts)


def test_lexnames_are_the_45_standard_names() -> None:
    assert len(C.LEXNAMES) == len(set(C.LEXNAMES)) == 45
    assert C.LEXNAMES[:4] == ("adj.all", "adj.pert", "adv.all", "noun.Tops")
    assert C.LEXNAMES[18] == "noun.person" and C.LEXNAMES[44] == "adj.ppl"


def test_lexnames_match_man_page() -> None:
    require(shutil.which("man") is not None, "`man` absent: sudo apt-get install man-db")
    out = subprocess.run(
        ["man", "-P", "cat", "5", "lexnames"],
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "200"},
    ).stdout
    table = dict(re.findall(r"^\s*(\d\d)\s+([a-z]+\.[A-Za-z]+)\s", out, re.MULTILINE))
    require(bool(table), "man page lexnames(5) absent: sudo apt-get install wordnet-base")
    assert [table[f"{i:02d}"] for i in range(len(table))] == list(C.LEXNAMES)


def test_wordnet_corpus_sizes_and_classes(wordnet: C.TextCorpus) -> None:
    assert (len(wordnet.train_texts), len(wordnet.test_texts)) == (105948, 11711)
    assert wordnet.classes == list(C.LEXNAMES)
    assert wordnet.train_labels is not None and wordnet.test_labels is not None
    assert len(wordnet.train_labels) == len(wordnet.train_texts)
    assert set(wordnet.test_labels) == set(range(45))
    _assert_card_matches(wordnet)


# --- KJV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "genre"),
    [
        ("gen1:1", "law"),
        ("acts1:1", "history"),
        ("rev22:21", "prophets"),
        ("john3:16", "gospels"),
        ("jude1:1", "epistles"),
        ("ps23:1", "poetry"),
        ("Ge1:1", "law"),  # as printed by `bible`
        ("Est10:3", "history"),
        ("Song of Solomon 2:1", "poetry"),
        ("Mal4:6", "prophets"),
        ("1 John 1:1", "epistles"),
        ("judges1:1", "history"),
    ],
)
def test_kjv_genre_of_known_references(ref: str, genre: str) -> None:
    assert C.kjv_genre(ref) == genre


def test_kjv_genre_rejects_ambiguous_or_bad_references() -> None:
    for bad in ("j1:1", "xyz1:1", "gen"):
        with pytest.raises(ConfigError):
            C.kjv_genre(bad)
    assert len(C.KJV_BOOKS) == 66


@needs_bible
def test_kjv_parser_on_real_bible_output() -> None:
    out = subprocess.run(
        ["bible", "-f", C.KJV_RANGE], capture_output=True, text=True, check=True
    ).stdout
    verses = C.read_kjv_verses(out.splitlines())
    assert len(verses) == 31102
    assert verses[0] == ("Ge1:1", "In the beginning God created the heaven and the earth.")
    assert verses[-1][0] == "Rev22:21" and C.kjv_genre(verses[-1][0]) == "prophets"
    genres = [C.kjv_genre(ref) for ref, _ in verses]
    assert genres.count("gospels") == 1071 + 678 + 1151 + 879  # Matthew, Mark, Luke, John


@needs_bible
def test_kjv_corpus_caches_bible_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = C.load_corpus("kjv-verses", cache_dir=tmp_path)
    assert (len(full.train_texts), len(full.test_texts)) == (28000, 3102)
    assert full.classes == list(C.KJV_GENRES)
    _assert_card_matches(full)
    assert (tmp_path / "kjv-bible-f.txt").is_file()
    monkeypatch.setattr(shutil, "which", lambda _: None)  # as on a node without bible-kjv
    again = C.load_corpus("kjv-verses", cache_dir=tmp_path)
    assert again.fingerprint == full.fingerprint
    with pytest.raises(DataNotFoundError, match="apt-get install bible-kjv"):
        C.load_corpus("kjv-verses", cache_dir=tmp_path / "empty")


def test_kjv_root_file(tmp_path: Path) -> None:
    path = tmp_path / "kjv.txt"
    path.write_text("Ge1:1 In the beginning.\n\nJohn3:16 For God so loved.\nJude1:1 Jude.\n")
    corpus = C.load_corpus("kjv-verses", root=str(path))
    texts = corpus.train_texts + corpus.test_texts
    labels = (corpus.train_labels or []) + (corpus.test_labels or [])
    named = {text: C.KJV_GENRES[label] for text, label in zip(texts, labels, strict=True)}
    assert named == {
        "In the beginning.": "law",
        "For God so loved.": "gospels",
        "Jude.": "epistles",
    }
    path.write_text("Genesis chapter one\n")
    with pytest.raises(ConfigError, match="line 1"):
        C.load_corpus("kjv-verses", root=str(path))


# --- Split -------------------------------------------------------------------------------------


def test_split_is_deterministic_and_disjoint(
    wordnet: C.TextCorpus, wordnet_raw: tuple[list[str], list[int]]
) -> None:
    assert not set(wordnet.train_texts) & set(wordnet.test_texts)
    assert all(in_test_split(C.text_hash(t)) for t in wordnet.test_texts)
    assert not any(in_test_split(C.text_hash(t)) for t in wordnet.train_texts[:5000])
    again = C.make_corpus("wordnet-glosses", *wordnet_raw, list(C.LEXNAMES))
    assert again.fingerprint == wordnet.fingerprint
    assert again.test_texts == wordnet.test_texts


def test_duplicates_share_a_split_and_order_does_not_matter() -> None:
    texts = [f"document number {i}" for i in range(300)]
    texts += texts[:50]
    a = C.make_corpus("x", texts, list(range(len(texts))), None)
    b = C.make_corpus("x", texts[::-1], list(range(len(texts))), None)
    assert not set(a.train_texts) & set(a.test_texts)
    assert set(a.test_texts) == set(b.test_texts) and 10 < len(a.test_texts) < 60


def test_limit_is_deterministic_nested_and_proportional(
    wordnet_raw: tuple[list[str], list[int]],
) -> None:
    small = C.make_corpus("wordnet-glosses", *wordnet_raw, list(C.LEXNAMES), limit=200)
    big = C.make_corpus("wordnet-glosses", *wordnet_raw, list(C.LEXNAMES), limit=500)
    assert len(small.train_texts) == 200 and len(big.train_texts) == 500
    assert len(big.test_texts) == round(500 * 11711 / 105948)
    assert set(small.train_texts) <= set(big.train_texts)
    assert small.fingerprint != big.fingerprint
    with pytest.raises(ConfigError):
        C.make_corpus("wordnet-glosses", *wordnet_raw, list(C.LEXNAMES), limit=0)


# --- Tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_special_ids(tiny: C.TextCorpus) -> None:
    tok = Tok.get_tokenizer(tiny, vocab_size=120)
    assert Tok.special_ids(tok) == Tok.SpecialIds(pad=0, unk=1, mask=2, sep=3)
    assert 4 < tok.get_vocab_size() <= 120
    for text in ("Apple pear", "RED horse grey goat", "plum fig n7"):
        assert tok.decode(tok.encode(text).ids) == text.lower()
    assert Tok.UNK not in tok.encode("apple pear").tokens  # words it was trained on


def test_tokenizer_cache_hit_does_not_retrain(
    tiny: C.TextCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Tok.get_tokenizer(tiny, vocab_size=100, cache_dir=tmp_path)
    path = Tok.tokenizer_path(tiny, 100, tmp_path)
    stamp = path.stat().st_mtime_ns

    def fail(*_: object) -> None:
        raise AssertionError("retrained despite a cached tokenizer")

    monkeypatch.setattr(Tok, "_train_tokenizer", fail)
    second = Tok.get_tokenizer(tiny, vocab_size=100, cache_dir=tmp_path)
    assert second.to_str() == first.to_str()
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no leftover temporary file


# --- Tensors -----------------------------------------------------------------------------------


def test_pack_blocks_hand_case() -> None:
    blocks = P.pack_blocks([[1, 2, 3], [4, 5], [], [6, 7, 8, 9]], length=4, sep_id=99)
    # stream: 1 2 3 99 4 5 99 6 7 8 9 -> two full blocks, partial [7 8 9] dropped
    assert blocks.dtype == torch.long
    assert blocks.tolist() == [[1, 2, 3, 99], [4, 5, 99, 6]]
    exact = P.pack_blocks([[1, 2], [3]], length=2, sep_id=0)  # stream 1 2 0 3
    assert exact.tolist() == [[1, 2], [0, 3]]
    assert P.pack_blocks([[1, 2]], length=3, sep_id=0).shape == (0, 3)
    assert P.pack_blocks([], length=3, sep_id=0).shape == (0, 3)
    with pytest.raises(ConfigError):
        P.pack_blocks([[1]], length=0, sep_id=0)


def test_padded_ids_truncate_pad_and_mask(tiny: C.TextCorpus) -> None:
    tok = Tok.get_tokenizer(tiny, vocab_size=100)
    texts = ["red blue", "", "apple pear plum fig horse cow goat sheep red blue green"]
    ids, lengths = P.pad_ids([e.ids for e in tok.encode_batch(texts)], 6, 0)
    mask = P.real_positions(lengths, 6)
    assert ids.shape == mask.shape == (3, 6)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    lengths = [len(tok.encode(t).ids) for t in texts]
    assert mask.sum(1).tolist() == [min(n, 6) for n in lengths]
    assert (ids[~mask] == 0).all() and (ids[mask] != 0).all()
    assert ids[2].tolist() == tok.encode(texts[2]).ids[:6]
    assert mask[0].tolist() == [True, True, False, False, False, False]


def test_bag_of_words_ignores_padding() -> None:
    ids = torch.tensor([[5, 5, 2, 7], [1, 0, 0, 0]])  # row 0: last slot padded with a stale id
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    bow = P.bag_of_words(ids, mask, vocab_size=8)
    assert bow.dtype == torch.float32 and bow.shape == (2, 8)
    assert bow[0].tolist() == [0, 0, 1, 0, 0, 2, 0, 0]
    assert bow[1].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]


# --- text-dir and errors -----------------------------------------------------------------------


def test_text_dir_one_document_per_paragraph(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("First line\n  second line\n\n \n\nNext paragraph\n")
    (tmp_path / "sub" / "b.txt").write_text("Deep file")
    (tmp_path / "notes.md").write_text("ignored")
    corpus = C.load_corpus(f"text-dir:{tmp_path}")
    assert sorted(corpus.train_texts + corpus.test_texts) == [
        "Deep file",
        "First line second line",
        "Next paragraph",
    ]
    assert corpus.train_labels is None and corpus.test_labels is None and corpus.classes is None
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ConfigError, match="bad.txt"):
        C.load_corpus(f"text-dir:{tmp_path}")
    with pytest.raises(ConfigError):
        C.load_corpus(f"text-dir:{tmp_path}", root="elsewhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="txt"):
        C.load_corpus(f"text-dir:{tmp_path / 'empty'}")


def test_missing_files_raise_helpful_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="apt-get install wordnet-base.*data_root") as err:
        C.load_corpus("wordnet-glosses", root=str(tmp_path))
    assert isinstance(err.value, FileNotFoundError) and "\n" not in str(err.value)
    with pytest.raises(DataNotFoundError, match="bible -f gen1:1-rev22:21"):
        C.load_corpus("kjv-verses", root=str(tmp_path / "kjv.txt"))
    with pytest.raises(DataNotFoundError, match="text-dir:PATH"):
        C.load_corpus(f"text-dir:{tmp_path / 'nowhere'}")
    with pytest.raises(UnknownDatasetError):
        C.load_corpus("imdb")


def test_the_split_and_fingerprint_hashes_keep_their_values():
    """Splits, orders and recorded data fingerprints come from bench.data.fingerprint: these
    values are what every earlier run used (a change would move texts between splits and
    make old and new runs incomparable), pinned from before the hashes were merged there."""
    from bench.data import corpora as C
    from bench.data import hf, streaming
    from bench.data import sentences as S
    from bench.data.fingerprint import stable_hash

    assert C.text_hash("In the beginning") == 9797224272371089374
    assert C._fingerprint(["a", "b"], [0, 1], ["c"], [1], ["x", "y"]) == \
        "7ad760a4b07fd18824ec26df7ac3ffa4"
    assert C._fingerprint(["a"], None, ["c"], None, None) == "1527d0234991a774597f81922c821e61"
    assert hf._row_hash(17) == 2322042198017538996
    assert streaming._stable_order(["b/1.png", "a/2.png", "c/3.png", "a/1.png"]) == [3, 0, 2, 1]
    docs = [S.Document((f"d{i} a", f"d{i} b"), i % 2) for i in range(30)]
    assert S.make_documents("n", docs, ["p", "q"]).fingerprint == "e2c77a98d7dc2e50094abab54bf31e2a"
    unlabelled = [S.Document((f"d{i}",)) for i in range(20)]
    assert S.make_documents("n", unlabelled, None).fingerprint == "6183ebe16c57054a10a3c13408c97d47"
    assert f"{stable_hash(chr(10).join(['a', 'b'])):016x}" == "a76de9f2d561975f"


def test_a_one_paragraph_text_dir_says_the_test_split_is_empty(tmp_path: Path) -> None:
    """A file without blank lines is one paragraph, so one text, and all of it goes to one
    split. This used to tokenize it (7.5 GB for 50 MB) and then ask to raise
    eval_test_limit; now it is a one-line error before any tokenizing, saying why."""
    from bench.data.text import text_data

    (tmp_path / "one.txt").write_text("word " * 5000 + "\n")
    corpus = C.load_corpus(f"text-dir:{tmp_path}")
    assert (len(corpus.train_texts), len(corpus.test_texts)) == (1, 0)  # by its hash
    with pytest.raises(DataNotFoundError, match="its only text went to the train split, so "
                       "the test split is empty .*add paragraphs or files"):
        text_data(corpus, vocab_size=50, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # refused before a tokenizer was trained


def test_a_long_text_is_encoded_in_pieces_with_the_same_ids(monkeypatch) -> None:
    """A text longer than PIECE_CHARS is encoded piece by piece, cut at spaces (memory stays
    bounded): the ids equal those of the whole text, and the pieces rejoin to it."""
    corpus = tiny_text_corpus()
    tok = Tok.get_tokenizer(corpus, 60)
    long = " ".join(corpus.train_texts)
    (whole,) = Tok.tokenize(tok, [long], "whole")
    monkeypatch.setattr(Tok, "PIECE_CHARS", 50)
    assert len(Tok.pieces(long)) > 100 and "".join(Tok.pieces(long)) == long
    assert all(len(p) <= 50 for p in Tok.pieces(long))
    cut, short = Tok.tokenize(tok, [long, corpus.train_texts[0]], "pieces")
    assert list(cut) == list(whole)
    assert short == tok.encode(corpus.train_texts[0]).ids
    assert Tok.pieces("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]  # no space: cut anyway
