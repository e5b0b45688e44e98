"""Token n-gram LM: Kneser-Ney values, normalization, files, and shallow fusion in the CTC
prefix beam search (streaming == offline, the LM changes what wins, rescoring keeps it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jrsv_stream.decode.ctc_prefix_beam import PrefixBeamConfig, best, nbest, prefix_beam_search
from jrsv_stream.decode.ngram_lm import LMError, TokenNgramLM, load_model_lm
from jrsv_stream.decode.rescoring import attention_rescore

V, EOS = 8, 2  # ids 0 blank, 1 unk, 2 sos/eos, 3..7 tokens


def random_corpus(seed: int, n: int = 200) -> list[list[int]]:
    """Sentences from a Markov chain over tokens 3..7 (a structure the LM can learn)."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(5, 0.3), size=5)
    out = []
    for _ in range(n):
        t, s = int(rng.integers(5)), []
        for _ in range(int(rng.integers(2, 9))):
            s.append(t + 3)
            t = int(rng.choice(5, p=trans[t]))
        out.append(s)
    return out


def test_bigram_values_match_hand_computed_kneser_ney():
    # corpus: "3 4" and "3 5"; order 2 with <s> = </s> = 2
    lm = TokenNgramLM.train([[3, 4], [3, 5]], order=2, vocab_size=V, bos_eos_id=EOS)
    # bigrams (2,3) x2, (3,4), (3,5), (4,2), (5,2): counts of counts n1 = 4, n2 = 1
    d2 = 4 / (4 + 2 * 1)
    # unigram continuation counts: 3 <- {2}, 4 <- {3}, 5 <- {3}, 2 <- {4, 5}: n1 = 3, n2 = 1
    d1 = 3 / (3 + 2 * 1)
    cont = {3: 1, 4: 1, 5: 1, 2: 2}
    total = sum(cont.values())
    p1 = {w: max(c - d1, 0) / total + d1 * len(cont) / total / V for w, c in cont.items()}
    p1_unseen = d1 * len(cont) / total / V
    # P(4 | 3): c(3,4) = 1, c(3) = 2, two types follow 3
    want = max(1 - d2, 0) / 2 + d2 * 2 / 2 * p1[4]
    lp = lm.logprobs(lm.context_of([3]))
    assert math.exp(lp[4]) == pytest.approx(want, rel=1e-12)
    assert math.exp(lp[6]) == pytest.approx(d2 * 2 / 2 * p1_unseen, rel=1e-12)
    # an unseen context backs off to the unigram distribution
    assert math.exp(lm.logprobs(lm.context_of([7]))[3]) == pytest.approx(p1[3], rel=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_context_is_a_distribution(order):
    lm = TokenNgramLM.train(random_corpus(0), order, V, EOS)
    rng = np.random.default_rng(1)
    for _ in range(50):
        ctx = lm.context_of(rng.integers(0, V, size=int(rng.integers(0, 6))).tolist())
        assert np.exp(lm.logprobs(ctx)).sum() == pytest.approx(1.0, abs=1e-9)


def test_learns_the_structure_and_higher_orders_help_on_held_out_text():
    train, held_out = random_corpus(0, 400), random_corpus(0, 450)[400:]
    ppl = [TokenNgramLM.train(train, k, V, EOS).perplexity(held_out) for k in (1, 2, 3)]
    assert ppl[1] < 0.8 * ppl[0]  # the chain's transitions are learned
    assert ppl[2] <= ppl[1] * 1.05
    lm = TokenNgramLM.train(train, 3, V, EOS)
    rng = np.random.default_rng(5)
    shuffled = [list(rng.permutation(s)) for s in held_out]
    assert lm.perplexity(held_out) < lm.perplexity([[6] * len(s) for s in shuffled])


def test_save_load_round_trip_and_corrupt_files(tmp_path):
    lm = TokenNgramLM.train(random_corpus(0), 4, V, EOS, weight=0.4, token_bonus=1.5)
    lm.save(tmp_path / "lm.npz")
    back = load_model_lm(tmp_path)
    assert (back.order, back.weight, back.token_bonus) == (4, 0.4, 1.5)
    rng = np.random.default_rng(2)
    for _ in range(30):
        ctx = lm.context_of(rng.integers(0, V, size=4).tolist())
        np.testing.assert_allclose(back.logprobs(ctx), lm.logprobs(ctx), rtol=1e-6)
    assert load_model_lm(tmp_path / "nothing-here") is None
    with pytest.raises(LMError, match="not found"):
        TokenNgramLM.load(tmp_path / "missing.npz")
    data = (tmp_path / "lm.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(LMError, match="cut.npz"):
        TokenNgramLM.load(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x00" * 100)
    with pytest.raises(LMError, match="junk.npz"):
        TokenNgramLM.load(tmp_path / "junk.npz")
    # tables that do not add up are refused, not used
    z = dict(np.load(tmp_path / "lm.npz"))
    z["lens2"] = z["lens2"][:-1]
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(LMError, match="inconsistent"):
        TokenNgramLM.load(tmp_path / "bad.npz")


def test_a_fusion_file_overrides_the_stored_point_and_bad_ones_are_refused(tmp_path):
    TokenNgramLM.train(random_corpus(0), 3, V, EOS, weight=0.8, token_bonus=3.5).save(tmp_path / "lm.npz")
    (tmp_path / "lm_fusion.json").write_text('{"weight": 0.3, "token_bonus": 3.0, "tuned_on": {}}')
    lm = load_model_lm(tmp_path)
    assert (lm.weight, lm.token_bonus) == (0.3, 3.0)
    assert TokenNgramLM.load(tmp_path / "lm.npz").weight == 0.8  # the LM file itself is untouched
    for bad, what in (('{"weight": 0.3}', "token_bonus"), ("{oops", "unreadable"),
                      ('{"weight": -1, "token_bonus": 1}', ">= 0"), ('{"weight": "NaN", "token_bonus": 1}', "finite")):
        (tmp_path / "lm_fusion.json").write_text(bad)
        with pytest.raises(LMError, match=what):
            load_model_lm(tmp_path)


def test_bad_arguments():
    with pytest.raises(LMError):
        TokenNgramLM.train([], 3, V, EOS)
    with pytest.raises(LMError):
        TokenNgramLM.train([[3]], 0, V, EOS)
    with pytest.raises(LMError):
        TokenNgramLM.train([[3]], 2, V, bos_eos_id=V)
    with pytest.raises(ValueError):
        PrefixBeamConfig(lm_weight=-1.0)


# --- fusion ---------------------------------------------------------------------------------
def ambiguous_logp() -> np.ndarray:
    """Blank, then a frame where tokens 4 and 5 are equally likely, then blank, then 3."""
    rows = []
    for probs in ({0: 0.98}, {4: 0.45, 5: 0.45}, {0: 0.98}, {3: 0.9}, {0: 0.98}):
        p = np.full(V, 1e-4)
        for k, v in probs.items():
            p[k] = v
        rows.append(np.log(p / p.sum()))
    return np.array(rows)


def test_the_lm_decides_between_acoustically_equal_tokens():
    lm = TokenNgramLM.train([[5, 3]] * 20 + [[4, 6]] * 20, 3, V, EOS)
    logp = ambiguous_logp()
    plain = PrefixBeamConfig(beam=8, nbest=8)
    fused = PrefixBeamConfig(beam=8, nbest=8, lm=lm, lm_weight=0.5, token_bonus=0.0)
    assert best(prefix_beam_search(logp, plain), plain).tokens in {(4, 3), (5, 3)}
    hyp = best(prefix_beam_search(logp, fused), fused)
    assert hyp.tokens == (5, 3)  # "5 3" is what the LM has seen
    assert hyp.lm_score == pytest.approx(0.5 * lm.score([5, 3], eos=False), abs=1e-9)
    assert hyp.score == pytest.approx(hyp.ctc_logp + hyp.lm_score, abs=1e-9)
    # the weight of 0 switches the LM off; the bonus adds per token
    off = PrefixBeamConfig(beam=8, nbest=8, lm=lm, lm_weight=0.0, token_bonus=0.0)
    assert off.fusion is None
    bonus = PrefixBeamConfig(beam=8, nbest=8, lm=lm, lm_weight=0.5, token_bonus=1.25)
    h = best(prefix_beam_search(logp, bonus), bonus)
    assert h.lm_score == pytest.approx(0.5 * lm.score(list(h.tokens), eos=False) + 1.25 * len(h.tokens), abs=1e-9)


def test_fused_search_is_the_same_streaming_and_offline():
    rng = np.random.default_rng(3)
    lm = TokenNgramLM.train(random_corpus(1), 4, V, EOS)
    x = rng.normal(size=(60, V))
    x[:, 0] += 3.0
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    cfg = PrefixBeamConfig(beam=6, nbest=6, lm=lm, lm_weight=0.6, token_bonus=0.8)
    ref = nbest(prefix_beam_search(logp, cfg), config=cfg)
    for chunk in (1, 7, 16):
        got = nbest(prefix_beam_search(logp, cfg, chunk_frames=chunk), config=cfg)
        assert [(h.tokens, h.token_frames) for h in got] == [(h.tokens, h.token_frames) for h in ref]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in ref], atol=1e-9)


def test_rescoring_keeps_the_lm_score_at_its_weight():
    lm = TokenNgramLM.train([[5, 3]] * 20 + [[4, 6]] * 20, 3, V, EOS)
    cfg = PrefixBeamConfig(beam=8, nbest=8, lm=lm, lm_weight=0.5, token_bonus=0.3)
    hyps = nbest(prefix_beam_search(ambiguous_logp(), cfg), config=cfg)
    res = attention_rescore(hyps, 0.5, lambda hs: np.zeros(len(hs)))
    for r in res:
        h = next(h for h in hyps if h.tokens == r.tokens)
        assert r.lm_score == pytest.approx(h.lm_score)
        assert r.ctc_score == pytest.approx(h.ctc_logp + h.context_score)
        assert r.score == pytest.approx(0.5 * r.ctc_score + r.lm_score)
    assert res[0].tokens == (5, 3)


def test_sessions_on_several_threads_can_share_one_lm():
    import threading

    lm = TokenNgramLM.train(random_corpus(0), 4, V, EOS, cache_size=8)  # tiny cache: cleared all the time
    ref = {c: lm.logprobs(c).copy() for c in {lm.context_of(s[:k]) for s in random_corpus(2, 40) for k in range(4)}}
    errors = []

    def run(seed):
        rng = np.random.default_rng(seed)
        keys = list(ref)
        try:
            for _ in range(3000):
                c = keys[int(rng.integers(len(keys)))]
                if not np.array_equal(lm.logprobs(c), ref[c]):
                    errors.append(c)
        except Exception as e:  # noqa: BLE001 - any exception is the failure under test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
