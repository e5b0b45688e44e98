"""CTC/attention hybrid finals: pick among the attention decoder's n-best with the CTC
head's score, guard against the decoder's failure modes, time the words by CTC alignment.

The attention decoder (Whisper's, :mod:`jrsv_stream.nn.whisper_decode`) writes cased,
punctuated text in its own BPE; the streaming CTC head speaks lowercase sentencepiece
pieces. The two meet on *normalized words*: a display word ("Hello,") normalizes to its
lowercase letters and apostrophes ("hello"); words with none ("--", "3") are kept for
display, carried by their neighbours' times. Everything here is plain CPU work on arrays.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from jrsv_stream.decode.numbers import spell_digits

_KEEP = re.compile(r"[^a-z']+")


def normalize_word(word: str) -> str:
    """Lowercase letters a-z and apostrophes of ``word`` ("Don't," -> "don't"); a hyphen
    splits ("cold-hearted" -> "cold hearted"); numbers are spelled ("10" -> "ten", "3D"
    -> "three d": Whisper writes digits where the CTC head spells the words)."""
    w = spell_digits(word.lower().replace("\u2019", "'").replace("\u2018", "'").replace("-", " "))
    return " ".join(p.strip("'") for p in _KEEP.sub(lambda m: " " if " " in m.group() else "", w).split() if p.strip("'"))


def normalize_text(text: str) -> str:
    """The CTC-side text of a display text: normalized words joined by spaces."""
    return " ".join(w for w in (normalize_word(x) for x in text.split()) if w)


def compression_ratio(text: str) -> float:
    """len(bytes) / len(zlib(bytes)): Whisper's repetition criterion (> 2.4 = a loop)."""
    b = text.encode("utf-8")
    return len(b) / max(1, len(zlib.compress(b))) if b else 0.0


def has_repetition_loop(words: Sequence[str], max_ngram: int = 6, min_repeats: int = 3) -> bool:
    """True when some n-gram (n <= ``max_ngram`` words) occurs ``min_repeats`` times in a
    row (``a b a b a b``), the decoder's looping failure on short or music-only input.
    A word said three times in a row by a person ("no no no") counts too when n = 1 and
    ``min_repeats`` = 3: the default asks 4 repeats for single words."""
    w = [p for x in words for p in normalize_word(x).split()]  # "old-s-y-y-y" is five words
    for n in range(1, max_ngram + 1):
        need = max(min_repeats, 4) if n == 1 else min_repeats
        for i in range(0, len(w) - n * need + 1):
            g = w[i:i + n]
            if all(w[i + k * n:i + (k + 1) * n] == g for k in range(1, need)):
                return True
    return False


