"""Hotword biasing: Aho-Corasick graph scores and its effect inside the prefix beam search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jrsv_stream.decode.context import ROOT, ContextGraph, build_context_graph, hotwords_to_ids
from jrsv_stream.decode.ctc_prefix_beam import PrefixBeamConfig, best, nbest, prefix_beam_search


def test_graph_scores():
    s = 2.0
    g = ContextGraph([(1, 2, 3), (2, 3), (5,)], s)
    # Matching pays per token; a completed hotword keeps len * s.
    assert g.score_sequence([1, 2, 3]) == pytest.approx(3 * s + 2 * s)  # "2 3" ends inside "1 2 3" too
    assert g.score_sequence([2, 3]) == pytest.approx(2 * s)
    assert g.score_sequence([5]) == pytest.approx(s)
    assert g.score_sequence([9, 5, 9, 5]) == pytest.approx(2 * s)
    # Partial matches give their bonus back, on a mismatch or at the end.
    assert g.score_sequence([1, 2]) == pytest.approx(0.0)
    assert g.score_sequence([1, 2, 4]) == pytest.approx(0.0)
    assert g.score_sequence([1, 2], finalize=False) == pytest.approx(2 * s)
    # A mismatch restarts the match at the second 1 (fail arc to the root's child).
    assert g.score_sequence([1, 1, 2, 3]) == pytest.approx(5 * s)
    # The fail arc keeps the longest suffix still in the trie: "1 2" + 4 -> "2 4" completes.
    g2 = ContextGraph([(1, 2, 3), (2, 4)], s)
    assert g2.score_sequence([1, 2, 4]) == pytest.approx(2 * s)
    assert g2.score_sequence([1, 2, 4], finalize=False) == pytest.approx(4 * s)
    delta, node = g.forward(ROOT, 7)
    assert delta == 0.0 and node == ROOT


def test_graph_cache_and_empty():
    assert build_context_graph((), 3.0) is None
    assert build_context_graph(((1, 2),), 0.0) is None
    assert build_context_graph(((1, 2),), 3.0) is build_context_graph(((1, 2),), 3.0)
    with pytest.raises(ValueError):
        ContextGraph([(1,)], -1.0)


def _two_way(frames_per_token: int = 3) -> np.ndarray:
    """Hotword (3, 4) vs competitor (5, 6): each spike frame gives the competitor 0.5 and the
    hotword token 0.4, so the competitor wins acoustically by about 2 * log(5/4)."""
    V = 8
    rows = []
    for hot, comp in ((3, 5), (4, 6)):
        for _ in range(frames_per_token - 1):
            r = np.full(V, 0.001)
            r[0] = 1.0
            rows.append(r)
        r = np.full(V, 0.001)
        r[0], r[comp], r[hot] = 0.1, 0.5, 0.4
        rows.append(r)
    r = np.full(V, 0.001)
    r[0] = 1.0
    rows.append(r)
    p = np.array(rows)
    return np.log(p / p.sum(axis=1, keepdims=True))


def test_hotword_wins_with_biasing_loses_without():
    logp = _two_way()
    plain = best(prefix_beam_search(logp, PrefixBeamConfig()))
    assert plain.tokens == (5, 6)
    cfg = PrefixBeamConfig(hotwords=((3, 4),), context_score=1.0)
    for chunk in (1, 2, None):
        biased = best(prefix_beam_search(logp, cfg, chunk_frames=chunk), cfg)
        assert biased.tokens == (3, 4)
        assert biased.context_score == pytest.approx(2.0)
        assert biased.score == pytest.approx(biased.ctc_logp + 2.0)
        assert biased.ctc_logp < plain.ctc_logp  # it won by the bonus, not acoustically


def test_partial_hotword_does_not_stick():
    logp = _two_way()
    # (3, 4, 7) never completes: (3, 4) may lead while 7 could still come, but the final
    # ranking gives the bonus back and the acoustic winner returns.
    cfg = PrefixBeamConfig(hotwords=((3, 4, 7),), context_score=1.0)
    state = prefix_beam_search(logp, cfg)
    assert state.hyps[0].tokens == (3, 4)  # in-search ranking holds the partial bonus
    hyps = nbest(state, config=cfg)
    assert hyps[0].tokens == (5, 6)
    partial = next(h for h in hyps if h.tokens == (3, 4))
    assert partial.context_score == pytest.approx(0.0) and partial.score == pytest.approx(partial.ctc_logp)


def test_hotwords_to_ids():
    class Tok:
        def encode(self, text):
            return [ord(c) for c in text]

    assert hotwords_to_ids(["ab", " ", "ab", "c"], Tok()) == ((97, 98), (99,))
    assert math.isfinite(PrefixBeamConfig(hotwords=hotwords_to_ids(["ab"], Tok())).context_score)
