"""Text corpora, each split by a hash of every text (see `SPLIT_RULE`), so the split never
depends on file order and duplicate texts always share a split:

- `wordnet-glosses`: WordNet 3.0 synset glosses labelled by lexicographer file (45 classes).
- `kjv-verses`: King James Bible verses labelled by the genre of their book (6 classes).
- `text-dir:PATH`: unlabelled `.txt` files under PATH, one document per non-empty paragraph.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from bench.core import store
from bench.core.errors import ConfigError, DataNotFoundError, UnknownDatasetError
from bench.data.fingerprint import in_test_split, split_fingerprint, stable_hash

SPLIT_RULE = (
    "test if int.from_bytes(blake2b(text.encode('utf-8'), digest_size=8).digest(), 'big') "
    "% 10 == 0, else train"
)
TEXT_DIR_PREFIX = "text-dir:"
CORPUS_NAMES = ("wordnet-glosses", "kjv-verses", TEXT_DIR_PREFIX + "PATH")

# ---------------------------------------------------------------------------------------------
# Corpus container and split


@dataclass
class TextCorpus:
    """A split text corpus; labels and classes are None for unlabelled (pretraining) corpora."""

    name: str
    train_texts: list[str]
    train_labels: list[int] | None
    test_texts: list[str]
    test_labels: list[int] | None
    classes: list[str] | None
    fingerprint: str  # stable hash of the content and split rule; keys tokenizer caches


def text_hash(text: str) -> int:
    """Stable 64-bit hash of a text: decides its split and its rank for `limit`."""
    return stable_hash(text)


def _first_by_hash(indices: list[int], hashes: list[int], n: int) -> list[int]:
    """The n indices whose texts hash lowest (ties: first index), in their original order."""
    return sorted(sorted(indices, key=hashes.__getitem__)[:n])  # indices ascend; sort is stable


def _fingerprint(
    train: list[str],
    train_y: list[int] | None,
    test: list[str],
    test_y: list[int] | None,
    classes: list[str] | None,
) -> str:
    def records(texts: list[str], labels: list[int] | None) -> Iterator[str]:
        for i, text in enumerate(texts):
            yield f"{text}\x1f{'' if labels is None else labels[i]}\x1e"

    return split_fingerprint(SPLIT_RULE, classes, (records(train, train_y), records(test, test_y)))


def make_corpus(
    name: str,
    texts: list[str],
    labels: list[int] | None,
    classes: list[str] | None,
    limit: int | None = None,
) -> TextCorpus:
    """Split documents by `SPLIT_RULE`; `limit` keeps the `limit` lowest-hash train texts and a
    proportional number of test texts, so small subsets are deterministic and nested."""
    hashes = [text_hash(t) for t in texts]
    train_idx = [i for i, h in enumerate(hashes) if not in_test_split(h)]
    test_idx = [i for i, h in enumerate(hashes) if in_test_split(h)]
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"limit must be a positive integer, got {limit}")
        if limit < len(train_idx):
            n_test = round(limit * len(test_idx) / len(train_idx))
            train_idx = _first_by_hash(train_idx, hashes, limit)
            test_idx = _first_by_hash(test_idx, hashes, n_test)
    train, test = [texts[i] for i in train_idx], [texts[i] for i in test_idx]
    train_y = None if labels is None else [labels[i] for i in train_idx]
    test_y = None if labels is None else [labels[i] for i in test_idx]
    return TextCorpus(
        name,
        train,
        train_y,
        test,
        test_y,
        classes,
        _fingerprint(train, train_y, test, test_y, classes),
    )


def check_splits(corpus: TextCorpus) -> None:
    """Both splits hold a text, else a one-line error saying why (before any tokenizing): a
    corpus of one text (a text-dir file without blank lines is one paragraph, so one text)
    has nothing to evaluate on, whatever eval_test_limit says."""
    n_train, n_test = len(corpus.train_texts), len(corpus.test_texts)
    if n_train and n_test:
        return
    full, empty = ("train", "test") if n_train else ("test", "train")
    texts = "its only text" if n_train + n_test == 1 else f"all {n_train + n_test} of its texts"
    hint = ("; text-dir reads one text per paragraph (text between blank lines): add "
            "paragraphs or files" if corpus.name.startswith(TEXT_DIR_PREFIX) else "")
    raise DataNotFoundError(
        f"{corpus.name}: {texts} went to the {full} split, so the "
        f"{empty} split is empty (a text goes to test when a hash of it is 0 mod 10: about 1 "
        f"in 10){hint}")


# ---------------------------------------------------------------------------------------------
# WordNet glosses

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_POS = ("noun", "verb", "adj", "adv")
# Lexicographer file names by number, as in `man 5 lexnames` (WordNet 3.0).
# fmt: off
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)
# fmt: on


def read_wordnet_glosses(folder: Path) -> tuple[list[str], list[int]]:
    """Glosses of every synset in data.{noun,verb,adj,adv}, labelled by lex_filenum (field 2)."""
    paths = [folder / f"data.{pos}" for pos in WORDNET_POS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"WordNet files {', '.join(missing)} not found in {folder}; run "
            "`sudo apt-get install wordnet-base` or set data_root to a folder with data.noun etc."
        )
    texts: list[str] = []
    labels: list[int] = []
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("  "):  # license header
                    continue
                head, bar, gloss = line.partition(" | ")
                fields = head.split(" ", 2)
                if not bar or len(fields) < 3 or not fields[1].isdigit():
                    raise ConfigError(f"{path}:{lineno}: not a WordNet data line")
                label = int(fields[1])
                if label >= len(LEXNAMES):
                    raise ConfigError(f"{path}:{lineno}: lex_filenum {label} is not in lexnames")
                texts.append(gloss.strip())
                labels.append(label)
    return texts, labels


# ---------------------------------------------------------------------------------------------
# King James Bible verses

KJV_RANGE = "gen1:1-rev22:21"
KJV_GENRES = ("law", "history", "poetry", "prophets", "gospels", "epistles")
# (abbreviation printed by `bible -f`, full name), in canonical order.
KJV_BOOKS = tuple(
    tuple(pair.split("="))
    for pair in (
        "Ge=Genesis Exo=Exodus Lev=Leviticus Num=Numbers Deu=Deuteronomy Josh=Joshua "
        "Jdgs=Judges Ruth=Ruth 1Sm=1Samuel 2Sm=2Samuel 1Ki=1Kings 2Ki=2Kings 1Chr=1Chronicles "
        "2Chr=2Chronicles Ezra=Ezra Neh=Nehemiah Est=Esther Job=Job Psa=Psalms Prv=Proverbs "
        "Eccl=Ecclesiastes SSol=SongofSolomon Isa=Isaiah Jer=Jeremiah Lam=Lamentations "
        "Eze=Ezekiel Dan=Daniel Hos=Hosea Joel=Joel Amos=Amos Obad=Obadiah Jonah=Jonah "
        "Mic=Micah Nahum=Nahum Hab=Habakkuk Zep=Zephaniah Hag=Haggai Zec=Zechariah "
        "Mal=Malachi Mat=Matthew Mark=Mark Luke=Luke John=John Acts=Acts Rom=Romans "
        "1Cor=1Corinthians 2Cor=2Corinthians Gal=Galatians Eph=Ephesians Phi=Philippians "
        "Col=Colossians 1Th=1Thessalonians 2Th=2Thessalonians 1Tim=1Timothy 2Tim=2Timothy "
        "Titus=Titus Phmn=Philemon Heb=Hebrews Jas=James 1Pet=1Peter 2Pet=2Peter 1Jn=1John "
        "2Jn=2John 3Jn=3John Jude=Jude Rev=Revelation"
    ).split()
)
# Genre of each book index: Genesis-Deuteronomy law, Joshua-Esther + Acts history, Job-Song of
# Solomon poetry, Isaiah-Malachi + Revelation prophets, Matthew-John gospels, Romans-Jude epistles.
_KJV_BOOK_GENRE = (
    ["law"] * 5
    + ["history"] * 12
    + ["poetry"] * 5
    + ["prophets"] * 17
    + ["gospels"] * 4
    + ["history"]
    + ["epistles"] * 21
    + ["prophets"]
)
_KJV_NAMES = {name.lower(): i for i, names in enumerate(KJV_BOOKS) for name in names}
_KJV_REF = re.compile(r"^(\d?\s*[A-Za-z][A-Za-z ]*?)\s*(\d+):(\d+)$")
_KJV_LINE = re.compile(r"^(\d?[A-Za-z]+\d+:\d+) (.*)$")


def _kjv_book_index(book: str) -> int:
    """Index of a book given its `bible` abbreviation, full name or a unique prefix of either."""
    key = book.replace(" ", "").lower()
    if key in _KJV_NAMES:
        return _KJV_NAMES[key]
    hits = {i for name, i in _KJV_NAMES.items() if name.startswith(key)}
    if len(hits) != 1:
        raise ConfigError(f"{book!r} names {'no' if not hits else 'more than one'} KJV book")
    return hits.pop()


def kjv_genre(reference: str) -> str:
    """Genre of a verse reference such as 'Ge1:1' (as printed by `bible`), 'gen1:1', 'ps 23:1'."""
    match = _KJV_REF.match(reference.strip())
    if not match:
        raise ConfigError(f"{reference!r} is not a verse reference like 'gen1:1'")
    return _KJV_BOOK_GENRE[_kjv_book_index(match[1])]


def read_kjv_verses(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(reference, text) of each non-empty `bible -f` output line, e.g. 'Ge1:1 In the beginning'."""
    verses = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _KJV_LINE.match(line.strip())
        if not match:
            raise ConfigError(f"line {lineno} is not `bible -f` output (REF TEXT): {line[:60]!r}")
        verses.append((match[1], match[2]))
    return verses


