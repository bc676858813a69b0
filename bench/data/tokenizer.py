"""WordPiece tokenizers trained on a corpus's train split, cached by corpus fingerprint and
vocabulary size, and the encoding of texts to token ids (padded, or in chunks)."""

from __future__ import annotations

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
            store.write_once(path, tok.to_str())
            tok = Tokenizer.from_file(str(path))  # a process racing this one may have won
    special_ids(tok)
    return tok




def tokenize(tokenizer: Tokenizer, texts: Sequence[str], desc: str) -> list[list[int]]:
    """Token ids of each text, `ENCODE_CHUNK` texts per tokenizer call (the progress bar's
    step)."""
    seqs: list[list[int]] = []
    for i in progress.bar(range(0, len(texts), ENCODE_CHUNK), desc=desc, unit="chunk", leave=False):
        seqs += [e.ids for e in tokenizer.encode_batch_fast(list(texts[i : i + ENCODE_CHUNK]))]
    return seqs
