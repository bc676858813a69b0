"""WordPiece tokenizers trained on a corpus's train split, cached by corpus fingerprint and
vocabulary size, and the encoding of texts to token ids (padded, or in chunks)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from bench.core import store
from bench.core.errors import ConfigError
from bench.runtime import progress

if TYPE_CHECKING:
    from bench.data.corpora import TextCorpus

ENCODE_CHUNK = 8192  # texts per tokenizer call: granularity of the progress bar
# A text longer than this (characters) is trained on and encoded piece by piece, cut at
# whitespace: the tokenizer splits words at whitespace anyway, so the ids are the same, and
# memory stays bounded (a 50 MB one-line file took 7.5 GB in one piece).
PIECE_CHARS = 1 << 20

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
    tok.train_from_iterator((p for t in texts for p in pieces(t)), trainer=trainer,
                            length=len(texts))
    return tok


def pieces(text: str, size: int | None = None) -> list[str]:
    """`text` cut at whitespace into pieces of about `size` characters (default PIECE_CHARS;
    one piece when shorter). Words are never cut, so the tokenizer (which splits at
    whitespace first) gives the pieces the ids it gives the whole text. A run of `size`
    characters without whitespace is cut where it ends."""
    size = size or PIECE_CHARS
    out, start = [], 0
    while len(text) - start > size:
        cut = text.rfind(" ", start, start + size)
        cut = cut if cut > start else start + size
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


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
            store.write_once(path, tok.to_str())
            tok = Tokenizer.from_file(str(path))  # a process racing this one may have won
    special_ids(tok)
    return tok




def tokenize(tokenizer: Tokenizer, texts: Sequence[str], desc: str) -> list[Sequence[int]]:
    """Token ids of each text, `ENCODE_CHUNK` texts per tokenizer call (the progress bar's
    step); a text longer than PIECE_CHARS is encoded piece by piece (`pieces`) into an int64
    array, so its ids, not the tokenizer's encodings of it, are what is held."""
    seqs: list[Sequence[int]] = []
    for i in progress.bar(range(0, len(texts), ENCODE_CHUNK), desc=desc, unit="chunk", leave=False):
        chunk = list(texts[i : i + ENCODE_CHUNK])
        short = [t if len(t) <= PIECE_CHARS else "" for t in chunk]
        encoded = [e.ids for e in tokenizer.encode_batch_fast(short)]
        for j, text in enumerate(chunk):
            if len(text) > PIECE_CHARS:
                encoded[j] = _encode_long(tokenizer, text)
        seqs += encoded
    return seqs


def _encode_long(tokenizer: Tokenizer, text: str) -> array:
    ids = array("q")
    for piece in pieces(text):
        ids.extend(tokenizer.encode(piece).ids)
    return ids
