"""Hypotheses that check a draft in one decoder pass (``greedy_decode(draft=)``, speculative
decoding with the previous hypothesis as the guess), the cache cut behind it
(``cache_truncate``), beam search over several hearings of one utterance
(``beam_decode(views=)``), and the session handing each hypothesis the previous one's
uncommitted words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jrsv_stream.nn.whisper import DecoderCache, cache_length, cache_truncate, faster_whisper_mel
from jrsv_stream.nn.whisper_decode import beam_decode, greedy_decode
from tests.test_whisper import librivox, tiny  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def feats(tiny, librivox):  # noqa: F811
    with torch.no_grad():
        return tiny.embed_audio(torch.cat([faster_whisper_mel(a) for a, _ in librivox[:3]]))


def _count_decoder_calls(model):
    calls = []
    handle = model.decoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[1]))
    return calls, handle


def test_a_draft_changes_nothing_but_the_number_of_decoder_calls(tiny, feats):  # noqa: F811
    for k in range(feats.shape[0]):
        f = feats[k:k + 1]
        sc0, tl0 = [], []
        with torch.no_grad():
            plain = greedy_decode(tiny, f, scores=sc0, token_logps=tl0)[0]
        n = len(plain)
        drafts = {
            "all of it": plain,
            "its first half": plain[: n // 2],
            "right, then wrong": plain[: n // 2] + [plain[0]] * 3,
            "wrong from the start": [tiny.tokenizer.encode(" zebra")[0]] + plain,
            "longer than the output": plain + plain,
        }
        for name, d in drafts.items():
            calls, h = _count_decoder_calls(tiny)
            sc, tl = [], []
            try:
                with torch.no_grad():
                    out = greedy_decode(tiny, f, scores=sc, token_logps=tl, draft=d)[0]
            finally:
                h.remove()
            assert out == plain, name
            assert sc[0] == pytest.approx(sc0[0], abs=1e-3), name
            assert np.allclose(tl[0], tl0[0], atol=1e-3), name
            if name == "all of it":  # the prompt pass, the draft pass: <|endoftext|> comes from the draft's last logits
                assert calls == [calls[0], n]
            if name == "its first half":  # the other half token by token
                assert len(calls) == 2 + (n - n // 2)


def test_without_a_draft_one_decoder_call_per_token(tiny, feats):  # noqa: F811
    calls, h = _count_decoder_calls(tiny)
    try:
        with torch.no_grad():
            out = greedy_decode(tiny, feats[:1])[0]
    finally:
        h.remove()
    assert len(calls) == 1 + len(out)  # the prompt, then one call per token before <|endoftext|>


def test_a_draft_is_ignored_for_a_batch(tiny, feats):  # noqa: F811
    with torch.no_grad():
        plain = greedy_decode(tiny, feats)
        drafted = greedy_decode(tiny, feats, draft=plain[0])
    assert drafted == plain


def test_cache_truncate_cuts_self_attention_only():
    k = torch.randn(2, 4, 7, 8)
    xa = torch.randn(2, 4, 30, 8)
    cache = DecoderCache({"self.0": (k, k + 1), "self.1": (k, k), "cross.0": (xa, xa)})
    cache_truncate(cache, 5)
    assert cache_length(cache) == 5
    assert torch.equal(cache["self.0"][1], (k + 1)[:, :, :5])
    assert cache["cross.0"][0].shape[2] == 30


def test_beam_search_over_one_hearing_twice_is_the_plain_search(tiny, feats):  # noqa: F811
    """The views' mean log-prob of two identical hearings is that hearing's: the same n-best,
    the same scores; a second, different hearing changes the scores."""
    f = feats[:1]
    with torch.no_grad():
        plain = beam_decode(tiny, f, beam=3)
        twice = beam_decode(tiny, f, beam=3, views=(f.clone(),))
        other = beam_decode(tiny, f, beam=3, views=(feats[1:2],))
    assert [t for t, _, _ in twice] == [t for t, _, _ in plain]
    assert [s for _, s, _ in twice] == pytest.approx([s for _, s, _ in plain], abs=1e-4)
    assert [s for _, s, _ in other] != pytest.approx([s for _, s, _ in plain], abs=1e-2)
    with pytest.raises(ValueError, match="one utterance"):
        beam_decode(tiny, f, beam=3, views=(feats,))
