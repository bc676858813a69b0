"""Text at the sentence level: documents (ordered sentences), their split by document, windows
of S consecutive sentences, and `SentenceData`, the trainer's data protocol for them.

Documents:
- `kjv-verses`: a chapter is a document; its verses, in the canonical order `bible -f` prints
  them, are its sentences; its label is the genre of its book (the token level's classes).
- `text-dir:PATH`: a .txt file is a document: its paragraphs in order, each split into sentences
  by `split_sentences`. Unlabelled: pretraining, the next-sentence check and the masked-sentence
  metrics only.
- `wordnet-glosses` has no sentence level: each gloss is one sentence and glosses have no
  document order (its card says so); asking for it is refused.

Every document goes to one split by a hash of its text (`DOCUMENT_SPLIT_RULE`), so no chapter
is in two splits. The tokenizer and the encoded tensors follow the token level's rules (a
WordPiece tokenizer trained on the train split, both cached under `cache_root()`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from bench.core.errors import ConfigError, DataNotFoundError, UnknownDatasetError
from bench.data import cache
from bench.data.corpora import (
    KJV_GENRES,
    KJV_RANGE,
    TEXT_DIR_PREFIX,
    TextCorpus,
    kjv_genre,
    kjv_verses,
    paragraphs,
    text_dir_folder,
    text_files,
    text_hash,
)
from bench.data.fingerprint import digest, in_test_split, split_fingerprint
from bench.data.geometry import DEFAULT_SENTENCES
from bench.data.packing import pad_ids
from bench.data.protocol import EvalSplit, complement
from bench.data.text import PaddedTexts
from bench.data.tokenizer import DEFAULT_VOCAB_SIZE, get_tokenizer, special_ids, tokenize

DOCUMENT_SPLIT_RULE = (
    "test if int.from_bytes(blake2b('\\n'.join(sentences).encode('utf-8'), digest_size=8)"
    ".digest(), 'big') % 10 == 0, else train"
)
SENTENCE_CORPORA = ("kjv-verses", TEXT_DIR_PREFIX + "PATH")
DEFAULT_SENTENCE_LENGTH = 64  # tokens per sentence: the token level's eval truncation length
SENTENCE_TENSORS_FORMAT = 1  # part of the tensor cache's file name: bump when what it stores changes

# ---------------------------------------------------------------------------------------------
# Sentences and documents


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (a paragraph), each an exact substring of it, by syntok's
    rule-based segmenter: no model to download, and several times faster than pysbd (which
    also works from rules) while agreeing with it on abbreviations, decimals and quotes."""
    try:
        from syntok import segmenter
        from syntok.tokenizer import Tokenizer
    except ImportError:
        raise ConfigError(
            "splitting text into sentences needs syntok: pip install 'maskbench[sentences]'"
        ) from None
    tokens = Tokenizer(replace_not_contraction=False).tokenize(text)
    return [
        text[sentence[0].offset : sentence[-1].offset + len(sentence[-1].value)]
        for sentence in segmenter.split(tokens)
    ]


@dataclass(frozen=True)
class Document:
    """An ordered sequence of sentences and, for a labelled corpus, the label of all of them."""

    sentences: tuple[str, ...]
    label: int | None = None

    @property
    def key(self) -> int:
        """Its hash (`DOCUMENT_SPLIT_RULE`): decides its split and its place in the split."""
        return text_hash("\n".join(self.sentences))


@dataclass
class DocumentCorpus:
    """Documents split by `DOCUMENT_SPLIT_RULE`, each split in document-hash order (lowest
    first), so the first N documents of a split are a deterministic random sample."""

    name: str
    train: list[Document]
    test: list[Document]
    classes: list[str] | None
    fingerprint: str  # of the content and split rule: keys the tokenizer and tensor caches


def make_documents(name: str, documents: Iterable[Document], classes: list[str] | None
                   ) -> DocumentCorpus:
    """Split `documents` (empty ones dropped) by `DOCUMENT_SPLIT_RULE`, each split in hash order."""
    docs = sorted((d for d in documents if d.sentences), key=lambda d: d.key)  # stable
    train = [d for d in docs if not in_test_split(d.key)]
    test = [d for d in docs if in_test_split(d.key)]
    records = (("\x1f".join(d.sentences) + f"\x1c{'' if d.label is None else d.label}\x1e"
                for d in split) for split in (train, test))
    return DocumentCorpus(name, train, test, classes,
                          split_fingerprint(DOCUMENT_SPLIT_RULE, classes, records))


