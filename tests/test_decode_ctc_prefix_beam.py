"""CTC prefix beam search: exact on tiny cases, streaming == offline, timestamps, pruning."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from jrsv_stream.decode import ctc_prefix_beam
from jrsv_stream.decode.ctc_prefix_beam import (Hypothesis, PrefixBeamConfig, best, ctc_greedy, init_state, nbest,
                                                prefix_beam_search, prefix_beam_step, prefix_hash)

EXACT = dict(top_k=100, prune_threshold=math.inf, blank_skip_prob=None)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def brute_force(logp: np.ndarray, blank: int = 0) -> dict[tuple[int, ...], float]:
    """log p(label sequence) by summing over every alignment (V**T paths)."""
    T, V = logp.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        labels, prev = [], None
        for p in path:
            if p != prev and p != blank:
                labels.append(p)
            prev = p
        s = float(sum(logp[t, p] for t, p in enumerate(path)))
        key = tuple(labels)
        out[key] = float(np.logaddexp(out.get(key, -np.inf), s))
    return out


def peaky_logp(rng: np.random.Generator, T: int, V: int, period: int = 3, blank: int = 0) -> np.ndarray:
    """Mostly-blank posteriors with a token spike (and a competitor) every ``period`` frames."""
    x = rng.normal(size=(T, V))
    x[:, blank] += 8.0
    for t in range(1, T, period):
        a, b = rng.choice(np.arange(1, V), size=2, replace=False)
        x[t, a] += 11.0
        x[t, b] += 10.0
    return log_softmax(x)


@pytest.mark.parametrize("seed,T,V", [(0, 5, 3), (1, 6, 4), (2, 7, 3), (3, 4, 5)])
def test_matches_brute_force(seed, T, V):
    rng = np.random.default_rng(seed)
    logp = log_softmax(rng.normal(size=(T, V)) * 2.0)
    exact = brute_force(logp)
    cfg = PrefixBeamConfig(beam=5000, nbest=5000, **EXACT)
    hyps = nbest(prefix_beam_search(logp, cfg), config=cfg)
    # An unpruned prefix search enumerates every label sequence with its exact probability.
    assert {h.tokens for h in hyps} == set(exact)
    for h in hyps:
        assert h.score == pytest.approx(exact[h.tokens], abs=1e-9)
        assert h.ctc_logp == h.score and h.context_score == 0.0
    top = max(exact, key=exact.get)
    assert hyps[0].tokens == top
    # Beam 20 (wide for these sizes) is exact; beam 10 still finds the best sequence, and
    # its score is a lower bound (pruned prefixes no longer feed their extensions).
    wide = best(prefix_beam_search(logp, PrefixBeamConfig(beam=20, nbest=1, **EXACT)))
    assert wide.tokens == top and wide.score == pytest.approx(exact[top], abs=1e-9)
    b = best(prefix_beam_search(logp, PrefixBeamConfig(**EXACT)))
    assert b.tokens == top and exact[top] - 0.05 <= b.score <= exact[top] + 1e-12


def test_blank_not_zero():
    rng = np.random.default_rng(5)
    logp = log_softmax(rng.normal(size=(5, 3)) * 2.0)
    moved = logp[:, [1, 2, 0]]  # blank at index 2
    exact = brute_force(logp)
    cfg = PrefixBeamConfig(beam=500, nbest=500, blank_id=2, **EXACT)
    to_orig = {0: 1, 1: 2}  # moved column j holds original token to_orig[j]
    hyps = nbest(prefix_beam_search(moved, cfg), config=cfg)
    assert len(hyps) == len(exact)
    for h in hyps:
        assert h.score == pytest.approx(exact[tuple(to_orig[t] for t in h.tokens)], abs=1e-9)


@pytest.mark.parametrize("cfg", [
    PrefixBeamConfig(**EXACT),
    PrefixBeamConfig(),  # default pruning + blank skipping
    PrefixBeamConfig(beam=3, nbest=3, top_k=2, prune_threshold=4.0),
    PrefixBeamConfig(hotwords=((3, 4), (7, 8, 9), (4,)), context_score=2.0),
])
def test_streaming_equals_offline(cfg):
    rng = np.random.default_rng(11)
    logp = peaky_logp(rng, T=60, V=12)
    logp[30:35] = log_softmax(rng.normal(size=(5, 12)))  # an ambiguous stretch
    ref = prefix_beam_search(logp, cfg)
    for chunk in (1, 4, 7, 60):
        got = prefix_beam_search(logp, cfg, chunk_frames=chunk)
        assert got == ref, f"chunk {chunk}"  # identical state: tokens, scores, frames
        assert nbest(got, config=cfg) == nbest(ref, config=cfg)
    # Irregular chunks, float32 input, and the explicit step API.
    state, a = init_state(cfg), 0
    for size in (3, 0, 10, 1, 46):
        state = prefix_beam_step(state, logp[a:a + size], cfg)
        a += size
    assert state == ref and state.num_frames == 60


def test_timestamps_and_greedy():
    V, T = 6, 20
    logp = np.full((T, V), math.log(0.02))
    logp[:, 0] = math.log(0.9)
    spikes = {2: 3, 3: 3, 8: 5, 9: 5, 13: 1, 17: 1}  # frame -> token (3 3 = one token, 1 _ 1 = two)
    for t, tok in spikes.items():
        logp[t] = math.log(0.02)
        logp[t, tok] = math.log(0.9)
    logp = log_softmax(logp)
    hyp = best(prefix_beam_search(logp, PrefixBeamConfig(), chunk_frames=4, start_frame=100))
    assert hyp.tokens == (3, 5, 1, 1)
    assert hyp.token_frames == (102, 108, 113, 117)
    g = ctc_greedy(logp, start_frame=100)
    assert g.tokens == hyp.tokens and g.token_frames == hyp.token_frames
    assert g.score == pytest.approx(float(logp.max(axis=1).sum()))


def test_timestamps_monotonic_on_random_posteriors():
    rng = np.random.default_rng(3)
    logp = peaky_logp(rng, T=120, V=30)
    state = prefix_beam_search(logp, PrefixBeamConfig(), chunk_frames=8)
    hyps = nbest(state)
    assert len(hyps) == 10
    for h in hyps:
        assert len(h.token_frames) == len(h.tokens)
        assert all(a < b for a, b in zip(h.token_frames, h.token_frames[1:]))
        assert all(0 <= f < 120 for f in h.token_frames)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    # Token spikes are every 3 frames from frame 1: the best path emits on them.
    assert all(f % 3 == 1 for f in hyps[0].token_frames)


def test_pruned_search_agrees_with_exact_on_peaky_input():
    rng = np.random.default_rng(7)
    logp = peaky_logp(rng, T=90, V=20)
    exact = best(prefix_beam_search(logp, PrefixBeamConfig(beam=30, nbest=1, **EXACT)))
    fast = best(prefix_beam_search(logp, PrefixBeamConfig(), chunk_frames=8))
    assert fast.tokens == exact.tokens
    assert fast.score == pytest.approx(exact.score, abs=1e-2)


def test_trailing_blanks_and_state_is_not_mutated():
    logp = log_softmax(np.array([[0.0, 5.0, 0.0]] + [[5.0, 0.0, 0.0]] * 4))
    s0 = init_state()
    s1 = prefix_beam_step(s0, logp[:3])
    assert s0 == init_state() and s1.trailing_blank_frames == 2 and s1.num_frames == 3
    s2 = prefix_beam_step(s1, logp[3:])
    assert s2.trailing_blank_frames == 4 and best(s2).tokens == (1,)
    assert prefix_beam_step(s2, np.zeros((0, 3))) is s2


def test_errors():
    with pytest.raises(ValueError):
        prefix_beam_step(init_state(), np.zeros(5))
    with pytest.raises(ValueError):
        prefix_beam_step(init_state(), np.zeros((2, 3)), PrefixBeamConfig(blank_id=3))
    for bad in (dict(beam=0), dict(nbest=11), dict(blank_skip_prob=1.0), dict(prune_threshold=0.0),
                dict(context_score=-1.0)):
        with pytest.raises(ValueError):
            PrefixBeamConfig(**bad)
    assert PrefixBeamConfig(hotwords=[[1, 2]]).hotwords == ((1, 2),)  # lists from YAML
    assert ctc_greedy(np.zeros((0, 4))) == Hypothesis((), 0.0, (), 0.0, 0.0)


def test_prefix_hash_collisions_do_not_change_results(monkeypatch):
    rng = np.random.default_rng(1)
    logp = log_softmax(rng.normal(size=(6, 4)) * 2.0)
    exact = brute_force(logp)
    cfg = PrefixBeamConfig(beam=5000, nbest=5000, **EXACT)
    state = prefix_beam_search(logp, cfg)
    assert all(h.prefix_hash == prefix_hash(h.tokens) for h in state.hyps)
    monkeypatch.setattr(ctc_prefix_beam, "_HASH_MOD", 5)  # nearly every prefix collides
    hyps = nbest(prefix_beam_search(logp, cfg), config=cfg)
    assert len(hyps) == len(exact)
    for h in hyps:
        assert h.score == pytest.approx(exact[h.tokens], abs=1e-9)
