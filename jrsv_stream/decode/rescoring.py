"""Attention rescoring of the CTC n-best at an endpoint, and word times for the final.

At an endpoint the prefix beam's n-best goes through the attention decoder in one batched
call (STYLE habit 5); the final is the hypothesis with the best
``attention + ctc_weight * ctc`` (WeNet's ``attention_rescoring``), plus the search's
shallow-fusion LM score when it used one (``Hypothesis.lm_score``, kept at its own weight).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np

from jrsv_stream.decode.ctc_prefix_beam import Hypothesis


class RescoredHypothesis(NamedTuple):
    """A rescored hypothesis.

    Attributes:
        tokens: label sequence.
        score: ``attention_score + ctc_weight * ctc_score + lm_score``.
        token_frames: absolute frame of each token (from the CTC search).
        ctc_score: the hypothesis' CTC score (CTC log-prob plus the finalized hotword
            bonus, so biasing survives rescoring).
        attention_score: attention-decoder log-prob of the tokens incl. ``<eos>``
            (``(1 - reverse_weight) * left-to-right + reverse_weight * right-to-left``).
    """

    tokens: tuple[int, ...]
    score: float
    token_frames: tuple[int, ...]
    ctc_score: float
    attention_score: float
    lm_score: float = 0.0


def attention_rescore(nbest: Sequence[Hypothesis], ctc_weight: float,
                      attention_score_fn: Callable[[list[list[int]]], np.ndarray],
                      reverse_weight: float = 0.0) -> list[RescoredHypothesis]:
    """Rescore an n-best list with an attention decoder, in one batched call.

    Args:
        nbest: CTC hypotheses (e.g. :func:`jrsv_stream.decode.ctc_prefix_beam.nbest`).
        ctc_weight: weight of the CTC score (WeNet uses 0.3-0.5).
        attention_score_fn: called once with the N token lists; returns (N,) summed
            log-probs of each hypothesis under the attention decoder, ``<eos>`` included,
            or (N, 2) with columns (left-to-right, right-to-left) for a bidirectional
            decoder. Called even for an empty hypothesis (its score is log p(<eos>)).
        reverse_weight: weight of the right-to-left score; > 0 needs the (N, 2) form.

    Returns:
        Rescored hypotheses, best first (ties keep the n-best order). Empty for an
        empty n-best (the function is then not called).

    Raises:
        ValueError: the function's output has the wrong shape, or ``reverse_weight`` is
            outside [0, 1] or > 0 with a (N,) output.
    """
    if not 0.0 <= reverse_weight <= 1.0:
        raise ValueError(f"reverse_weight must be in [0, 1], got {reverse_weight}")
    if not nbest:
        return []
    scores = np.asarray(attention_score_fn([list(h.tokens) for h in nbest]), dtype=np.float64)
    n = len(nbest)
    if scores.shape == (n,):
        if reverse_weight > 0:
            raise ValueError("reverse_weight > 0 needs attention_score_fn to return (N, 2) scores")
        att = scores
    elif scores.shape == (n, 2):
        att = (1.0 - reverse_weight) * scores[:, 0] + reverse_weight * scores[:, 1]
    else:
        raise ValueError(f"attention_score_fn returned shape {scores.shape}, expected ({n},) or ({n}, 2)")
    att_l = att.tolist()
    out = []
    for h, a in zip(nbest, att_l):
        ctc = h.score - h.lm_score
        out.append(RescoredHypothesis(h.tokens, a + ctc_weight * ctc + h.lm_score, h.token_frames, ctc, a, h.lm_score))
    out.sort(key=lambda r: r.score, reverse=True)  # stable: ties keep CTC order
    return out


class _WordPieces(Protocol):
    def is_word_start(self, token_id: int) -> bool: ...

    def decode(self, ids: list[int]) -> str: ...


class WordTime(NamedTuple):
    """A word of a final with its time span (seconds from the stream start)."""

    word: str
    start_s: float
    end_s: float
    conf: float | None = None  # the lowest confidence of its pieces, when given


def words_with_times(tokens: Sequence[int], token_frames: Sequence[int], tokenizer: _WordPieces,
                     frame_shift_s: float, token_conf: Sequence[float] | None = None) -> list[WordTime]:
    """Group pieces into words and time them from the CTC token frames.

    A word starts at a piece that begins with ``▁`` (``tokenizer.is_word_start``); pieces
    before the first such piece form a word of their own. Times are an approximation:
    CTC emits a token as a spike near its onset, not over its duration, so
    ``start = frame of the word's first piece`` and ``end = frame of its last piece + 1
    frame``; a word's real end can be later (long vowels, sung notes) and the gap before
    the next word is not attributed to either.

    Args:
        tokens: label sequence.
        token_frames: absolute frame of each token (same length).
        tokenizer: provides ``is_word_start`` and ``decode``.
        frame_shift_s: seconds per decoder frame (0.04).
        token_conf: optional confidence of each token; a word gets its pieces' lowest.

    Returns:
        Words in order; words that decode to empty text (specials) are dropped.

    Raises:
        ValueError: ``tokens`` and ``token_frames`` differ in length.
    """
    if len(tokens) != len(token_frames):
        raise ValueError(f"{len(tokens)} tokens but {len(token_frames)} token frames")
    confs = list(token_conf) if token_conf is not None else [None] * len(tokens)
    groups: list[tuple[list[int], list[int], list]] = []
    for tok, fr, c in zip(tokens, token_frames, confs):
        tok, fr = int(tok), int(fr)
        if not groups or tokenizer.is_word_start(tok):
            groups.append(([tok], [fr], [c]))
        else:
            groups[-1][0].append(tok)
            groups[-1][1].append(fr)
            groups[-1][2].append(c)
    words = []
    for ids, frames, cs in groups:
        text = tokenizer.decode(ids).strip()
        if text:
            conf = None if token_conf is None else min(cs)
            words.append(WordTime(text, frames[0] * frame_shift_s, (frames[-1] + 1) * frame_shift_s, conf))
    return words