_KJV_CHAPTER = re.compile(r"^(\d?[A-Za-z]+\d+):\d+$")


def kjv_chapters(verses: Iterable[tuple[str, str]]) -> list[Document]:
    """One document per chapter of `(reference, text)` verses (`bible -f` order), its verses in
    the order given, labelled by the genre of its book. A chapter whose verses are not
    contiguous (a reordered file) is refused."""
    chapters: list[Document] = []
    seen: set[str] = set()
    for chapter, verses_of in itertools.groupby(verses, key=lambda v: _KJV_CHAPTER.match(v[0])[1]):
        if chapter in seen:
            raise ConfigError(f"the verses of chapter {chapter} are not contiguous; give the "
                              f"output of `bible -f {KJV_RANGE}` as it is")
        seen.add(chapter)
        label = KJV_GENRES.index(kjv_genre(chapter + ":1"))
        chapters.append(Document(tuple(text for _, text in verses_of), label))
    return chapters


def text_document(text: str, label: int | None = None) -> Document:
    """A document of free text: the sentences of its paragraphs, in order."""
    return Document(tuple(s for para in paragraphs(text) for s in split_sentences(para)), label)


def text_dir_documents(folder: Path) -> list[Document]:
    """One document per .txt file under folder (`text_document`)."""
    docs = [text_document(content) for _, content in text_files(folder)]
    if not any(d.sentences for d in docs):
        raise DataNotFoundError(f"no non-empty .txt file under {folder}; add UTF-8 .txt files there")
    return docs


def load_documents(name: str, root: str | None = None, cache_dir: Path | None = None
                   ) -> DocumentCorpus:
    """The documents of a sentence-level corpus by name (see `SENTENCE_CORPORA`); `root` and
    `cache_dir` as for `bench.data.text.load_corpus`."""
    if name == "kjv-verses":
        return make_documents(name, kjv_chapters(kjv_verses(root, cache_dir)),
                              list(KJV_GENRES))
    if name.startswith(TEXT_DIR_PREFIX):
        return make_documents(name, text_dir_documents(text_dir_folder(name, root)), None)
    raise UnknownDatasetError(name, list(SENTENCE_CORPORA))


# ---------------------------------------------------------------------------------------------
# Windows


