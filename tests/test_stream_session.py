"""StreamSession: chunking, partial -> final per track with word times, activity gating,
endpointing, attention rescoring through the worker, and one code path for any feed size."""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import pytest
import torch

from jrsv_stream.nn.tiny import TinyPipeline
from jrsv_stream.stream.events import Activity, Final, Partial, Stats
from jrsv_stream.stream.pipeline_api import CharTokenizer, PipelineOutput
from jrsv_stream.stream.session import SessionConfig, StreamSession, transcribe
from jrsv_stream.stream.worker import BatchWorker

torch.set_num_threads(1)
TOK = CharTokenizer()
V = TOK.vocab_size
CHUNK = 1280  # 2 frames of 40 ms


def script(tokens: dict[int, str | tuple[str, str, float]], n_frames: int) -> torch.Tensor:
    """(T, V) log-probs: blank everywhere except ``frame -> char`` (or (c1, c2, p1) ambiguity)."""
    p = torch.full((n_frames, V), 1e-4)
    p[:, 0] = 1.0
    for f, c in tokens.items():
        p[f] = 1e-4
        if isinstance(c, tuple):
            p[f, TOK.encode(c[0])[0]] = c[2]
            p[f, TOK.encode(c[1])[0]] = 1 - c[2]
        else:
            p[f, 1 if c == " " else TOK.encode(c)[0]] = 1.0
    p = p / p.sum(-1, keepdim=True)
    return p.log()


class ScriptState(NamedTuple):
    pos: torch.Tensor  # (B,) long frames emitted


class ScriptedPipeline:
    """Contract-conforming pipeline that replays per-track scripts (same for every stream)."""

    sample_rate = 16000
    chunk_samples = CHUNK
    frame_shift_s = 0.04
    algorithmic_latency_ms = 80.0
    tracks = ("speech", "lyrics")

    def __init__(self, logp: dict[str, torch.Tensor], activity: dict[str, torch.Tensor], rescore_fn=None):
        self.tokenizer = TOK
        self.rescore_fn = rescore_fn
        self.logp, self.activity = logp, activity

    def init_state(self, batch, device="cpu"):
        return ScriptState(torch.zeros(batch, dtype=torch.long, device=device))

    def step(self, audio, state):
        F = CHUNK // 640
        idx = state.pos[:, None] + torch.arange(F)[None]  # (B, F)
        T = next(iter(self.logp.values())).shape[0]
        idx = idx.clamp_max(T - 1)
        logp = {t: self.logp[t][idx] for t in self.tracks}
        act = {t: self.activity[t][idx] for t in self.tracks}
        enc = {t: torch.zeros(audio.shape[0], F, 4) + idx[..., None].float() for t in self.tracks}
        return PipelineOutput(logp, act, enc), ScriptState(state.pos + F)


N = 80  # frames = 3.2 s
SPEECH = script({2: "h", 3: "i", 5: " ", 6: ("y", "u", 0.6), 7: "o", 50: "o", 51: "k"}, N)
LYRICS = script({10: "l", 11: "a", 12: " ", 13: "l", 14: "a"}, N)
ON = torch.ones(N)


def _run(p, feed_samples: int, config=SessionConfig()) -> list:
    audio = np.zeros(N * 640, dtype=np.float32)
    with BatchWorker(p, max_wait_ms=1) as w:
        s = StreamSession(w, "t", config)
        ev = []
        for a in range(0, len(audio), feed_samples):
            ev += s.process(audio[a:a + feed_samples])
        ev += s.finish()
        s.close()
    return ev


def test_partials_then_finals_with_word_times_and_segments():
    ev = _run(ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON}), 5120)
    sp = [e for e in ev if isinstance(e, (Partial, Final)) and e.track == "speech"]
    finals = [e for e in sp if isinstance(e, Final)]
    assert [f.text for f in finals] == ["hi yo", "ok"]
    assert [f.segment_id for f in finals] == ["speech-0", "speech-1"]
    assert [w[:3] for w in finals[0].words] == [("hi", 0.08, 0.16), ("yo", 0.2, 0.32)]
    assert all(0.0 <= w[3] <= 1.0 for f in finals for w in f.words)  # word confidence, 4th element
    assert finals[0].start_s == 0.08 and finals[0].end_s == 0.32
    assert [w[:3] for w in finals[1].words] == [("ok", 2.0, 2.08)]
    assert finals[0].rescored is False  # no rescore_fn
    # partials of a segment come before its final, grow, and share its segment_id
    p0 = [e for e in sp if isinstance(e, Partial) and e.segment_id == "speech-0"]
    assert p0 and p0[-1].text == "hi yo" and all(e.seq < finals[0].seq for e in p0)
    assert all("hi".startswith(e.text) or e.text.startswith("hi") for e in p0)
    # seq increases by one over all events of the stream
    assert [e.seq for e in ev] == list(range(1, len(ev) + 1))
    # the first final comes from the endpoint (0.8 s of blanks), long before the end of the stream
    assert finals[0].audio_time_s < 1.4
    assert finals[0].latency_ms is not None and finals[0].latency_ms >= 0
    assert any(isinstance(e, Stats) for e in ev)
    lyr = [e for e in ev if isinstance(e, Final) and e.track == "lyrics"]
    assert [f.text for f in lyr] == ["la la"]


