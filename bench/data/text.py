"""Text corpora, WordPiece tokenizers, block packing, padded encoding, and `TextData`: the
data protocol the trainer uses (as `ImageData`), with its tensors cached between runs.

Corpora:
- `wordnet-glosses`: WordNet 3.0 synset glosses labelled by lexicographer file (45 classes).
- `kjv-verses`: King James Bible verses labelled by the genre of their book (6 classes).
- `text-dir:PATH`: unlabelled `.txt` files under PATH, one document per non-empty paragraph.

Every corpus is split by a hash of each text (see `SPLIT_RULE`), so the split never depends on
file order and duplicate texts always share a split.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor

from bench import progress, store
from bench.data.cache import cache_root
from bench.data.images import EvalSplit
from bench.errors import ConfigError, DataNotFoundError, UnknownDatasetError
from bench.models.encoders import DataSpec

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
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def is_test(text: str) -> bool:
    """The split rule (`SPLIT_RULE`, applied in `make_corpus`): ~10 % of distinct texts are test."""
    return text_hash(text) % 10 == 0


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
    h = hashlib.blake2b(digest_size=16)
    h.update(SPLIT_RULE.encode())
    h.update(b"\x1d" + "\x1f".join(classes or []).encode())
    for texts, labels in ((train, train_y), (test, test_y)):
        h.update(b"\x1d")
        for i, text in enumerate(texts):
            label = "" if labels is None else str(labels[i])
            h.update(f"{text}\x1f{label}\x1e".encode())
    return h.hexdigest()


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
    train_idx = [i for i, h in enumerate(hashes) if h % 10 != 0]
    test_idx = [i for i, h in enumerate(hashes) if h % 10 == 0]
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
        _write_once(cached, out)
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


# ---------------------------------------------------------------------------------------------
# Tokenizer

PAD, UNK, MASK, SEP = "[PAD]", "[UNK]", "[MASK]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, MASK, SEP)  # ids 0..3 in this order; [PAD] must be 0
DEFAULT_VOCAB_SIZE = 8000


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    unk: int
    mask: int
    sep: int


def special_ids(tokenizer: Tokenizer) -> SpecialIds:
    """Ids of the reserved tokens; fails if the tokenizer lacks them or [PAD] is not 0."""
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    if None in ids or ids[0] != 0:
        raise ConfigError(
            f"tokenizer must reserve {', '.join(SPECIAL_TOKENS)} with [PAD]=0; got {ids}"
        )
    return SpecialIds(*ids)


def _train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def tokenizer_path(corpus: TextCorpus, vocab_size: int, cache_dir: Path) -> Path:
    return cache_dir / f"wordpiece-{corpus.fingerprint[:16]}-v{vocab_size}.json"


def get_tokenizer(
    corpus: TextCorpus, vocab_size: int = DEFAULT_VOCAB_SIZE, cache_dir: Path | None = None
) -> Tokenizer:
    """Lowercasing BERT-style WordPiece tokenizer trained on the train split only.

    With cache_dir, it is saved as JSON keyed by corpus fingerprint and vocab size, and later calls
    load it instead of retraining. Share cache_dir between runs: training is not bit-reproducible
    (the trainer breaks count ties in hash-map order, huggingface/tokenizers#1794), so two trainings
    can differ in a few vocabulary entries.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    if not corpus.train_texts:
        raise ConfigError(f"{corpus.name}: no train texts to fit a tokenizer on")
    path = tokenizer_path(corpus, vocab_size, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        tok = Tokenizer.from_file(str(path))
    else:
        tok = _train_tokenizer(corpus.train_texts, vocab_size)
        if path is not None:
            _write_once(path, tok.to_str())
            tok = Tokenizer.from_file(str(path))  # a process racing this one may have won
    special_ids(tok)
    return tok


def _write_once(path: Path, content: str) -> None:
    """Publish `content` at `path` unless a file is there already: written to a temporary file,
    then hard-linked into place, so no reader sees a partial file and, when processes race (DDP
    ranks on a cold cache), the first one wins and all of them read the same tokenizer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = store.temporary_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Tensors


def pack_blocks(token_lists: list[list[int]], length: int, sep_id: int) -> torch.Tensor:
    """LongTensor[n_blocks, length]: documents joined by sep_id into one stream, cut into full
    blocks (no padding; the last partial block is dropped; empty documents are skipped)."""
    if length <= 0:
        raise ConfigError(f"block length must be positive, got {length}")
    stream = array("q")  # int64 buffer: 2-3x faster to build and hand to torch than a list
    for doc in token_lists:
        if doc:
            if stream:
                stream.append(sep_id)
            stream.extend(doc)
    n_blocks = len(stream) // length
    blocks = (
        torch.frombuffer(stream, dtype=torch.long) if stream else torch.empty(0, dtype=torch.long)
    )
    return blocks[: n_blocks * length].clone().view(n_blocks, length)


def encode_padded(
    tokenizer: Tokenizer, texts: Sequence[str], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids LongTensor[N, max_len], attention_mask BoolTensor[N, max_len]): truncated to max_len,
    padded with [PAD]=0, mask True on real tokens."""
    if max_len <= 0:
        raise ConfigError(f"max_len must be positive, got {max_len}")
    seqs = [enc.ids for enc in tokenizer.encode_batch_fast(list(texts))]
    ids, lengths = pad_ids(seqs, max_len, special_ids(tokenizer).pad)
    return ids, real_positions(lengths, max_len)


def pad_ids(seqs: Sequence[Sequence[int]], max_len: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """(ids LongTensor[N, max_len], lengths LongTensor[N]): each sequence truncated to max_len,
    then padded with pad_id. One flat copy instead of a tensor per row (10x faster on 100k texts)."""
    lengths = torch.tensor([min(len(s), max_len) for s in seqs], dtype=torch.long)
    flat = array("q")
    for s in seqs:
        flat.extend(s[:max_len])
    ids = torch.full((len(seqs), max_len), pad_id, dtype=torch.long)
    if flat:
        ids[real_positions(lengths, max_len)] = torch.frombuffer(flat, dtype=torch.long)
    return ids, lengths


def real_positions(lengths: Tensor, max_len: int) -> Tensor:
    """BoolTensor[N, max_len], True on the first lengths[i] positions of row i (real tokens)."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


def bag_of_words(ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """FloatTensor[N, vocab_size] of token counts over real tokens only (raw-input probe)."""
    counts = torch.zeros((ids.shape[0], vocab_size), dtype=torch.float32, device=ids.device)
    return counts.scatter_add_(1, ids, attention_mask.to(torch.float32))


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


# ---------------------------------------------------------------------------------------------
# The trainer's data protocol

DEFAULT_BLOCK_LENGTH = 64  # tokens per pretraining block, and the eval truncation length
ENCODE_CHUNK = 8192  # texts per tokenizer call: granularity of the progress bar
TENSORS_FORMAT = 1  # part of the tensor cache's file name: bump when what it stores changes


def blocks_upto(seqs: Sequence[Sequence[int]], length: int) -> Tensor:
    """LongTensor[N]: entry i is how many blocks `pack_blocks(seqs[: i + 1], length, sep)`
    makes, i.e. the packed blocks of the first i + 1 documents are a prefix of the packing of
    all of them (the same [SEP] rule: one between consecutive non-empty documents)."""
    counts, stream = [], 0
    for s in seqs:
        if s:
            stream += len(s) + (1 if stream else 0)
        counts.append(stream // length)
    return torch.tensor(counts, dtype=torch.long)


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


def tokenize(tokenizer: Tokenizer, texts: Sequence[str], desc: str) -> list[list[int]]:
    """Token ids of each text, `ENCODE_CHUNK` texts per tokenizer call (the progress bar's
    step)."""
    seqs: list[list[int]] = []
    for i in progress.bar(range(0, len(texts), ENCODE_CHUNK), desc=desc, unit="chunk", leave=False):
        seqs += [e.ids for e in tokenizer.encode_batch_fast(list(texts[i : i + ENCODE_CHUNK]))]
    return seqs


def encode_corpus(tokenizer: Tokenizer, corpus: TextCorpus, length: int) -> dict[str, Tensor]:
    """Every tensor `TextData` needs, from one tokenizer pass over each split: packed blocks
    (pretraining, held-out masked-token metrics) and texts truncated/padded to `length` (probes)."""
    ids = special_ids(tokenizer)
    out: dict[str, Tensor] = {}
    for split, texts in (("train", corpus.train_texts), ("test", corpus.test_texts)):
        seqs = tokenize(tokenizer, texts, f"tokenize {split}")
        out[f"{split}_blocks"] = pack_blocks(seqs, length, ids.sep)
        out[f"{split}_x"], out[f"{split}_len"] = pad_ids(seqs, length, ids.pad)
        if split == "test":
            out["test_blocks_upto"] = blocks_upto(seqs, length)
    return out


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part.encode() + b"\x1f")
    return h.hexdigest()


class PaddedTexts:
    """The probe side of text data, at the token and the sentence level alike: each text alone,
    truncated to `length` tokens and padded with [PAD] (`train_x`, `test_x`), its real length
    (`train_len`, `test_len`: attention and pooling masks, bag-of-words), labels (`train_y`,
    `test_y`) and `classes` (None for an unlabelled corpus, which has no probes), `vocab_size`,
    `pad_id` and `name`. Subclasses are dataclasses holding those fields."""

    name: str
    train_x: Tensor
    train_len: Tensor
    test_x: Tensor
    test_len: Tensor
    train_y: Tensor | None
    test_y: Tensor | None
    classes: list[str] | None
    vocab_size: int
    pad_id: int

    @property
    def length(self) -> int:
        return self.train_x.shape[1]

    @property
    def spec(self) -> DataSpec:
        """The encoder's input: one text of `length` tokens."""
        return DataSpec("text", (self.length,), vocab_size=self.vocab_size, pad_id=self.pad_id)

    def to(self, device: torch.device):
        moved = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, Tensor)}
        return replace(self, **moved)

    def eval_split(self, split: str, limit: int | None = None) -> EvalSplit:
        """The first `limit` texts of a split, each padded, with labels and its padding mask."""
        x, n, y = (
            (self.train_x, self.train_len, self.train_y)
            if split == "train"
            else (self.test_x, self.test_len, self.test_y)
        )
        if y is None:
            raise ConfigError(f"{self.name} is unlabelled: it has no probes, only pretraining")
        return EvalSplit(x[:limit], y[:limit], self.pad_mask(n[:limit]))

    def pad_mask(self, lengths: Tensor) -> Tensor:
        """BoolTensor[N, length] of real tokens. A text with no token is read as one [PAD]:
        attention needs a key to attend to."""
        return real_positions(lengths.clamp_min(1), self.length)

    def eval_batch(self, x: Tensor) -> Tensor:
        return x  # token ids go to the encoder as they are

    def raw_features(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Bag-of-words counts over the vocabulary, padding excluded: the `raw-input` row."""
        real = x != self.pad_id if pad_mask is None else pad_mask
        return bag_of_words(x, real, self.vocab_size)


@dataclass
class TextData(PaddedTexts):
    """A tokenized corpus, implementing the data protocol of `ImageData` for the trainer.

    Pretraining samples are packed blocks of `length` tokens (texts joined by [SEP]); probes
    see each text on its own (`PaddedTexts`).
    """

    name: str
    train_blocks: Tensor  # int64 [n_blocks, length]
    test_blocks: Tensor  # int64 [m, length]: the held-out blocks
    test_blocks_upto: Tensor  # int64 [n_test]: see `blocks_upto`
    train_x: Tensor  # int64 [n_train, length], [PAD]-padded
    train_len: Tensor  # int64 [n_train]: real tokens per row
    test_x: Tensor
    test_len: Tensor
    train_y: Tensor | None
    test_y: Tensor | None
    classes: list[str] | None
    vocab_size: int
    pad_id: int
    fingerprint: str
    modality: str = "text"

    def n_pretrain(self) -> int:
        return len(self.train_blocks)

    def pretrain_batch(self, idx: Tensor, generator: torch.Generator, aug: bool) -> Tensor:
        """Packed blocks `[B, length]`; text has no augmentation (generator and aug unused)."""
        return self.train_blocks[idx]

    def heldout_blocks(self, limit: int | None = None) -> Tensor:
        """The test split packed into blocks (all of it, or the first `limit` test texts)."""
        upto = self.test_blocks_upto[:limit]
        count = int(upto[-1]) if len(upto) else 0
        if count == 0:
            raise ConfigError(
                f"the {len(upto)} test texts of {self.name} in use fill no {self.length}-token "
                "block; raise eval_test_limit"
            )
        return self.test_blocks[:count]


def load_text_data(
    name: str,
    root: str | None = None,
    vocab_size: int | None = None,
    block_length: int | None = None,
    cache_dir: Path | None = None,
) -> TextData:
    """`text_data` of the corpus `name` (see `load_corpus`; `root` is its data_root)."""
    cache_dir = cache_root() if cache_dir is None else cache_dir
    return text_data(load_corpus(name, root, cache_dir), vocab_size, block_length, cache_dir)


def text_data(
    corpus: TextCorpus,
    vocab_size: int | None = None,
    block_length: int | None = None,
    cache_dir: Path | None = None,
) -> TextData:
    """Corpus -> tokenizer -> tensors (splits in `hash_ordered` order), each cached under
    `cache_dir` (default `cache_root()`), the tensors keyed by corpus fingerprint, vocabulary
    size, tokenizer content and block length: a second run neither retrains nor re-encodes."""
    vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
    length = DEFAULT_BLOCK_LENGTH if block_length is None else block_length
    if length <= 0:
        raise ConfigError(f"block_length must be positive, got {length}")
    cache_dir = cache_root() if cache_dir is None else cache_dir
    tokenizer = get_tokenizer(corpus, vocab_size, cache_dir)
    corpus = hash_ordered(corpus)
    tok_digest = _digest(tokenizer.to_str())
    key = f"{corpus.fingerprint[:16]}-v{vocab_size}-{tok_digest}-L{length}"
    path = cache_dir / f"text{TENSORS_FORMAT}-{key}.pt"
    if path.is_file():
        tensors = store.load_torch(path)
    else:
        tensors = encode_corpus(tokenizer, corpus, length)
        store.save_torch(path, tensors)

    def labels(values: list[int] | None) -> Tensor | None:
        return None if values is None else torch.tensor(values, dtype=torch.long)

    return TextData(
        name=corpus.name,
        **tensors,
        train_y=labels(corpus.train_labels),
        test_y=labels(corpus.test_labels),
        classes=corpus.classes,
        vocab_size=tokenizer.get_vocab_size(),
        pad_id=special_ids(tokenizer).pad,
        fingerprint=_digest(corpus.fingerprint, tok_digest, str(length))[:12],
    )
