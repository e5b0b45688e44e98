"""Attention rescoring (one batched call, combined score, order) and word times."""

from __future__ import annotations

import numpy as np
import pytest

from jrsv_stream.decode.ctc_prefix_beam import Hypothesis, PrefixBeamConfig, nbest, prefix_beam_search
from jrsv_stream.decode.rescoring import RescoredHypothesis, WordTime, attention_rescore, words_with_times
from jrsv_stream.decode.tokenizer import train_tokenizer


class CountingScorer:
    """Deterministic 'attention decoder': log p = -0.5 per token - 1.0 per odd token - 0.1 (eos)."""

    def __init__(self, two_columns: bool = False):
        self.calls: list[list[list[int]]] = []
        self.two_columns = two_columns

    def __call__(self, hyps: list[list[int]]) -> np.ndarray:
        self.calls.append(hyps)
        l2r = np.array([-0.5 * len(h) - 1.0 * sum(t % 2 for t in h) - 0.1 for h in hyps])
        if self.two_columns:
            r2l = np.array([-float(h[0]) if h else 0.0 for h in hyps])
            return np.stack([l2r, r2l], axis=1)
        return l2r


NBEST = [
    Hypothesis((1, 3), -1.0, (2, 5)),   # att -0.5*2 - 2 - 0.1 = -3.1
    Hypothesis((2, 4), -1.5, (2, 5)),   # att -1.1
    Hypothesis((2,), -2.4, (2,)),       # att -0.6
    Hypothesis((), -6.0, ()),           # att -0.1
]


def test_one_batched_call_and_combined_score():
    fn = CountingScorer()
    out = attention_rescore(NBEST, ctc_weight=0.5, attention_score_fn=fn)
    assert len(fn.calls) == 1 and fn.calls[0] == [[1, 3], [2, 4], [2], []]
    assert all(isinstance(r, RescoredHypothesis) for r in out)
    by_tokens = {r.tokens: r for r in out}
    for h, att in zip(NBEST, [-3.1, -1.1, -0.6, -0.1]):
        r = by_tokens[h.tokens]
        assert r.attention_score == pytest.approx(att) and r.ctc_score == h.score
        assert r.score == pytest.approx(att + 0.5 * h.score) and r.token_frames == h.token_frames
    assert [r.tokens for r in out] == [(2,), (2, 4), (), (1, 3)]  # -1.8, -1.85, -3.1, -3.6
    assert [r.score for r in out] == sorted((r.score for r in out), reverse=True)
    # With a large CTC weight the CTC order comes back.
    assert [r.tokens for r in attention_rescore(NBEST, 100.0, CountingScorer())] == [h.tokens for h in NBEST]


def test_reverse_weight():
    fn = CountingScorer(two_columns=True)
    out = attention_rescore(NBEST, 0.0, fn, reverse_weight=0.25)
    r = {x.tokens: x for x in out}
    assert r[(1, 3)].attention_score == pytest.approx(0.75 * -3.1 + 0.25 * -1.0)
    assert r[(2, 4)].attention_score == pytest.approx(0.75 * -1.1 + 0.25 * -2.0)
    # reverse_weight 0 with two columns uses the left-to-right one.
    assert {x.tokens: x.attention_score for x in attention_rescore(NBEST, 0.0, CountingScorer(True))}[(1, 3)] \
        == pytest.approx(-3.1)


def test_errors_and_empty():
    fn = CountingScorer()
    assert attention_rescore([], 0.5, fn) == [] and fn.calls == []
    with pytest.raises(ValueError, match="reverse_weight"):
        attention_rescore(NBEST, 0.5, CountingScorer(), reverse_weight=0.3)
    with pytest.raises(ValueError, match="shape"):
        attention_rescore(NBEST, 0.5, lambda hyps: np.zeros(len(hyps) + 1))
    with pytest.raises(ValueError):
        attention_rescore(NBEST, 0.5, CountingScorer(), reverse_weight=1.5)


def test_rescores_a_real_nbest():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 9))
    x[:, 0] += 3.0
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    hyps = nbest(prefix_beam_search(logp, PrefixBeamConfig(beam=8, nbest=8), chunk_frames=8), 8)
    out = attention_rescore(hyps, 0.3, CountingScorer())
    assert sorted(r.tokens for r in out) == sorted(h.tokens for h in hyps)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine",
             "every cloud has a silver lining", "fortune favors the bold"] * 30
    return train_tokenizer(texts, tmp_path_factory.mktemp("sp") / "tok", vocab_size=50)


def test_words_with_times(tok):
    text = "the lazy fox saves nine"
    ids = tok.encode(text)
    frames = [10 + 3 * i for i in range(len(ids))]
    words = words_with_times(ids, frames, tok, frame_shift_s=0.04)
    assert [w.word for w in words] == text.split()
    assert all(isinstance(w, WordTime) for w in words)
    # Start = first piece's frame, end = last piece's frame + 1 frame.
    i = 0
    for w in words:
        n = len(tok.encode(w.word))
        assert w.start_s == pytest.approx(frames[i] * 0.04)
        assert w.end_s == pytest.approx((frames[i + n - 1] + 1) * 0.04)
        i += n
    assert all(a.end_s <= b.start_s for a, b in zip(words, words[1:]))
    assert words_with_times([], [], tok, 0.04) == []
    with pytest.raises(ValueError):
        words_with_times(ids, frames[:-1], tok, 0.04)
    # A leading piece without the word-start mark still forms a word.
    mid = [i for i in range(3, tok.vocab_size) if not tok.is_word_start(i)][0]
    assert words_with_times([mid], [4], tok, 0.04) == [WordTime(tok.decode([mid]), 0.16, 0.2)]