def test_inactive_track_is_never_captioned():
    """Lyrics tokens while the singing activity is 0 (instrumental music): no lyrics events."""
    ev = _run(ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": torch.zeros(N)}), 2560)
    assert not [e for e in ev if isinstance(e, (Partial, Final)) and e.track == "lyrics"]
    acts = [e for e in ev if isinstance(e, Activity)]
    assert acts and all(a.active == {"speech": True, "lyrics": False} for a in acts)
    assert [e.text for e in ev if isinstance(e, Final)] == ["hi yo", "ok"]


def test_gate_hysteresis_keeps_words_in_a_dip():
    act = torch.ones(N)
    act[6] = 0.4  # between gate_off (0.3) and gate_on (0.5): an open gate stays open
    ev = _run(ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": act, "lyrics": ON}), 2560)
    assert [e.text for e in ev if isinstance(e, Final) and e.track == "speech"] == ["hi yo", "ok"]


@pytest.mark.parametrize("feed", [100, 1280, 3333, 51200])
def test_same_events_whatever_the_feed_size(feed):
    ref = _run(ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON}), 640)
    got = _run(ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON}), feed)
    key = lambda evs: [(type(e).__name__, getattr(e, "text", None), getattr(e, "words", None), e.seq) for e in evs
                       if isinstance(e, (Partial, Final))]
    assert key(got) == key(ref)


def test_attention_rescoring_runs_on_the_worker_and_can_change_the_final():
    calls = []

    def rescore(track, enc, hyps):
        calls.append((track, threading.current_thread().name, tuple(enc.shape), [TOK.decode(h) for h in hyps]))
        return np.array([10.0 if "u" in TOK.decode(h) else 0.0 for h in hyps])  # prefers "hi uo"

    ev = _run(ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON}, rescore), 2560)
    finals = [e for e in ev if isinstance(e, Final) and e.track == "speech"]
    assert finals[0].text == "hi uo" and finals[0].rescored
    track, thread, shape, hyps = calls[0]
    assert track == "speech" and thread == "jrsv-batch-worker"
    assert shape[1] == 4 and "hi yo" in hyps and "hi uo" in hyps


def test_chunking_flush_and_validation():
    with BatchWorker(TinyPipeline(chunk_samples=CHUNK)) as w:
        s = StreamSession(w, "c")
        assert s.feed(np.zeros(1000, dtype=np.float32)) == []
        cs = s.feed(np.zeros(2000, dtype=np.float32))
        assert [c.index for c in cs] == [0, 1] and all(c.audio.shape == (CHUNK,) for c in cs)
        last = s.flush()
        assert last.index == 2 and last.valid_samples == 3000 - 2 * CHUNK and last.audio.shape == (CHUNK,)
        assert s.flush() is None
        with pytest.raises(ValueError, match="NaN"):
            s.feed(np.array([0.0, np.inf], dtype=np.float32))
        with pytest.raises(ValueError, match="float32"):
            s.feed(np.zeros(10, dtype=np.int16))
        with pytest.raises(ValueError, match="mono"):
            s.feed(np.zeros((10, 2), dtype=np.float32))
        s.close()
        assert w.streams == 0


def test_transcribe_tiny_pipeline_end_to_end():
    rng = np.random.default_rng(0)
    audio = np.concatenate([0.2 * rng.standard_normal(16000), np.zeros(16000), 0.2 * rng.standard_normal(8000)]).astype(np.float32)
    with BatchWorker(TinyPipeline()) as w:
        ev = transcribe(w, audio)
        ev2 = transcribe(w, audio)
    finals = [e for e in ev if isinstance(e, Final)]
    shown = {e.segment_id for e in ev if isinstance(e, Partial)}
    # an empty final only closes a segment whose partial was shown (it clears it)
    assert all(f.text or f.segment_id in shown for f in finals)
    finals = [f for f in finals if f.text]
    assert {f.track for f in finals} == {"speech", "lyrics"}
    assert [(f.text, f.words) for f in finals] == [(f.text, f.words) for f in ev2 if isinstance(f, Final)]
    # captions are timed inside the audio, and nothing is captioned in the silent second
    for f in finals:
        assert 0.0 <= f.start_s <= f.end_s <= 2.5
        assert all(not (1.1 < w[1] and w[2] < 1.9) for w in f.words)
    assert ev[-1].type == "stats" and ev[-1].audio_time_s == 2.5