def _kjv_lines(root: str | None, cache_dir: Path | None) -> list[str]:
    """`bible -f` output from root, else from the cache, else from the program (then cached)."""
    hint = f"the output of `bible -f {KJV_RANGE}`"
    if root is not None:
        path = Path(root)
        if not path.is_file():
            raise DataNotFoundError(
                f"KJV file {path} not found; set data_root to a file with {hint}"
            )
        return path.read_text(encoding="utf-8").splitlines()
    cached = cache_dir / "kjv-bible-f.txt" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return cached.read_text(encoding="utf-8").splitlines()
    program = shutil.which("bible")
    if program is None:
        raise DataNotFoundError(
            "KJV text not found: the `bible` program is missing; run "
            f"`sudo apt-get install bible-kjv` or set data_root to a file with {hint}"
        )
    out = subprocess.run(
        [program, "-f", KJV_RANGE], capture_output=True, text=True, encoding="utf-8", check=True
    ).stdout
    if cached is not None:
        store.write_once(cached, out)
    return out.splitlines()


def kjv_verses(root: str | None, cache_dir: Path | None) -> list[tuple[str, str]]:
    """(reference, text) of every verse in canonical order (see `_kjv_lines` for `root`)."""
    return read_kjv_verses(_kjv_lines(root, cache_dir))