def document_windows(offsets: Tensor, size: int) -> Tensor:
    """LongTensor[n, size]: positions, in the documents' concatenated order (document d holds
    positions offsets[d] .. offsets[d + 1] - 1), of windows of `size` consecutive sentences
    that never cross a document. A document of at least `size` sentences is tiled from its
    start in steps of `size`, and where its length is not a multiple of `size` one more window
    ends at its last sentence (overlapping the one before), so each of its sentences is in a
    window; a shorter document gives none."""
    lengths = offsets.diff()
    count = torch.where(lengths >= size, (lengths + size - 1) // size, 0)
    doc = torch.repeat_interleave(torch.arange(len(lengths)), count)
    first = torch.repeat_interleave(count.cumsum(0) - count, count)
    k = torch.arange(len(doc)) - first  # window number inside its document
    starts = offsets[doc] + torch.minimum(k * size, lengths[doc] - size)
    return starts.unsqueeze(1) + torch.arange(size)


# ---------------------------------------------------------------------------------------------
# Tensors


def _split_sentences(docs: list[Document]) -> tuple[list[str], Tensor, list[int | None]]:
    """Sentences in document order, the offsets of the documents, each sentence's label."""
    sentences = [s for d in docs for s in d.sentences]
    offsets = torch.tensor([0, *[len(d.sentences) for d in docs]], dtype=torch.long).cumsum(0)
    return sentences, offsets, [d.label for d in docs for _ in d.sentences]


def encode_documents(tokenizer, corpus: DocumentCorpus, length: int) -> dict[str, Tensor]:
    """Per split: every sentence truncated/padded to `length` tokens in sentence-hash order
    (`{split}_x`, `{split}_len`, the probes' order, as `hash_ordered` at the token level),
    `{split}_docs`, the rows of `{split}_x` in document order, and `{split}_offsets`, where each
    document starts in that order."""
    pad = special_ids(tokenizer).pad
    out: dict[str, Tensor] = {}
    for split, docs in (("train", corpus.train), ("test", corpus.test)):
        sentences, offsets, _ = _split_sentences(docs)
        order = sorted(range(len(sentences)), key=lambda i: text_hash(sentences[i]))
        seqs = tokenize(tokenizer, [sentences[i] for i in order], f"tokenize {split}")
        out[f"{split}_x"], out[f"{split}_len"] = pad_ids(seqs, length, pad)
        rows = torch.empty(len(order), dtype=torch.long)
        rows[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        out[f"{split}_docs"], out[f"{split}_offsets"] = rows, offsets
    return out


@dataclass(kw_only=True)
class SentenceData(PaddedTexts):
    """Documents at the sentence level, implementing the trainer's data protocol.

    A pretraining sample is a window of `sentences` consecutive sentences of one train document
    (`document_windows`), each truncated/padded to `length` tokens: `[sentences, length]` ids.
    The encoder (`spec`) reads one sentence; probes see each sentence alone (`PaddedTexts`,
    labelled by its document). `document_split` and `heldout_windows` take whole test
    documents, for the next-sentence check and the masked-sentence metrics.
    """

    # train_x / test_x rows are sentences in sentence-hash order; train_y / test_y each
    # sentence's document label (PaddedTexts' fields).
    train_docs: Tensor  # int64 [n_train]: rows of train_x in document order
    train_offsets: Tensor  # int64 [n_train_documents + 1]: where each document starts there
    test_docs: Tensor
    test_offsets: Tensor
    train_windows: Tensor  # int64 [n_windows, sentences]: rows of train_x
    sentences: int  # S: sentences per window, the pretraining grid (S,)
    fingerprint: str
    modality: str = "text"

    def n_pretrain(self) -> int:
        return len(self.train_windows)

    def pretrain_batch(self, idx: Tensor, generator: torch.Generator, aug: bool) -> Tensor:
        """Windows `[B, sentences, length]` of token ids; no augmentation (generator unused)."""
        return self.train_x[self.train_windows[idx]]

    def validation_units(self) -> int:
        """Validation takes whole documents: no document is in both parts."""
        return len(self.train_offsets) - 1

    def divided(self, val: Tensor) -> SentenceData:
        """Training documents `val` (in that order) as the test split and the other training
        documents as the training split: their sentences in sentence-hash order (as the
        probes read them), their document order and offsets. Pretraining keeps its own
        windows (`train_windows` still indexes the whole training split)."""
        parts = {}
        for side, docs in (("train", complement(val, self.validation_units())), ("test", val)):
            docs = docs.to(self.train_offsets.device)
            starts, ends = self.train_offsets[docs], self.train_offsets[docs + 1]
            by_doc = torch.cat([self.train_docs[a:b] for a, b in zip(starts.tolist(),
                                                                     ends.tolist())])
            rows = by_doc.sort().values
            parts |= {f"{side}_x": self.train_x[rows], f"{side}_len": self.train_len[rows],
                      f"{side}_y": None if self.train_y is None else self.train_y[rows],
                      f"{side}_docs": torch.searchsorted(rows, by_doc),
                      f"{side}_offsets": torch.cat([ends.new_zeros(1), (ends - starts).cumsum(0)])}
        return replace(self, **parts)

    def test_documents(self, limit: int | None, split: str = "test") -> int:
        """How many documents of `split` (hash order) the document metrics use: as many as hold
        at most `limit` sentences in all (None: every one), and never fewer than two."""
        offsets = self.test_offsets if split == "test" else self.train_offsets
        if limit is None:
            return len(offsets) - 1
        return max(2, int((offsets[1:] <= limit).sum()))

    def document_split(self, limit: int | None = None, split: str = "test") -> EvalSplit:
        """The sentences of the first `test_documents(limit, split)` documents of `split` in
        document order, padded; `y` holds each sentence's document number (what the
        next-sentence check groups by), not a class."""
        x, lengths, docs, offsets = ((self.test_x, self.test_len, self.test_docs, self.test_offsets)
                                     if split == "test" else
                                     (self.train_x, self.train_len, self.train_docs,
                                      self.train_offsets))
        n_docs = self.test_documents(limit, split)
        offsets = offsets[: n_docs + 1]
        rows = docs[: int(offsets[-1])]
        doc = torch.repeat_interleave(torch.arange(n_docs, device=offsets.device), offsets.diff())
        return EvalSplit(x[rows], doc, self.pad_mask(lengths[rows]))

    def heldout_windows(self, limit: int | None = None) -> Tensor:
        """Windows `[m, sentences, length]` of the first `test_documents(limit)` test documents,
        made as the train windows are (masked-sentence metrics)."""
        n_docs = self.test_documents(limit)
        positions = document_windows(self.test_offsets[: n_docs + 1].cpu(), self.sentences)
        if len(positions) == 0:
            raise ConfigError(
                f"the {n_docs} test documents of {self.name} in use have no window of "
                f"{self.sentences} sentences; raise eval_test_limit or lower sentences"
            )
        return self.test_x[self.test_docs[positions.to(self.test_docs.device)]]


def sentence_data(
    corpus: DocumentCorpus,
    vocab_size: int | None = None,
    sentences: int | None = None,
    sentence_length: int | None = None,
    cache_dir: Path | None = None,
) -> SentenceData:
    """Documents -> tokenizer -> tensors, cached as at the token level (`text_data`): the
    tokenizer keyed by corpus fingerprint and vocabulary size, the tensors also by tokenizer
    content and `sentence_length` (windows of `sentences` are cut from them at load)."""
    vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
    size = DEFAULT_SENTENCES if sentences is None else sentences
    length = DEFAULT_SENTENCE_LENGTH if sentence_length is None else sentence_length
    if size < 2 or length < 1:
        raise ConfigError(f"sentences must be >= 2 and sentence_length >= 1, got {size}, {length}")
    cache_dir = cache.cache_root() if cache_dir is None else cache_dir
    train_s, train_offsets, train_labels = _split_sentences(corpus.train)
    test_s, _, test_labels = _split_sentences(corpus.test)
    view = TextCorpus(corpus.name, train_s, None, test_s, None, corpus.classes,
                        corpus.fingerprint)
    tokenizer = get_tokenizer(view, vocab_size, cache_dir)
    tok_digest = digest(tokenizer.to_str())
    key = f"{corpus.fingerprint[:16]}-v{vocab_size}-{tok_digest}-L{length}"
    tensors = cache.cached_tensors(cache_dir / f"sentences{SENTENCE_TENSORS_FORMAT}-{key}.pt",
                                   lambda: encode_documents(tokenizer, corpus, length))
    windows = document_windows(train_offsets, size)
    if len(windows) == 0:
        raise ConfigError(f"no train document of {corpus.name} has {size} sentences; "
                          "lower sentences=")
    if len(corpus.test) < 2:
        raise ConfigError(
            f"{corpus.name} has {len(corpus.test)} test document(s); the next-sentence check "
            "needs two (a document is a chapter, or a file of text-dir: add files)"
        )

    def labels(values: list[int | None], docs_order: Tensor) -> Tensor | None:
        if corpus.classes is None:
            return None
        y = torch.empty(len(values), dtype=torch.long)
        y[docs_order] = torch.tensor(values, dtype=torch.long)  # document order -> hash order
        return y

    return SentenceData(
        name=corpus.name,
        **tensors,
        train_windows=tensors["train_docs"][windows],
        train_y=labels(train_labels, tensors["train_docs"]),
        test_y=labels(test_labels, tensors["test_docs"]),
        classes=corpus.classes,
        vocab_size=tokenizer.get_vocab_size(),
        pad_id=special_ids(tokenizer).pad,
        sentences=size,
        fingerprint=digest(corpus.fingerprint, tok_digest, str(length), str(size))[:12],
    )


def load_sentence_data(
    name: str,
    root: str | None = None,
    vocab_size: int | None = None,
    sentences: int | None = None,
    sentence_length: int | None = None,
    cache_dir: Path | None = None,
) -> SentenceData:
    """`sentence_data` of the corpus `name` (see `load_documents`; `root` is its data_root)."""
    cache_dir = cache.cache_root() if cache_dir is None else cache_dir
    return sentence_data(load_documents(name, root, cache_dir), vocab_size, sentences,
                         sentence_length, cache_dir)
