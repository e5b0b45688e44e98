"""The shipped default pipeline (separator -> Whisper-CTC recognizer, ``models/default``)
through the live path on real read speech: CTC partials, Whisper finals (cased, punctuated,
word times from the CTC alignment inside the audio), nothing over silence or music only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jrsv_stream.data.real_corpora import read_librivox_testdata
from jrsv_stream.audio.io import load_audio
from jrsv_stream.eval.system_eval import count_errors
from jrsv_stream.stream.events import Final, Partial
from jrsv_stream.stream.session import transcribe
from jrsv_stream.stream.worker import BatchWorker

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"


@pytest.fixture(scope="module")
def worker():
    from jrsv_stream.nn.pipeline import load_streaming_pipeline

    torch.set_num_threads(2)
    p = load_streaming_pipeline(DEFAULT)
    with BatchWorker(p, max_wait_ms=1) as w:
        yield w


def test_default_pipeline_is_the_whisper_one():
    from jrsv_stream.nn.loader import default_pipeline_spec

    assert default_pipeline_spec(str(REPO / "models")) == str(DEFAULT)


def test_default_lyrics_finals_decode_with_the_singing_adapter(worker):
    """The shipped default: the lyrics track's finals use the singing decoder adapter (a
    merged copy of the decoder), the speech track Whisper's own; lyrics lines end on the
    singing activity, not on CTC blanks (pipeline.yaml lyrics_endpoint)."""
    p = worker.pipeline
    assert set(p.asr.final_adapters) == {"singing"}
    calls = []
    real = p.asr.finalize

    def spy(*a, **k):
        calls.append(k.get("track"))
        return real(*a, **k)

    p.asr.finalize = spy
    try:
        audio = np.zeros(16000, dtype=np.float32)
        logp = np.zeros((50, p.asr.vocab_size), dtype=np.float32)
        p.final_fn("lyrics", audio, logp, "")
        p.final_fn("speech", audio, logp, "")
        p.hypothesis_fn("lyrics", audio, logp, "")
    finally:
        del p.asr.finalize
    assert calls == ["singing", "speech", "singing"]
    assert p.asr.final_model("singing") is not p.asr.final_model("speech")
    ep = p.lyrics_endpoint
    assert ep is not None and ep.rule2_trailing_silence_s == 0 and ep.activity_window_frames == 25
    assert p.endpoint is None  # the speech track keeps the default rules


def test_real_read_speech_finals_are_whisper_text_timed_by_ctc(worker):
    (path, ref), = [x for x in read_librivox_testdata()][:1]
    audio = load_audio(path)
    ev = transcribe(worker, audio)
    finals = [e for e in ev if isinstance(e, Final) and e.track == "speech" and e.text]
    partials = [e for e in ev if isinstance(e, Partial) and e.track == "speech"]
    assert finals and partials
    hyp = " ".join(f.text for f in finals)
    c = count_errors(ref, hyp)
    assert c.word_errors / c.ref_words <= 0.15, hyp
    assert any(ch.isupper() for ch in hyp) and any(ch in ".,;" for ch in hyp)  # Whisper's casing and punctuation
    assert all(f.rescored for f in finals)  # the attention decoder's text, not the CTC fallback
    dur = len(audio) / 16000
    for f in finals:
        starts = [w[1] for w in f.words]
        assert starts == sorted(starts) and all(0 <= w[1] <= w[2] <= dur + 1e-6 for w in f.words)
        assert len(f.words) == len(f.text.split())


def test_nothing_is_captioned_over_silence(worker):
    ev = transcribe(worker, np.zeros(16000 * 6, dtype=np.float32))
    assert not [e for e in ev if isinstance(e, (Final, Partial)) and e.text]


def test_no_final_over_silence_or_noise_even_when_the_ctc_path_is_not_empty():
    """Whisper's failure modes on such input: "you" on silence, invented sentences on
    noise. The no-speech rule leaves an empty final (it closes a partial, captions nothing)."""
    from jrsv_stream.decode.tokenizer import Tokenizer
    from jrsv_stream.nn.whisper_ctc import WhisperCTC

    m = WhisperCTC.from_pretrained(REPO / "models" / "whisper_ctc")
    tok = Tokenizer(REPO / "models" / "whisper_ctc" / "tokenizer.model")
    lp = np.log(np.full((100, 128), 1 / 128, np.float32))
    rng = np.random.default_rng(0)
    for audio in (np.zeros(32000, np.float32), (rng.standard_normal(48000) * 0.01).astype(np.float32)):
        res = m.finalize(audio, lp, "hello there", tok)
        assert res.text == "" and res.source == "no_speech"
    assert m.finalize(np.zeros(16000, np.float32), lp, "", tok) is None  # empty CTC path: not even decoded


def test_a_speech_final_whisper_is_not_sure_of_is_dropped(monkeypatch):
    """final.min_confidence: a whole speech segment whose words' mean decoder confidence is
    below it gets an empty final (Whisper's words over music: "More", "Thanks." at 0.01-0.1
    on the demo); not after committed words (the utterance is speech), not on the lyrics
    track unless final.min_confidence_singing says so, not when off; a real read utterance
    keeps its final."""
    import dataclasses

    from jrsv_stream.decode.tokenizer import Tokenizer
    from jrsv_stream.nn.whisper_ctc import WhisperCTC

    m = WhisperCTC.from_pretrained(REPO / "models" / "whisper_ctc")
    tok = Tokenizer(REPO / "models" / "whisper_ctc" / "tokenizer.model")
    m.cfg = dataclasses.replace(m.cfg, final=dataclasses.replace(m.cfg.final, min_confidence=0.3))
    (path, ref), = read_librivox_testdata()[:1]
    audio = load_audio(path)
    lp = np.log(np.full((len(audio) // 320, 128), 1 / 128, np.float32))
    res = m.finalize(audio, lp, ref, tok)
    assert res.source == "attention" and count_errors(ref, res.text).word_errors <= 3, res
    assert np.mean([w[3] for w in res.words]) >= 0.3

    def unsure(conf):
        return lambda *a, **k: ([("More thanks.", -6.0, 3)], 0.1, [[("More", conf), ("thanks.", conf)]])

    monkeypatch.setattr(m, "_decode", unsure(0.05))
    assert m.finalize(audio, lp, "more thanks", tok).source == "low_confidence"
    assert m.finalize(audio, lp, "more thanks", tok).text == ""
    assert m.finalize(audio, lp, "more thanks", tok, prefix="Hello").text == "More thanks."
    assert m.finalize(audio, lp, "more thanks", tok, track="singing").text == "More thanks."
    m.cfg = dataclasses.replace(m.cfg, final=dataclasses.replace(m.cfg.final, min_confidence_singing=0.1))
    assert m.finalize(audio, lp, "more thanks", tok, track="singing").source == "low_confidence"
    monkeypatch.setattr(m, "_decode", unsure(0.5))
    assert m.finalize(audio, lp, "more thanks", tok).text == "More thanks."
    m.cfg = dataclasses.replace(m.cfg, final=dataclasses.replace(m.cfg.final, min_confidence=0.0))
    monkeypatch.setattr(m, "_decode", unsure(0.05))
    assert m.finalize(audio, lp, "more thanks", tok).text == "More thanks."


def test_finals_from_another_whisper_size(monkeypatch):
    """--final-whisper / $JRSV_FINAL_WHISPER: the finals decode with tiny.en while the
    partials keep the base encoder and its head."""
    from jrsv_stream.nn.pipeline import load_streaming_pipeline

    monkeypatch.setenv("JRSV_FINAL_WHISPER", "tiny.en")
    with pytest.warns(UserWarning, match="trained on Whisper base, the finals use tiny.en"):
        p = load_streaming_pipeline(DEFAULT)  # the lyrics adapter fits base only: skipped, said so
    assert p.asr.whisper.dims.n_audio_state == 512 and p.asr.final_adapters == {}
    fm = p.asr.final_model()
    assert fm.dims.n_audio_state == 384 and fm is not p.asr.whisper
    assert p.asr.final_model("singing") is fm
    (path, ref), = read_librivox_testdata()[:1]
    text = p.asr.decode_segment(load_audio(path))[0][0]
    c = count_errors(ref, text)
    assert c.word_errors / c.ref_words <= 0.15, text


def test_corrupt_pipeline_file_is_a_clear_error(tmp_path):
    from jrsv_stream.nn.pipeline import load_streaming_pipeline

    (tmp_path / "pipeline.yaml").write_text("asr: [unclosed\n")
    with pytest.raises(ValueError, match="pipeline.yaml"):
        load_streaming_pipeline(tmp_path)
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: nowhere\n")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_streaming_pipeline(tmp_path)


def test_speech_finals_from_the_mixture_are_aligned_with_the_emitted_frames():
    """speech_final_audio="mixture": the speech track's final audio is the mixture input
    delayed by the separator's output delay and the recognizer's one-chunk lag, sample for
    sample (so a segment's words and its audio line up); lyrics keep the separated track."""
    from jrsv_stream.nn.pipeline import JRSVPipeline
    from jrsv_stream.nn.separator import load_separator
    from jrsv_stream.nn.whisper_ctc import WhisperCTC, WhisperCTCConfig
    from jrsv_stream.decode.tokenizer import Tokenizer

    sep = load_separator(REPO / "models" / "separator", "cpu")[0]
    asr = WhisperCTC(WhisperCTCConfig(whisper="tiny.en", lookahead_chunks=1))
    tok = Tokenizer(REPO / "models" / "whisper_ctc" / "tokenizer.model")
    p = JRSVPipeline(sep, asr, tok, 5120, speech_final_audio="mixture")
    x = torch.randn(2, 5120 * 4) * 0.1
    st = p.init_state(2)
    outs = []
    for k in range(4):
        o, st = p.step(x[:, k * 5120:(k + 1) * 5120], st)
        outs.append(o)
    got = torch.cat([o.track_audio["speech"] for o in outs], 1)
    d = sep.output_delay_samples + 5120
    assert torch.equal(got[:, d:], x[:, : 4 * 5120 - d]) and not got[:, :d].any()
    assert not torch.equal(outs[3].track_audio["lyrics"], outs[3].track_audio["speech"])
    with pytest.raises(ValueError, match="speech_final_audio"):
        JRSVPipeline(sep, asr, tok, 5120, speech_final_audio="both")
    # speech_final_mix w: w x that mixture + (1 - w) x the separated speech of the same frames;
    # lyrics_final_mix w: the lyrics finals hear w x the same mixture + (1 - w) x the separated singing
    sep_only = JRSVPipeline(sep, asr, tok, 5120, speech_final_audio="separated")
    p.speech_final_mix, p.lyrics_final_mix = 0.25, 0.3
    st, st2 = p.init_state(2), sep_only.init_state(2)
    for k in range(4):
        o, st = p.step(x[:, k * 5120:(k + 1) * 5120], st)
        o2, st2 = sep_only.step(x[:, k * 5120:(k + 1) * 5120], st2)
        torch.testing.assert_close(o.track_audio["speech"], 0.25 * outs[k].track_audio["speech"]
                                   + 0.75 * o2.track_audio["speech"])
        torch.testing.assert_close(o.track_audio["lyrics"], 0.3 * outs[k].track_audio["speech"]
                                   + 0.7 * o2.track_audio["lyrics"])


def test_consensus_speech_finals_keep_both_ways_and_outvote_a_failed_one(worker):
    """speech_final_consensus: the speech track's audio is kept as (mixture, separated) per
    sample, in step with the blend (ahead audio too); a final decodes the blend, the mixture
    and the separated speech in that order and keeps the consensus (one way that hears
    nothing is outvoted); a hypothesis decodes the blend alone."""
    from jrsv_stream.decode.hybrid import consensus_index
    from jrsv_stream.nn.pipeline import JRSVPipeline
    from jrsv_stream.nn.separator import load_separator
    from jrsv_stream.nn.whisper_ctc import WhisperCTC, WhisperCTCConfig
    from jrsv_stream.decode.tokenizer import Tokenizer

    assert consensus_index(["", "hello world", "hello word"]) == 1
    assert consensus_index(["a b c", "a b d", "x y z"]) == 0  # a tie goes to the earliest
    assert consensus_index(["", "", "something invented"]) == 0
    with pytest.raises(ValueError):
        consensus_index([])
    # step outputs: (B, n, 2) = the blend's two parts, for the emitted and the ahead audio
    sep = load_separator(REPO / "models" / "separator", "cpu")[0]
    asr = WhisperCTC(WhisperCTCConfig(whisper="tiny.en", lookahead_chunks=1))
    tok = Tokenizer(REPO / "models" / "whisper_ctc" / "tokenizer.model")
    p = JRSVPipeline(sep, asr, tok, 5120, speech_final_audio="mixture")
    p.speech_final_mix = 0.5
    q = JRSVPipeline(sep, asr, tok, 5120, speech_final_audio="mixture")
    q.speech_final_mix, q.speech_final_consensus = 0.5, True
    x = torch.randn(2, 5120 * 3) * 0.1
    sp, sq = p.init_state(2), q.init_state(2)
    for k in range(3):
        op, sp = p.step(x[:, k * 5120:(k + 1) * 5120], sp)
        oq, sq = q.step(x[:, k * 5120:(k + 1) * 5120], sq)
        for field in ("track_audio", "ahead_audio"):
            two = getattr(oq, field)["speech"]
            assert two.shape == (2, 5120, 2)
            torch.testing.assert_close(0.5 * two[..., 0] + 0.5 * two[..., 1], getattr(op, field)["speech"])
            torch.testing.assert_close(getattr(oq, field)["lyrics"], getattr(op, field)["lyrics"])
    # finals: three decodes, the consensus kept; hypotheses: the blend
    pipe = worker.pipeline
    (path, ref), = read_librivox_testdata()[:1]
    utt = load_audio(path)
    lp = np.log(np.full((len(utt) // 320, 128), 1 / 128, np.float32))
    heard = []
    real_finalize = pipe.asr.finalize

    def spy(audio, *a, **k):
        heard.append(float(np.sqrt(np.mean(np.square(audio)))))
        return real_finalize(audio, *a, **k)

    pipe.asr.finalize = spy
    try:
        w = pipe.speech_final_mix
        rms = float(np.sqrt(np.mean(np.square(utt))))
        for two, expect in ((np.stack([utt, np.zeros_like(utt)], 1), (w, 1.0, 0.0)),
                            (np.stack([np.zeros_like(utt), utt], 1), (1 - w, 0.0, 1.0))):
            heard.clear()
            res = pipe._final_fn("speech", two, lp, ref)
            np.testing.assert_allclose(heard, [e * rms for e in expect], rtol=1e-4, atol=1e-7)
            assert res.source == "attention" and count_errors(ref, res.text).word_errors <= 3, res
            heard.clear()
            hyp = pipe._hypothesis_fn("speech", two, lp, ref)
            np.testing.assert_allclose(heard, [expect[0] * rms], rtol=1e-4)
            assert hyp.text == pipe._hypothesis_fn("speech", pipe._blend_views(two), lp, ref).text
        heard.clear()
        assert pipe._final_fn("speech", np.stack([utt, utt], 1), lp, "") is None  # nothing heard: no final
        assert len(heard) == 1  # (and no second or third view asked)
    finally:
        pipe.asr.finalize = real_finalize


def test_ahead_frames_are_the_newest_chunks_window_edge_and_its_audio():
    """With one chunk of lookahead, a step also gives the newest chunk's provisional CTC
    log-probs (exactly what the same recognizer without lookahead emits for that chunk: the
    frames at its window's edge) and its track audio (what the next step emits as the
    frames' audio, blended the same way for speech finals)."""
    from jrsv_stream.nn.pipeline import JRSVPipeline
    from jrsv_stream.nn.separator import load_separator
    from jrsv_stream.nn.whisper_ctc import WhisperCTC, WhisperCTCConfig
    from jrsv_stream.decode.tokenizer import Tokenizer

    sep = load_separator(REPO / "models" / "separator", "cpu")[0]
    asr1 = WhisperCTC(WhisperCTCConfig(whisper="tiny.en", lookahead_chunks=1, compute_dtype="float32"))
    asr0 = WhisperCTC(WhisperCTCConfig(whisper="tiny.en", lookahead_chunks=0, compute_dtype="float32"), whisper=asr1.whisper)
    asr0.heads.load_state_dict(asr1.heads.state_dict())
    tok = Tokenizer(REPO / "models" / "whisper_ctc" / "tokenizer.model")
    p1 = JRSVPipeline(sep, asr1, tok, 5120, speech_final_audio="mixture")
    p1.speech_final_mix = 0.5
    p0 = JRSVPipeline(sep, asr0, tok, 5120, speech_final_audio="separated")
    torch.manual_seed(0)
    x = torch.randn(2, 5120 * 4) * 0.1
    s1, s0, outs1 = p1.init_state(2), p0.init_state(2), []
    for k in range(4):
        o1, s1 = p1.step(x[:, k * 5120:(k + 1) * 5120], s1)
        o0, s0 = p0.step(x[:, k * 5120:(k + 1) * 5120], s0)
        outs1.append(o1)
        for t in ("speech", "lyrics"):
            torch.testing.assert_close(o1.ahead_logp[t], o0.logp[t], atol=1e-5, rtol=1e-5)
        assert not torch.equal(o1.ahead_logp["speech"], o1.logp["speech"])
    for k in range(3):
        for t in ("speech", "lyrics"):
            torch.testing.assert_close(outs1[k].ahead_audio[t], outs1[k + 1].track_audio[t])
    assert p0.step(x[:, :5120], p0.init_state(2))[0].ahead_logp is None  # no lookahead: nothing ahead


def test_pipeline_file_carries_its_sessions_endpoint_rules(tmp_path):
    """``endpoint:`` in pipeline.yaml is the rules of the pipeline's sessions (a session's
    own config still wins); a bad field is a clear error before any model loads."""
    import dataclasses

    from jrsv_stream.decode.endpoint import EndpointConfig
    from jrsv_stream.nn.pipeline import read_pipeline_file
    from jrsv_stream.stream.session import SessionConfig, session_endpoint

    (tmp_path / "pipeline.yaml").write_text(
        f"separator: {REPO / 'models' / 'separator'}\nasr: {REPO / 'models' / 'whisper_ctc'}\n"
        "endpoint:\n  rule2_trailing_silence_s: 0.5\n  pause_trailing_silence_s: 0.24\n")
    ep = read_pipeline_file(tmp_path)["endpoint"]
    assert ep == EndpointConfig(rule2_trailing_silence_s=0.5, pause_trailing_silence_s=0.24)

    class P:
        endpoint = ep

    assert session_endpoint(SessionConfig(), P()) == ep
    own = dataclasses.replace(ep, rule2_trailing_silence_s=0.9)
    assert session_endpoint(SessionConfig(endpoint=own), P()) == own
    assert session_endpoint(SessionConfig(), object()) == EndpointConfig()
    shipped = read_pipeline_file(DEFAULT)["endpoint"]
    assert shipped is None  # the shipped default keeps the default rules (shorter endpoints cost WER, README)
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: nowhere\nendpoint:\n  rule9_s: 1\n")
    with pytest.raises(ValueError, match="pipeline.yaml: bad endpoint.*rule9_s"):
        read_pipeline_file(tmp_path)
    # the lyrics track's own rules: fields replacing the endpoint's, on that track only
    (tmp_path / "pipeline.yaml").write_text(
        f"separator: {REPO / 'models' / 'separator'}\nasr: {REPO / 'models' / 'whisper_ctc'}\n"
        "endpoint:\n  rule2_trailing_silence_s: 0.5\n"
        "lyrics_endpoint:\n  rule2_trailing_silence_s: 0\n  activity_window_frames: 25\n")
    spec = read_pipeline_file(tmp_path)
    assert spec["lyrics_endpoint"] == EndpointConfig(rule2_trailing_silence_s=0.0, activity_window_frames=25)

    class Q:
        endpoint = spec["endpoint"]
        lyrics_endpoint = spec["lyrics_endpoint"]

    assert session_endpoint(SessionConfig(), Q(), "lyrics") == spec["lyrics_endpoint"]
    assert session_endpoint(SessionConfig(), Q(), "speech") == spec["endpoint"]
    assert session_endpoint(SessionConfig(), P(), "lyrics") == ep  # none of its own: the endpoint's
    mine = EndpointConfig(rule2_trailing_silence_s=2.0)
    assert session_endpoint(SessionConfig(lyrics_endpoint=mine), Q(), "lyrics") == mine
    # the evaluation runs the rules the file gives (it once dropped them)
    from jrsv_stream.eval.system_eval import SystemEvalConfig, build_pipeline

    built, _ = build_pipeline(SystemEvalConfig(pipeline=str(tmp_path)))
    assert built.endpoint == spec["endpoint"] and built.lyrics_endpoint == spec["lyrics_endpoint"]
    # the activity window is a whole number of frames (a float one broke every session's
    # endpoint state); a fractional one is an error
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: nowhere\nendpoint:\n  activity_window_frames: 40\n")
    ep = read_pipeline_file(tmp_path)["endpoint"]
    assert ep.activity_window_frames == 40 and isinstance(ep.activity_window_frames, int)
    from jrsv_stream.decode.endpoint import init_endpoint_state

    assert len(init_endpoint_state(ep).activity_recent) == 40
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: nowhere\nendpoint:\n  activity_window_frames: 4.5\n")
    with pytest.raises(ValueError, match="whole number"):
        read_pipeline_file(tmp_path)


def test_pipeline_file_voice_rescue_is_read_and_checked(tmp_path):
    """The shipped default rescues talk from the singing track (voice_rescue 0.0, measured in
    the README); a pipeline.yaml without the line has it off; a bad value is a clear error."""
    from jrsv_stream.nn.pipeline import read_pipeline_file

    assert read_pipeline_file(DEFAULT)["voice_rescue"] == 0.0
    assert read_pipeline_file(DEFAULT)["voice_gate"] is True  # rescue reads the voice gate's head
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: nowhere\n")
    assert read_pipeline_file(tmp_path)["voice_rescue"] is None
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: nowhere\nvoice_rescue: loud\n")
    with pytest.raises(ValueError, match="pipeline.yaml"):
        read_pipeline_file(tmp_path)


def test_pipeline_file_incremental_finals_and_final_mix(tmp_path):
    """``commit_every_s`` and ``speech_final_mix`` in pipeline.yaml: read, range-checked."""
    from jrsv_stream.nn.pipeline import read_pipeline_file

    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: a\ncommit_every_s: 0.64\nspeech_final_mix: 0.5\n")
    spec = read_pipeline_file(tmp_path)
    assert spec["commit_every_s"] == 0.64 and spec["speech_final_mix"] == 0.5
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: a\n")
    assert read_pipeline_file(tmp_path)["commit_every_s"] is None and read_pipeline_file(tmp_path)["speech_final_mix"] == 1.0
    assert read_pipeline_file(tmp_path)["lyrics_final_mix"] == 0.0
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: a\nspeech_final_audio: mixture\nlyrics_final_mix: 0.3\n")
    assert read_pipeline_file(tmp_path)["lyrics_final_mix"] == 0.3
    assert read_pipeline_file(tmp_path)["speech_final_consensus"] is False
    (tmp_path / "pipeline.yaml").write_text("separator: null\nasr: a\nspeech_final_audio: mixture\nspeech_final_consensus: true\n")
    assert read_pipeline_file(tmp_path)["speech_final_consensus"] is True
    for bad in ("commit_every_s: -1", "speech_final_mix: 1.5", "commit_every_s: soon", "lyrics_final_mix: 2",
                "lyrics_final_mix: 0.3", "speech_final_consensus: true",
                "speech_final_audio: mixture\nspeech_final_consensus: sometimes"):  # (the last two: without speech_final_audio: mixture)
        (tmp_path / "pipeline.yaml").write_text(f"separator: null\nasr: a\n{bad}\n")
        with pytest.raises(ValueError, match="pipeline.yaml|commit_every_s|speech_final_mix|lyrics_final_mix|consensus"):
            read_pipeline_file(tmp_path)
