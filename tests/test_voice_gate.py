"""The voice-type head (p(singing) from Whisper encoder frames) and the pipeline's voice
gate on real audio: real talk is kept on the speech track and taken off the lyrics track,
sung lines stay on the lyrics track; the gate is causal and per stream; the activity the
pipeline emits is aligned with the recognizer's lagged frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.real_corpora import read_librivox_testdata
from jrsv_stream.nn.pipeline import SINGING, SPEECH, pipeline_from_folders

REPO = Path(__file__).resolve().parents[1]
SEP, ASR = REPO / "models" / "separator", REPO / "models" / "whisper_ctc"
DEMO = REPO / "models" / "demo" / "demo.flac"


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(2)
    return pipeline_from_folders(SEP, ASR, device="cpu", lm=False, voice_gate=True)


@pytest.fixture(scope="module")
def talk():
    (path, _), = list(read_librivox_testdata())[:1]
    return load_audio(path)


@pytest.fixture(scope="module")
def prompt():
    """A real recorded prompt (Asterisk's) that the separator puts partly on the singing track."""
    from jrsv_stream.data.real_voices import real_voice_items

    (v,) = [v for v in real_voice_items(["asterisk"]) if v.id == "asterisk-000"]
    return v.load()


def _acts(p, audio, gate: bool, batch_of=None):
    p.voice_gate = gate  # init_state follows the flag
    try:
        return _run(p, audio, batch_of)
    finally:
        p.voice_gate = True


def _run(p, audio: np.ndarray, batch_of: list[np.ndarray] | None = None):
    """Step p over audio (or a batch of equal-length audios): activity (B, 2, frames)."""
    xs = [audio] if batch_of is None else batch_of
    cs = p.chunk_samples
    n = -(-len(xs[0]) // cs)
    x = torch.zeros(len(xs), n * cs)
    for i, a in enumerate(xs):
        x[i, :len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    st, acts = p.init_state(len(xs)), []
    for k in range(n):
        out, st = p.step(x[:, k * cs:(k + 1) * cs], st)
        acts.append(torch.stack([out.activity["speech"], out.activity["lyrics"]], 1))
    return torch.cat(acts, 2)


def test_voice_type_head_is_shipped_and_tells_real_talk_from_singing(pipe, talk):
    head = pipe.asr.voice_type
    assert head is not None
    with torch.no_grad():
        enc = pipe.asr.encode_stream(torch.from_numpy(talk), pipe.chunk_samples)
        assert float(head(enc).mean()) < 0.3  # real read speech (LibriVox): talk
    # the demo's sung line alone (21.6-32.4 s, over music): the separated singing track
    line = load_audio(DEMO)[int(21.7 * 16000):int(32.3 * 16000)]
    act, plain = _acts(pipe, line, True), _acts(pipe, line, False)
    assert float(act[0, 1].mean()) >= 0.6 * float(plain[0, 1].mean()) > 0.2  # the lyrics track keeps it


def test_voice_gate_keeps_real_talk_on_the_speech_track_only(pipe, prompt):
    g, p = _acts(pipe, prompt, True), _acts(pipe, prompt, False)
    assert float(p[0, 1].mean()) > 0.2  # the separator alone puts some of the talk on the lyrics track
    assert float(g[0, 1].mean()) < 0.1  # the gate takes it off
    torch.testing.assert_close(g[0, 0], p[0, 0])  # the speech track is not gated


def _rescued(p, audio, rescue: float):
    p.voice_rescue = rescue
    try:
        return _run(p, audio)
    finally:
        p.voice_rescue = None


def test_voice_rescue_moves_talk_from_the_singing_track_to_the_speech_gate(pipe, prompt):
    """Talk the separator puts on the singing track raises the speech activity (the speech
    final decodes the mixture, so the voice is captioned once, on the right track); a sung
    line barely raises it; the lyrics track is the voice gate's either way."""
    g, r = _acts(pipe, prompt, True), _rescued(pipe, prompt, 0.0)
    assert bool((r[0, 0] >= g[0, 0] - 1e-6).all())  # only ever raises the speech activity
    assert float((r[0, 0] - g[0, 0]).max()) > 0.2  # and here by a lot, where the talk went to singing
    torch.testing.assert_close(r[0, 1], g[0, 1])
    line = load_audio(DEMO)[int(21.7 * 16000):int(32.3 * 16000)]
    sung_g, sung_r = _acts(pipe, line, True), _rescued(pipe, line, 0.0)
    assert float((sung_r[0, 0] - sung_g[0, 0]).mean()) < 0.05  # the sung line is not taken for talk
    with pytest.raises(ValueError, match="voice_rescue needs voice_gate"):
        pipeline_from_folders(SEP, ASR, device="cpu", lm=False, voice_rescue=0.0)


def test_voice_gate_is_causal_and_per_stream(pipe, talk):
    gated = pipe
    cs = gated.chunk_samples
    a = talk[:8 * cs]
    b = a.copy()
    b[5 * cs:] = np.random.default_rng(0).normal(0, 0.3, len(b) - 5 * cs).astype(np.float32)
    one = _run(gated, a)
    both = _run(gated, a, batch_of=[a, b])
    # a batch-mate changes nothing (up to the bf16 encoder's batch-size rounding)
    torch.testing.assert_close(both[0], one[0], atol=2e-3, rtol=0)
    # the future (audio from chunk 5 on) does not change what steps 0-4 emitted (frames
    # [0, 5F)); step 5 sees it (lookahead, dilation), so frames after it may change
    f = 5 * gated.chunk_frames
    torch.testing.assert_close(both[1, :, :f], both[0, :, :f], atol=1e-4, rtol=0)
    assert not torch.allclose(both[1, :, f + gated.chunk_frames:], both[0, :, f + gated.chunk_frames:])


def test_emitted_activity_is_aligned_with_the_lagged_frames(pipe, talk):
    """With one chunk of recognizer lookahead, step k emits the frames of chunk k - 1: the
    lyrics activity is the separator's of chunk k - 1; the speech activity the larger of
    chunks k - 1 and k (a one-chunk hangover on each side, so no word edge is cut)."""
    plain = pipe
    assert plain.lag_chunks == 1
    cs, F_ = plain.chunk_samples, plain.chunk_frames
    x = torch.from_numpy(talk[:6 * cs].copy())[None]
    emitted = _acts(plain, x[0].numpy(), False)
    st, sep_act = plain.separator.init_state(1, "cpu"), []
    for k in range(6):
        o, st = plain.separator.step(x[:, k * cs:(k + 1) * cs], st)
        sep_act.append(torch.nn.functional.adaptive_avg_pool1d(o.activity_probs, F_))
    sep_act = torch.cat(sep_act, 2)  # (1, 2, 6F): chunk k at [kF, (k+1)F)
    prev = torch.cat([torch.zeros(1, 2, F_), sep_act[:, :, :-F_]], 2)
    torch.testing.assert_close(emitted[:, 1], prev[:, SINGING], atol=1e-5, rtol=0)
    torch.testing.assert_close(emitted[:, 0], torch.maximum(prev[:, SPEECH], sep_act[:, SPEECH]), atol=1e-5, rtol=0)


def test_voice_gate_needs_the_head_and_a_corrupt_head_is_a_clear_error(tmp_path):
    import shutil

    from jrsv_stream.nn.whisper_ctc import WhisperCTC

    d = tmp_path / "asr"
    shutil.copytree(ASR, d)
    (d / "voice_type.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="voice_type.pt"):
        WhisperCTC.from_pretrained(d)
    (d / "voice_type.pt").unlink()
    with pytest.raises(ValueError, match="voice_gate needs"):
        pipeline_from_folders(SEP, d, device="cpu", lm=False, voice_gate=True)