# ---------------------------------------------------------------------------------------------
# A user's folder of .txt files


def text_dir_folder(name: str, root: str | None) -> Path:
    """The folder `text-dir:PATH` names; data_root must be unset (the path is in the name)."""
    if root is not None:
        raise ConfigError(f"{name}: data_root is not used by text-dir; the path is in the name")
    folder = name.removeprefix(TEXT_DIR_PREFIX)
    if not folder:
        raise ConfigError(f"{name!r}: name the folder, as in text-dir:/path/to/texts")
    return Path(folder).expanduser()


def text_files(folder: Path) -> Iterator[tuple[Path, str]]:
    """(path, content) of every .txt file under folder, in sorted path order; a missing folder
    or a file that is not UTF-8 raises a one-line error."""
    if not folder.is_dir():
        raise DataNotFoundError(
            f"text folder {folder} not found; use text-dir:PATH naming a folder of .txt files"
        )
    for path in sorted(folder.rglob("*.txt")):
        try:
            yield path, path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path} is not UTF-8 text ({err.reason} at byte {err.start})"
            ) from None


def paragraphs(content: str) -> list[str]:
    """The non-empty paragraphs of a text (blank-line separated, inner newlines joined by
    spaces)."""
    out = []
    for para in re.split(r"\n\s*\n", content):
        doc = " ".join(line.strip() for line in para.splitlines() if line.strip())
        if doc:
            out.append(doc)
    return out


def read_text_dir(folder: Path) -> list[str]:
    """One document per paragraph of every .txt file under folder, files in sorted path order."""
    docs = [para for _, content in text_files(folder) for para in paragraphs(content)]
    if not docs:
        raise DataNotFoundError(
            f"no non-empty .txt file under {folder}; add UTF-8 .txt files there"
        )
    return docs


def hash_ordered(corpus: TextCorpus) -> TextCorpus:
    """The same corpus with each split sorted by text hash (the ranking `limit` uses), so the
    first N texts of a split are a deterministic random sample, nested in N; file order would
    make them one class (WordNet's files are sorted by part of speech)."""

    def order(texts: list[str], labels: list[int] | None) -> tuple[list[str], list[int] | None]:
        idx = sorted(range(len(texts)), key=lambda i: text_hash(texts[i]))
        return [texts[i] for i in idx], None if labels is None else [labels[i] for i in idx]

    train, train_y = order(corpus.train_texts, corpus.train_labels)
    test, test_y = order(corpus.test_texts, corpus.test_labels)
    return replace(
        corpus, train_texts=train, train_labels=train_y, test_texts=test, test_labels=test_y
    )


# ---------------------------------------------------------------------------------------------
# Entry point


def load_corpus(
    name: str, root: str | None = None, cache_dir: Path | None = None, limit: int | None = None
) -> TextCorpus:
    """Load and split a corpus by name (see `CORPUS_NAMES`).

    root: the wordnet folder holding data.noun etc., or for kjv a file with the output of
    `bible -f gen1:1-rev22:21`. cache_dir: where the `bible` output is kept so later loads (and
    machines without the bible-kjv package) need not run it. limit: see `make_corpus`.
    """
    if name == "wordnet-glosses":
        texts, labels = read_wordnet_glosses(Path(root) if root else WORDNET_DIR)
        return make_corpus(name, texts, labels, list(LEXNAMES), limit)
    if name == "kjv-verses":
        verses = kjv_verses(root, cache_dir)
        labels = [KJV_GENRES.index(kjv_genre(ref)) for ref, _ in verses]
        return make_corpus(name, [text for _, text in verses], labels, list(KJV_GENRES), limit)
    if name.startswith(TEXT_DIR_PREFIX):
        return make_corpus(name, read_text_dir(text_dir_folder(name, root)), None, None, limit)
    raise UnknownDatasetError(name, list(CORPUS_NAMES))
