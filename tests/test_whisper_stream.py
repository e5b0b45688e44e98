"""The streaming window encoder over pretrained Whisper (streaming == offline, causality,
bad chunks) and the CTC/attention hybrid final rules (loops, invented text, word times)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.real_corpora import read_librivox_testdata
from jrsv_stream.nn.whisper_weights import load_whisper


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(2)
    return load_whisper("tiny.en")


@pytest.fixture(scope="module")
def librivox():
    return [(torch.from_numpy(load_audio(p)), t) for p, t in read_librivox_testdata()]


# ---------------------------------------------------------------------- streaming window encoder
def _streamed(m, a: torch.Tensor, chunk: int) -> torch.Tensor:
    """``m.step`` over ``a`` (singing track) chunk by chunk, the last chunk zero-padded ->
    the log-probs of every step joined (1, F, V)."""
    st = m.init_state(1, tracks=[1])
    lps = []
    for i in range(0, len(a), chunk):
        x = torch.nn.functional.pad(a[i:i + chunk], (0, max(0, i + chunk - len(a))))
        lp, _, st = m.step(x[None], st)
        lps.append(lp)
    return torch.cat(lps, 1)


@pytest.mark.parametrize("lookahead,rnn", [(0, 0), (1, 16)])
def test_window_encoder_streaming_equals_offline_and_is_causal(tiny, librivox, lookahead, rnn):
    """Also with one chunk of lookahead (frames of chunk k come from step k + 1: still
    causal in the input, lagged by a chunk) and an LSTM head carried in the state. In
    float32: under bfloat16 autocast a batch of windows and one window take different
    kernels (AMX), ~1e-2 apart (see the next test)."""
    from jrsv_stream.nn.whisper_ctc import HeadConfig, WhisperCTC, WhisperCTCConfig

    torch.manual_seed(0)
    m = WhisperCTC(WhisperCTCConfig(window_s=1.28, lookahead_chunks=lookahead, compute_dtype="float32",
                                    head=HeadConfig(hidden=32, rnn=rnn)), whisper=tiny).eval()
    a = librivox[4][0][: 16000 * 2]
    tracks = torch.tensor([1])
    chunk = 2560
    off_lp, off_enc = m(a[None], tracks, chunk_samples=chunk)
    stream = _streamed(m, a, chunk)
    assert stream.shape == off_lp.shape == (1, 104, 128)
    assert torch.allclose(stream, off_lp, atol=1e-4)
    if lookahead:  # step k emits the frames of chunk k - 1: the ones the window ends one chunk after
        win = m.all_windows(a, chunk)
        np.testing.assert_allclose(off_enc[0, 8:16].numpy(), m.encode_windows(win[1:2], 16)[0, :8].numpy(), atol=1e-4)
    # causality: changing audio after 1.28 s leaves every frame of the chunks before it unchanged
    b = a.clone()
    b[20480:] = torch.randn(len(b) - 20480) * 0.1
    lp_b, _ = m(b[None], tracks, chunk_samples=chunk)
    assert torch.allclose(lp_b[:, :64], off_lp[:, :64], atol=1e-5)
    assert not torch.allclose(lp_b[:, 64:], off_lp[:, 64:], atol=1e-3)


def test_window_encoder_bfloat16_streaming_close_to_offline(tiny, librivox):
    """The shipped compute dtype: streaming (one window a step) and offline (windows in a
    batch) agree to bfloat16 precision, and both stay close to float32."""
    from jrsv_stream.nn.whisper_ctc import HeadConfig, WhisperCTC, WhisperCTCConfig

    a = librivox[4][0][: 16000 * 2]
    tracks, chunk = torch.tensor([1]), 2560
    out = {}
    for dt in ("bfloat16", "float32"):
        torch.manual_seed(0)
        m = WhisperCTC(WhisperCTCConfig(window_s=1.28, compute_dtype=dt, head=HeadConfig(hidden=32)), whisper=tiny).eval()
        off_lp, _ = m(a[None], tracks, chunk_samples=chunk)
        out[dt] = (_streamed(m, a, chunk), off_lp)
    stream, off = out["bfloat16"]
    assert (stream - off).abs().max() < 0.05
    assert (stream - out["float32"][1]).abs().max() < 0.25
    assert (stream.argmax(-1) == off.argmax(-1)).float().mean() > 0.95


def test_window_encoder_bad_chunks_are_refused(tiny):
    from jrsv_stream.nn.whisper_ctc import WhisperCTC, WhisperCTCConfig

    m = WhisperCTC(WhisperCTCConfig(window_s=0.64), whisper=tiny)
    st = m.init_state(2)
    with pytest.raises(ValueError, match="320"):
        m.step(torch.zeros(2, 1000), st)
    with pytest.raises(ValueError, match="does not fit the window"):
        m.step(torch.zeros(2, 320 * 40), st)


# ---------------------------------------------------------------------- hybrid final rules
class _Pieces:
    """Letters as CTC tokens: a=1..z=26, apostrophe 27, word start marked by +100 (▁x)."""

    def encode(self, text):
        out = []
        for w in text.split():
            for k, c in enumerate(w):
                v = 27 if c == "'" else ord(c) - 96
                out.append(v + 100 if k == 0 else v)
        return out


def _logp_for(tokens, frames_per=3, V=128, blank=0):
    T = len(tokens) * frames_per + 4
    lp = np.full((T, V), -12.0, dtype=np.float32)
    lp[:, blank] = -0.01
    for k, t in enumerate(tokens):
        lp[2 + k * frames_per, :] = -12.0
        lp[2 + k * frames_per, t] = -0.01
    return lp


def test_hybrid_prefers_ctc_consistent_text_and_rejects_loops():
    from jrsv_stream.decode.hybrid import Candidate, choose_final, has_repetition_loop, normalize_text

    tok = _Pieces()
    lp = _logp_for(tok.encode("hello there"))
    assert normalize_text("Hello, there!") == "hello there"
    c = choose_final([Candidate("Yellow there.", -1.0, 3), Candidate("Hello there.", -1.5, 3)], lp, "hello there", tok)
    assert c.text == "Hello there." and c.source == "attention"
    loop = Candidate("hello there hello there hello there hello there", -0.5, 9)
    assert has_repetition_loop(loop.text.split())
    assert not has_repetition_loop("no no no way".split())
    c = choose_final([loop], lp, "hello there", tok)
    assert c.source == "ctc" and c.text == "hello there" and "loop" in c.rejected
    long = Candidate(" ".join(["music"] * 2 + ["and", "words", "nobody", "said", "here", "at", "all"]), -0.1, 9)
    assert "long" in choose_final([long], _logp_for(tok.encode("hi")), "hi", tok).rejected


def test_display_words_are_timed_by_ctc_alignment():
    from jrsv_stream.decode.hybrid import time_display_words

    tok = _Pieces()
    ids = tok.encode("hi yo")
    lp = _logp_for(ids, frames_per=3)
    words = time_display_words("Hi, -- yo.", lp, tok)
    assert [w.word for w in words] == ["Hi,", "--", "yo."]
    assert words[0].start_frame == 2 and words[0].end_frame == 6  # h at 2, i at 5
    assert words[1].start_frame == words[1].end_frame == 6
    assert words[2].start_frame == 8 and words[2].end_frame == 12


def test_loop_inside_one_hyphenated_display_word_is_found():
    from jrsv_stream.decode.hybrid import has_repetition_loop

    # tiny.en's output on a LibriVox utterance padded by only 2 s
    assert has_repetition_loop("He was not an old-s-y-y-y-y-y-y-y-y".split())
    assert not has_repetition_loop("He was not an ill-disposed young man.".split())


def test_digit_finals_are_scored_and_timed_as_spoken_words():
    """Whisper writes "5 5" / "10 of clubs" where the CTC head spells the words: the digits
    are spelled for scoring and timing, so such a final is not dropped for the CTC text."""
    from jrsv_stream.decode.hybrid import Candidate, choose_final, normalize_text, time_display_words

    tok = _Pieces()
    assert normalize_text("4 Queen, 3D 10") == "four queen three d ten"
    lp = _logp_for(tok.encode("five five"))
    c = choose_final([Candidate("5 5", -0.5, 2)], lp, "fiveve f", tok)
    assert c.source == "attention" and c.text == "5 5"
    words = time_display_words("5 5", lp, tok)
    assert [w.word for w in words] == ["5", "5"] and words[0].end_frame <= words[1].start_frame
