"""Sentencepiece tokenizer with a reserved CTC blank.

Id layout (no shifting: sentencepiece ids are the model's ids). :func:`train_tokenizer`
trains with

- id 0 = ``<blank>``: sentencepiece's *pad* piece (``--pad_id=0 --pad_piece=<blank>``),
  a control symbol, so it never appears in :meth:`Tokenizer.encode` output and
  :meth:`Tokenizer.decode` drops it; the CTC head uses it as the blank;
- id 1 = ``<unk>``;
- id 2 = ``<sos/eos>``: sentencepiece's *eos* piece (control), the start and end symbol of
  the attention decoder (WeNet shares one id for both); no ``<s>`` (``--bos_id=-1``);
- ids 3.. = the learned pieces; a piece starting with ``▁`` begins a word.

:class:`Tokenizer` refuses a model whose id 0 is not a control symbol, so a model trained
another way cannot silently turn a real piece into the blank.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

BLANK_ID = 0
UNK_ID = 1
SOS_EOS_ID = 2
BLANK_PIECE = "<blank>"
SOS_EOS_PIECE = "<sos/eos>"
WORD_START = "\u2581"  # "▁", sentencepiece's word-boundary mark


class TokenizerError(ValueError):
    """A tokenizer model file is missing, corrupt or not laid out as this module expects."""


class Tokenizer:
    """Thin wrapper around a sentencepiece model laid out as described in the module doc.

    Args:
        model_path: path of a ``.model`` file written by :func:`train_tokenizer`.

    Raises:
        TokenizerError: the file is missing or unreadable, or id 0 is not a reserved
            control symbol (the CTC blank).
    """

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise TokenizerError(f"tokenizer model not found: {self.model_path}")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"cannot load tokenizer model {self.model_path}: {e}") from e
        if self._sp.get_piece_size() <= SOS_EOS_ID or not self._sp.is_control(BLANK_ID):
            raise TokenizerError(
                f"{self.model_path}: id {BLANK_ID} is {self._sp.id_to_piece(BLANK_ID)!r}, not a reserved "
                f"blank; train the model with jrsv_stream.decode.tokenizer.train_tokenizer")
        self._pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        self._special = frozenset(i for i in range(len(self._pieces))
                                  if self._sp.is_control(i) or self._sp.is_unknown(i))

    @property
    def vocab_size(self) -> int:
        """Number of ids, blank and specials included (the CTC output size)."""
        return len(self._pieces)

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def sos_id(self) -> int:
        """Start symbol of the attention decoder (same id as :attr:`eos_id`)."""
        return self.eos_id

    @property
    def eos_id(self) -> int:
        eos = self._sp.eos_id()
        if eos < 0:
            raise TokenizerError(f"{self.model_path} has no <sos/eos> piece")
        return eos

    def encode(self, text: str) -> list[int]:
        """Text -> piece ids (no blank, no sos/eos)."""
        return self._sp.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Piece ids -> text; blank and sos/eos are dropped.

        Raises:
            TokenizerError: an id is outside ``[0, vocab_size)``.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self._pieces)]
        if bad:
            raise TokenizerError(f"token ids out of range [0, {len(self._pieces)}): {bad[:5]}")
        return self._sp.decode(ids)

    def piece(self, token_id: int) -> str:
        """The piece string of one id (``"<blank>"`` for 0)."""
        if not 0 <= token_id < len(self._pieces):
            raise TokenizerError(f"token id {token_id} out of range [0, {len(self._pieces)})")
        return self._pieces[token_id]

    def is_word_start(self, token_id: int) -> bool:
        """True when the piece begins a word (starts with ``▁``); False for specials."""
        return token_id not in self._special and self.piece(token_id).startswith(WORD_START)

    def is_special(self, token_id: int) -> bool:
        """True for blank, unk and sos/eos."""
        return token_id in self._special

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.model_path)!r}, vocab_size={self.vocab_size})"


def train_tokenizer(texts: Iterable[str], out_prefix: str | os.PathLike, vocab_size: int,
                    model_type: str = "unigram", character_coverage: float = 1.0,
                    hard_vocab_limit: bool = False, num_threads: int = 1) -> Tokenizer:
    """Train a sentencepiece model with the blank/unk/sos-eos layout of the module doc.

    Args:
        texts: training sentences (already normalized, e.g. lowercase words).
        out_prefix: writes ``{out_prefix}.model`` and ``{out_prefix}.vocab``.
        vocab_size: requested number of ids, specials included. With
            ``hard_vocab_limit=False`` (default) a small corpus may give fewer; read
            :attr:`Tokenizer.vocab_size` for the real size.
        model_type: ``"unigram"`` or ``"bpe"``.
        character_coverage: sentencepiece's character coverage (1.0 for small alphabets).
        hard_vocab_limit: make ``vocab_size`` an exact requirement.
        num_threads: trainer threads.

    Returns:
        The trained :class:`Tokenizer`.

    Raises:
        ValueError: bad ``model_type``, ``vocab_size`` or no text.
    """
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    if vocab_size <= SOS_EOS_ID + 1:
        raise ValueError(f"vocab_size must be > {SOS_EOS_ID + 1}, got {vocab_size}")
    sentences = [t.strip() for t in texts]
    sentences = [t for t in sentences if t]
    if not sentences:
        raise ValueError("train_tokenizer: no non-empty text")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=str(out_prefix), vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        hard_vocab_limit=hard_vocab_limit, num_threads=num_threads, minloglevel=2,
        pad_id=BLANK_ID, pad_piece=BLANK_PIECE, unk_id=UNK_ID, bos_id=-1,
        eos_id=SOS_EOS_ID, eos_piece=SOS_EOS_PIECE)
    return Tokenizer(f"{out_prefix}.model")