def test_track_margin_drops_a_segment_the_other_track_dominates():
    """SessionConfig.track_margin: "la la" decoded on the lyrics track while the speech
    track is far more active (a separator leak) gets no final; without the rule it does."""
    weak = torch.full((N,), 0.55)
    p = ScriptedPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": weak})
    on = _run(p, 5120, SessionConfig(track_margin=0.15))
    assert [f.text for f in on if isinstance(f, Final) and f.track == "lyrics"] in ([], [""])
    assert [f.text for f in on if isinstance(f, Final) and f.track == "speech"] == ["hi yo", "ok"]
    off = _run(p, 5120, SessionConfig())
    assert [f.text for f in off if isinstance(f, Final) and f.track == "lyrics"] == ["la la"]


def test_lyrics_track_runs_its_own_endpoint_rules():
    """A sung line whose held note gives 1.2 s of CTC blanks while the voice is active: the
    default rules (0.8 s of trailing blanks) cut it in two; the lyrics track's own rules
    (``lyrics_endpoint``: no trailing-blank rule, the activity rule ends it) keep one line,
    and the speech track keeps its rules (its two segments)."""
    from jrsv_stream.decode.endpoint import EndpointConfig

    sung = script({4: "l", 5: "a", 6: " ", 7: "l", 8: "a", 40: " ", 41: "d", 42: "i"}, N)
    act = torch.zeros(N)
    act[2:46] = 1.0  # the voice sings from frame 2 to 45, then silence
    p = ScriptedPipeline({"speech": SPEECH, "lyrics": sung}, {"speech": ON, "lyrics": act})
    default = [e.text for e in _run(p, 2560) if isinstance(e, Final) and e.track == "lyrics"]
    assert default == ["la la", "di"]
    own = EndpointConfig(rule2_trailing_silence_s=0.0, activity_window_frames=6)
    ev = _run(p, 2560, SessionConfig(lyrics_endpoint=own))
    assert [e.text for e in ev if isinstance(e, Final) and e.track == "lyrics"] == ["la la di"]
    assert [e.text for e in ev if isinstance(e, Final) and e.track == "speech"] == ["hi yo", "ok"]
    p.lyrics_endpoint = own  # the pipeline's (pipeline.yaml lyrics_endpoint:) does the same
    assert [e.text for e in _run(p, 2560) if isinstance(e, Final) and e.track == "lyrics"] == ["la la di"]


def test_endpoint_silence_max_activity_keeps_a_segment_open_while_the_voice_goes_on():
    """EndpointConfig.silence_max_activity in a session: CTC blanks while the track's
    activity stays high (a voice the CTC head does not spell) end no segment; the same blanks
    over a quiet stretch (activity under the threshold, gate still open) end it as before.
    Off (the default): the CTC blanks alone end it, whatever the activity."""
    from jrsv_stream.decode.endpoint import EndpointConfig

    loud = torch.ones(N)  # the voice goes on through the 46 blank frames between "hi yo" and "ok"
    quiet = torch.ones(N)
    quiet[9:49] = 0.4  # a real pause: under 0.5, over the gate's 0.3 and the activity rule's 0.2
    speech = script({2: "h", 3: "i", 5: " ", 6: "y", 7: "o", 49: " ", 50: "o", 51: "k"}, N)
    for act, on, off in ((loud, ["hi yo ok"], ["hi yo", "ok"]), (quiet, ["hi yo", "ok"], ["hi yo", "ok"])):
        p = ScriptedPipeline({"speech": speech, "lyrics": LYRICS}, {"speech": act, "lyrics": ON})
        got = _run(p, 2560, SessionConfig(endpoint=EndpointConfig(silence_max_activity=0.5)))
        assert [e.text for e in got if isinstance(e, Final) and e.track == "speech"] == on
        assert [e.text for e in _run(p, 2560) if isinstance(e, Final) and e.track == "speech"] == off
    with pytest.raises(ValueError, match="silence_max_activity"):
        EndpointConfig(silence_max_activity=1.5)