def ctc_sequence_logp(logp: torch.Tensor | np.ndarray, tokens: Sequence[int], blank_id: int = 0) -> float:
    """log p(tokens | logp) summed over all CTC alignments (-inf when impossible).

    logp: (T, V) CTC log-probabilities of the segment.
    """
    lp = torch.as_tensor(np.asarray(logp), dtype=torch.float32)
    if not tokens:
        return float(lp[:, blank_id].sum())
    t = torch.tensor([list(tokens)], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(lp[:, None], t, torch.tensor([lp.shape[0]]), torch.tensor([len(tokens)]),
                                        blank=blank_id, reduction="sum", zero_infinity=False)
    return -float(loss)


def ctc_align(logp: torch.Tensor | np.ndarray, tokens: Sequence[int], blank_id: int = 0) -> list[tuple[int, int]] | None:
    """Viterbi CTC alignment: (first frame, last frame) of each token, or None when the
    tokens do not fit in the frames (T < tokens + repeats)."""
    if not tokens:
        return []
    import warnings

    import torchaudio.functional as AF

    lp = torch.as_tensor(np.asarray(logp), dtype=torch.float32)[None]
    t = torch.tensor([list(tokens)], dtype=torch.int32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path, _ = AF.forced_align(lp, t, blank=blank_id)
    except RuntimeError:
        return None
    path = path[0].tolist()
    spans: list[list[int]] = []  # a token starts where the label changes to it (a repeat needs a blank between)
    prev = blank_id
    for f, lab in enumerate(path):
        if lab != blank_id and lab != prev:
            spans.append([f, f])
        elif lab != blank_id:
            spans[-1][1] = f
        prev = lab
    if len(spans) != len(tokens):
        return None
    return [(a, b) for a, b in spans]


class TimedWord(NamedTuple):
    """A display word and its frame span within the segment (end exclusive), and its
    confidence in [0, 1] when known."""

    word: str
    start_frame: int
    end_frame: int
    conf: float | None = None


def time_display_words(text: str, logp, tokenizer, blank_id: int = 0) -> list[TimedWord] | None:
    """Time each whitespace word of ``text`` by CTC alignment of its normalized form.

    The normalized words are encoded with the CTC head's ``tokenizer`` (sentencepiece:
    a piece starting with ``▁`` begins a word) and aligned; a display word without
    letters takes the end of the word before it (or the start of the next). None when the
    alignment is impossible.
    """
    disp = text.split()
    norms = [normalize_word(w) for w in disp]
    spoken = [n for n in norms if n]
    if not spoken:
        return [] if not disp else None
    pieces: list[int] = []
    owner: list[int] = []
    for k, w in enumerate(spoken):
        ids = tokenizer.encode(w)
        pieces += ids
        owner += [k] * len(ids)
    spans = ctc_align(logp, pieces, blank_id)
    if spans is None:
        return None
    word_span: dict[int, list[int]] = {}
    for (a, b), k in zip(spans, owner):
        s = word_span.setdefault(k, [a, b + 1])
        s[1] = b + 1
    out: list[TimedWord] = []
    k = 0
    pending: list[str] = []
    for w, n in zip(disp, norms):
        if not n:
            if out:
                out.append(TimedWord(w, out[-1].end_frame, out[-1].end_frame))
            else:
                pending.append(w)
            continue
        a, b = word_span.get(k, (0, 0))
        for p in pending:
            out.append(TimedWord(p, a, a))
        pending = []
        out.append(TimedWord(w, a, b))
        k += 1
    return out


@dataclass(frozen=True)
class HybridConfig:
    """How a final is chosen.

    Attributes:
        ctc_weight: weight of the CTC log-likelihood against the attention decoder's
            (``score = (1 - w) * att + w * ctc``, both summed log-probs).
        max_tokens_per_s: longest plausible decoder output per second of audio (+ 8).
        max_words_ratio: a candidate with more than ``ratio * CTC words + 4`` words is
            treated as invented text (the decoder writing over music or silence).
        compression_ratio: candidates above it are loops (Whisper's 2.4).
    """

    ctc_weight: float = 0.3
    max_tokens_per_s: float = 8.0
    max_words_ratio: float = 2.5
    compression_ratio: float = 2.4


class Candidate(NamedTuple):
    text: str  # display text
    att_logp: float  # decoder log-prob summed over its tokens
    n_tokens: int


class HybridChoice(NamedTuple):
    text: str
    source: str  # "attention" | "ctc"
    score: float
    ctc_logp: float
    rejected: tuple[str, ...]  # why candidates were dropped ("loop", "long", "impossible")


def choose_final(candidates: Sequence[Candidate], logp, ctc_text: str, tokenizer, config: HybridConfig = HybridConfig(),
                 blank_id: int = 0) -> HybridChoice:
    """The hybrid decision at an endpoint.

    Candidates that loop, that are far longer than what the CTC head heard, or that CTC
    cannot align are dropped; the rest are ranked by ``(1 - w) * att + w * ctc``. When
    none is left, the CTC text itself is the final (lowercase, no punctuation).

    Args:
        candidates: the decoder's n-best.
        logp: (T, V) CTC log-probs of the segment.
        ctc_text: the CTC prefix beam's best text (the last partial).
        tokenizer: the CTC head's tokenizer (``encode``).
    """
    ctc_words = len(ctc_text.split())
    rejected: list[str] = []
    best: tuple[float, Candidate, float] | None = None
    w = config.ctc_weight
    for c in candidates:
        words = c.text.split()
        if not normalize_text(c.text):
            rejected.append("empty")
            continue
        if has_repetition_loop(words) or compression_ratio(c.text) > config.compression_ratio:
            rejected.append("loop")
            continue
        if len(words) > config.max_words_ratio * ctc_words + 4:
            rejected.append("long")
            continue
        ids = tokenizer.encode(normalize_text(c.text))
        ctc = ctc_sequence_logp(logp, ids, blank_id)
        if not np.isfinite(ctc):
            rejected.append("impossible")
            continue
        s = (1.0 - w) * c.att_logp + w * ctc
        if best is None or s > best[0]:
            best = (s, c, ctc)
    if best is None:
        ids = tokenizer.encode(ctc_text) if ctc_text else []
        return HybridChoice(ctc_text, "ctc", float("nan"), ctc_sequence_logp(logp, ids, blank_id), tuple(rejected))
    return HybridChoice(best[1].text.strip(), "attention", best[0], best[2], tuple(rejected))


def word_edits(a: str, b: str) -> int:
    """Word edits (substitutions + deletions + insertions, jiwer) between two display texts
    after :func:`normalize_text`; an empty side costs the other's words."""
    import jiwer

    x, y = normalize_text(a), normalize_text(b)
    if not x or not y:
        return len(x.split()) + len(y.split())
    o = jiwer.process_words(x, y)
    return o.substitutions + o.deletions + o.insertions


def consensus_index(texts: Sequence[str]) -> int:
    """The index of the text nearest, in word edits (:func:`word_edits`), to the others in
    total: the medoid of several readings of one segment; ties go to the earliest.
    Consensus speech finals (``JRSVPipeline.speech_final_consensus``) and
    ``bench/final_input_choice.py`` choose with it."""
    if not texts:
        raise ValueError("consensus_index needs at least one text")
    return min(range(len(texts)), key=lambda k: (sum(word_edits(texts[k], texts[o]) for o in range(len(texts)) if o != k), k))
