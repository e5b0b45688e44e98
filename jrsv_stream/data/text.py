"""Text for the synthetic corpus: sentences and lyric lines from offline, licence-clean data.

Source: the BSD-licensed ``fortune-mod`` quotation files in Debian's ``fortunes`` /
``fortunes-min`` packages (``/usr/share/games/fortunes``), filtered to sentences whose
every word is in Debian's ``wamerican`` word list (SCOWL, permissive licence) so that every
word is a real, pronounceable English word the TTS engines read as written (no numbers,
abbreviations or acronyms that they would expand into other words).

Splits are by a stable hash of the normalized sentence, so train/valid/test texts are
disjoint and stay so whatever else changes. Lyric lines are short phrases cut from the
sentences of the same split.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDLIST = Path("/usr/share/dict/words")
SPLITS = ("train", "valid", "test")
# Percent of sentences per split (by hash): test and valid are small but disjoint.
SPLIT_PERCENT = {"train": 90, "valid": 5, "test": 5}

_WORD_RE = re.compile(r"^[a-z]+(?:'[a-z]+)?$")
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?;:])\s+")


class TextError(RuntimeError):
    """The offline text sources are missing."""


@dataclass(frozen=True)
class Sentence:
    """A sentence as the synthesizers read it, and its transcript.

    Attributes:
        spoken: text given to TTS (words plus commas/final punctuation for prosody).
        words: transcript words, lowercase ``[a-z']``; what the recognizer must output.
    """

    spoken: str
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)


def split_of(text: str) -> str:
    """Stable split for a normalized text (hash bucket out of 100)."""
    h = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "big") % 100
    if h < SPLIT_PERCENT["train"]:
        return "train"
    return "valid" if h < SPLIT_PERCENT["train"] + SPLIT_PERCENT["valid"] else "test"


@functools.lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    if not WORDLIST.is_file():
        raise TextError(f"word list {WORDLIST} missing: apt-get install wamerican")
    words = set()
    for w in WORDLIST.read_text(encoding="utf-8", errors="ignore").split():
        # Proper nouns are capitalized in the list; keep lowercase entries only.
        if w.islower() and _WORD_RE.match(w):
            words.add(w)
    # Single letters other than the words "a" and "i" are read as letter names.
    return frozenset(w for w in words if len(w) > 1 or w in ("a", "i"))


def _fortune_texts() -> list[str]:
    if not FORTUNE_DIR.is_dir():
        raise TextError(f"{FORTUNE_DIR} missing: apt-get install fortune-mod fortunes fortunes-min")
    out = []
    for f in sorted(FORTUNE_DIR.iterdir()):
        if f.suffix or not f.is_file():  # skip .dat/.u8 index files
            continue
        for entry in f.read_text(encoding="utf-8", errors="ignore").split("\n%\n"):
            lines = [ln.strip() for ln in entry.splitlines()]
            lines = [ln for ln in lines if ln and not ln.startswith("--") and not ln.startswith("-")]
            out.append(" ".join(lines))
    return out


def normalize_sentence(raw: str, vocab: frozenset[str] | None = None, min_words: int = 3, max_words: int = 22) -> Sentence | None:
    """Turn a raw sentence into a :class:`Sentence`, or None if it cannot be used verbatim.

    Rejects digits, symbols TTS would read aloud, and words outside the vocabulary.
    """
    vocab = _vocabulary() if vocab is None else vocab
    s = raw.replace("\u2019", "'").replace("`", "'").replace("--", ", ").replace("-", " ")
    s = re.sub(r"[\"()\[\]*_]", " ", s)
    if re.search(r"[0-9@#$%^&=+<>/\\|{}~]", s):
        return None
    s = s.replace(";", ",").replace(":", ",")
    tokens = s.split()
    words = []
    spoken = []
    for tok in tokens:
        if not tok.strip(",.!?'"):  # a lone punctuation mark: prosody only
            if "," in tok and spoken and not spoken[-1].endswith(","):
                spoken[-1] += ","
            continue
        core = tok.strip(",.!?'")
        trail = tok[len(tok.rstrip(",.!?")):]
        w = core.lower()
        if not w or not _WORD_RE.match(w) or w not in vocab:
            return None
        words.append(w)
        spoken.append(core + ("," if "," in trail else ""))
    if not min_words <= len(words) <= max_words:
        return None
    return Sentence(spoken=" ".join(spoken).rstrip(",") + ".", words=tuple(words))


@functools.lru_cache(maxsize=1)
def load_sentences() -> dict[str, tuple[Sentence, ...]]:
    """All usable sentences, deduplicated, by split (deterministic order)."""
    vocab = _vocabulary()
    seen: set[str] = set()
    by_split: dict[str, list[Sentence]] = {s: [] for s in SPLITS}
    for text in _fortune_texts():
        for raw in _SENT_SPLIT_RE.split(text):
            sent = normalize_sentence(raw, vocab)
            if sent is None or sent.text in seen:
                continue
            seen.add(sent.text)
            by_split[split_of(sent.text)].append(sent)
    return {k: tuple(v) for k, v in by_split.items()}


@functools.lru_cache(maxsize=1)
def load_lyric_lines(min_words: int = 3, max_words: int = 8) -> dict[str, tuple[Sentence, ...]]:
    """Lyric-like lines: short phrases (3-8 words) cut from each split's sentences at
    commas or every few words, deduplicated; the split of a line is its sentence's."""
    out: dict[str, list[Sentence]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for split, sents in load_sentences().items():
        for sent in sents:
            for phrase in sent.spoken.rstrip(".").split(","):
                words = tuple(w.lower().strip("'") for w in phrase.split())
                words = tuple(w for w in words if w)
                while len(words) > max_words:  # cut long phrases into lines of 4-6 words
                    cut = 4 + (len(words) % 3)
                    _add_line(out[split], seen, words[:cut], min_words)
                    words = words[cut:]
                _add_line(out[split], seen, words, min_words)
    return {k: tuple(v) for k, v in out.items()}


def _add_line(lines: list[Sentence], seen: set[str], words: tuple[str, ...], min_words: int) -> None:
    text = " ".join(words)
    if len(words) >= min_words and text not in seen:
        seen.add(text)
        lines.append(Sentence(spoken=text, words=words))
