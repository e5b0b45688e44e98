"""Sessions with a pipeline ``final_fn`` (Whisper finals from the segment's track audio):
the final gets the segment's exact audio and gated CTC log-probs on the worker's finals
lane, its text and word times (frames -> audio time) replace the CTC text, a failing or
empty final_fn leaves the CTC final, and nothing is asked where the CTC path is empty."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time

import numpy as np
import pytest
import torch

from jrsv_stream.nn.whisper_ctc import SegmentFinal
from jrsv_stream.stream.events import Final, Partial
from jrsv_stream.stream.pipeline_api import PipelineOutput
from jrsv_stream.stream.session import StreamSession
from jrsv_stream.stream.worker import BatchWorker
from tests.test_stream_session import CHUNK, LYRICS, N, ON, SPEECH, ScriptedPipeline, ScriptState, script

torch.set_num_threads(1)
SILENT = torch.log_softmax(torch.tensor([[9.0] + [0.0] * (SPEECH.shape[1] - 1)]).repeat(N, 1), -1)


class AudioPipeline(ScriptedPipeline):
    """The scripted pipeline, with the chunk's own audio as both tracks' audio and a final_fn."""

    def __init__(self, logp, activity, final_fn):
        super().__init__(logp, activity)
        self.final_fn = final_fn

    def step(self, audio, state):
        out, st = super().step(audio, state)
        return PipelineOutput(out.logp, out.activity, None, {t: audio.clone() for t in self.tracks}), ScriptState(st.pos)


def _run(final_fn, logp=None):
    audio = (np.arange(N * 640) % 1000 / 1000.0).astype(np.float32)  # every sample tells its position
    p = AudioPipeline(logp or {"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON}, final_fn)
    with BatchWorker(p, max_wait_ms=1) as w:
        s = StreamSession(w, "t")
        ev = s.process(audio) + s.finish()
        s.close()
    return audio, [e for e in ev if isinstance(e, Final)]


def test_final_fn_text_and_word_times_replace_the_ctc_final():
    calls = []

    def final_fn(track, audio, logp, ctc_text):
        calls.append((track, audio.copy(), logp.copy(), ctc_text, threading.current_thread().name))
        if ctc_text == "hi yo":
            return SegmentFinal("Hi, you.", (("Hi,", 2, 4), ("you.", 6, 8)), "attention")
        return SegmentFinal(ctc_text.upper(), tuple((w, 0, 1) for w in ctc_text.split()), "ctc")

    audio, finals = _run(final_fn)
    sp = [f for f in finals if f.track == "speech"]
    assert [f.text for f in sp] == ["Hi, you.", "OK"]
    assert [w[:3] for w in sp[0].words] == [("Hi,", 0.08, 0.16), ("you.", 0.24, 0.32)]
    assert all(0.0 <= w[3] <= 1.0 for w in sp[0].words)  # a final_fn without confidences: the CTC posteriors
    assert sp[0].rescored is True and sp[1].rescored is False  # "ctc" source: not the attention decoder's text
    # the second segment starts where the first ended: its frame 0 is the endpoint frame
    first = [c for c in calls if c[3] == "hi yo"][0]
    seg0_frames = first[2].shape[0]
    assert sp[1].words[0][1] == round(seg0_frames * 0.04, 3)
    # the segment's exact audio and log-probs, frame for frame
    assert first[1].shape == (seg0_frames * 640,)
    np.testing.assert_array_equal(first[1], audio[:seg0_frames * 640])
    np.testing.assert_allclose(first[2], SPEECH[:seg0_frames].numpy(), atol=1e-6)
    ok = [c for c in calls if c[3] == "ok"][0]
    np.testing.assert_array_equal(ok[1], audio[seg0_frames * 640:seg0_frames * 640 + len(ok[1])])
    assert all(c[4].startswith("jrsv-finals") for c in calls)  # the finals lane, not the batching thread
    assert [f.text for f in finals if f.track == "lyrics"] == ["LA LA"]


def test_failing_or_empty_final_fn_leaves_the_ctc_final():
    def boom(track, audio, logp, ctc_text):
        raise RuntimeError("decoder exploded")

    _, finals = _run(boom)
    assert [f.text for f in finals if f.track == "speech"] == ["hi yo", "ok"]
    _, finals = _run(lambda *a: None)  # "nothing heard" after a partial was shown: the CTC final closes it
    assert [f.text for f in finals if f.track == "speech"] == ["hi yo", "ok"]


def test_no_final_fn_call_where_the_ctc_path_is_empty():
    calls = []

    def final_fn(track, audio, logp, ctc_text):
        calls.append(track)
        return SegmentFinal(ctc_text, (), "ctc")

    _, finals = _run(final_fn, {"speech": SILENT, "lyrics": LYRICS})
    assert [f.track for f in finals] == ["lyrics"]
    assert calls == ["lyrics"]


def test_partials_of_the_next_segment_flow_while_a_final_decodes():
    """The final of "hi yo" is held on the finals lane; the stream goes on: the partial of
    "ok" (next segment) is emitted before that final, which comes out once done, in order."""
    release = threading.Event()

    def slow(track, audio, logp, ctc_text):
        if ctc_text == "hi yo":
            assert release.wait(30)
        return SegmentFinal(ctc_text.upper(), tuple((w, 0, 1) for w in ctc_text.split()), "attention")

    audio = np.zeros(N * 640, dtype=np.float32)
    p = AudioPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON}, slow)
    with BatchWorker(p, max_wait_ms=1) as w:
        s = StreamSession(w, "t")
        ev = s.process(audio[:55 * 640])  # past "ok" (frames 50-51)
        assert [e.text for e in ev if isinstance(e, Final) and e.track == "speech"] == []
        assert any(e.track == "speech" and e.segment_id == "speech-1" and e.text == "ok"
                   for e in ev if type(e).__name__ == "Partial")
        release.set()
        ev += s.process(audio[55 * 640:]) + s.finish()
        s.close()
    sp = [e for e in ev if isinstance(e, Final) and e.track == "speech"]
    assert [f.text for f in sp] == ["HI YO", "OK"] and sp[0].seq < sp[1].seq
    assert [e.seq for e in ev] == sorted(e.seq for e in ev)


def test_a_full_finals_lane_refuses_and_the_ctc_final_stands():
    """max_pending_finals: when the lane cannot keep up, the segment keeps its CTC final at
    once instead of every stream's finals falling further behind."""
    release = threading.Event()

    def slow(track, audio, logp, ctc_text):
        assert release.wait(30)
        return SegmentFinal(ctc_text.upper(), tuple((w, 0, 1) for w in ctc_text.split()), "attention")

    audio = np.zeros(N * 640, dtype=np.float32)
    p = AudioPipeline({"speech": SPEECH, "lyrics": LYRICS}, {"speech": ON, "lyrics": ON}, slow)
    with BatchWorker(p, max_wait_ms=1, max_pending_finals=1) as w:
        s = StreamSession(w, "t")
        ev = s.process(audio)  # "hi yo" takes the lane's one place; "la la" (lyrics) is refused
        release.set()
        ev += s.finish()
        s.close()
        assert w.finals_refused >= 1
    texts = {f.text for f in ev if isinstance(f, Final)}
    assert "HI YO" in texts and "la la" in texts


# ---------------------------------------------------------------------- incremental finals
WORDS = [("One", 2, 5), ("two", 8, 11), ("three", 14, 19), ("four", 22, 26), ("five.", 30, 34)]  # segment frames
COUNT = script({2: "o", 3: "n", 4: "e", 5: " ", 8: "t", 9: "w", 10: "o", 11: " ", 14: "t", 15: "h", 16: "r", 17: "e",
                18: "e", 19: " ", 22: "f", 23: "o", 24: "u", 25: "r", 26: " ", 30: "f", 31: "i", 32: "v", 33: "e"}, N)


class PrefixPipeline(AudioPipeline):
    final_prefix = True  # its final_fn takes prefix=


def _whisperish(calls, words=WORDS, early=None):
    """A final_fn that behaves like Whisper with a forced prefix: it "hears" the words whose
    end is inside the audio it gets (``early``: what it writes instead while the audio is
    shorter than a number of frames), and returns those after the prefix, with frames
    counted from the first frame of the log-probs it gets (the committed words' end)."""

    def fn(track, audio, logp, ctc_text, hotwords=(), prefix=""):
        n = len(audio) // 640
        cut = n - logp.shape[0]
        calls.append((track, n, cut, prefix, ctc_text))
        heard = [w for w in words if w[2] <= n]
        if early is not None and n < early[0]:
            heard = early[1]
        rest = heard[len(prefix.split()):]
        return SegmentFinal(" ".join(w[0] for w in rest), tuple((w[0], w[1] - cut, w[2] - cut) for w in rest), "attention")

    return fn


def _run_commit(final_fn, config, track="speech", lyrics=SILENT, pipe_cls=None):
    audio = np.zeros(N * 640, dtype=np.float32)
    p = (pipe_cls or PrefixPipeline)({"speech": COUNT, "lyrics": lyrics}, {"speech": ON, "lyrics": ON}, final_fn)
    with BatchWorker(p, max_wait_ms=1) as w:
        s = StreamSession(w, "t", config)
        ev = s.process(audio) + s.finish()
        s.close()
    return [e for e in ev if e.__class__.__name__ in ("Final", "Partial", "UtteranceEnd") and e.track == track]


def test_incremental_finals_commit_agreed_words_before_the_endpoint():
    from jrsv_stream.stream.session import SessionConfig

    calls = []
    ev = _run_commit(_whisperish(calls), SessionConfig(commit_every_s=0.24, commit_wait=True))
    finals = [e for e in ev if isinstance(e, Final)]
    ends = [e for e in ev if e.__class__.__name__ == "UtteranceEnd"]
    assert " ".join(f.text for f in finals) == "One two three four five."
    assert len(finals) >= 3  # committed in pieces, each its own segment
    assert len({f.segment_id for f in finals}) == len(finals)
    assert len(ends) == 1 and ends[0].segment_id == finals[-1].segment_id  # one utterance, one end
    # the first words are final long before the endpoint (trailing blank after frame 34)
    assert finals[0].text == "One" and finals[0].audio_time_s <= 0.6
    # word times: segment frames -> audio time, whatever the piece they were committed in
    times = [w[1:3] for f in finals for w in f.words]
    assert times == [(round(a * 0.04, 3), round(b * 0.04, 3)) for _, a, b in WORDS]
    # each hypothesis / the final decodes the whole segment so far with the committed words
    # forced, its CTC log-probs from the committed words' end on
    for track, n, cut, prefix, ctc_text in calls:
        assert cut == ([b for _, _, b in WORDS[:len(prefix.split())]] or [0])[-1]
        assert prefix == " ".join(w for w, _, _ in WORDS[:len(prefix.split())])
    # every partial after a commit shows only what is not final yet
    for e in ev:
        if isinstance(e, Partial):
            committed = [f for f in finals if f.seq < e.seq]
            done = " ".join(f.text for f in committed).split()
            assert not e.text.split()[:1] or e.text.split()[0] not in done[-1:]


def test_incremental_finals_commit_only_what_two_hypotheses_agree_on():
    """Local agreement: while the audio is short the decoder writes "One too" (twice: at 6
    and 12 frames), then "One two three": only "One" is ever committed from the early
    hypotheses; "too" never reaches a final."""
    from jrsv_stream.stream.session import SessionConfig

    calls = []
    early = (13, [("One", 2, 5), ("too", 8, 11)])
    ev = _run_commit(_whisperish(calls, early=early), SessionConfig(commit_every_s=0.24, commit_wait=True,
                                                                     commit_guard_s=0.6))
    text = " ".join(e.text for e in ev if isinstance(e, Final))
    assert text == "One two three four five."
    assert "too" not in text


def test_each_hypothesis_gets_the_previous_ones_uncommitted_words_as_a_draft():
    """A pipeline whose hypothesis_fn takes ``draft`` (``hypothesis_draft``) gets the words
    the previous hypothesis wrote beyond what was committed since: the draft is what it will
    likely write again. ``SessionConfig(hypothesis_draft=False)``: no draft argument."""
    from jrsv_stream.stream.session import SessionConfig

    class DraftPipeline(PrefixPipeline):
        hypothesis_draft = True

    def run(cfg):
        calls, seen = [], []
        inner = _whisperish(calls, early=(13, [("One", 2, 5), ("too", 8, 11)]))

        def hyp(track, audio, logp, ctc_text, hotwords=(), prefix="", *draft):
            res = inner(track, audio, logp, ctc_text, hotwords, prefix)
            seen.append((prefix, draft, res.text))
            return res

        p = DraftPipeline({"speech": COUNT, "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, _whisperish([]))
        p.hypothesis_fn = hyp
        with BatchWorker(p, max_wait_ms=1) as w:
            s = StreamSession(w, "t", cfg)
            ev = s.process(np.zeros(N * 640, dtype=np.float32)) + s.finish()
            s.close()
        return seen, " ".join(e.text for e in ev if isinstance(e, Final) and e.track == "speech")

    seen, text = run(SessionConfig(commit_every_s=0.24, commit_wait=True, commit_guard_s=0.6))
    assert text == "One two three four five."
    assert len(seen) >= 3 and all(len(d) == 1 for _, d, _ in seen)
    assert seen[0][1] == ("",)  # nothing heard before the first
    for (p0, _, t0), (p1, (draft,), _) in zip(seen, seen[1:]):
        # the previous hypothesis' words after the prefix this one is forced with
        words = (p0 + " " + t0).split()
        assert draft == " ".join(words[len(p1.split()):]), (p0, t0, p1, draft)
    assert any(d for _, (d,), _ in seen[1:]) and any("too" in d for _, (d,), _ in seen)
    seen, text = run(SessionConfig(commit_every_s=0.24, commit_wait=True, commit_guard_s=0.6, hypothesis_draft=False))
    assert text == "One two three four five." and all(d == () for _, d, _ in seen)


def test_incremental_finals_off_gives_one_final_per_segment():
    from jrsv_stream.stream.session import SessionConfig

    calls = []
    ev = _run_commit(_whisperish(calls), SessionConfig(commit_every_s=0.0))
    assert [e.text for e in ev if isinstance(e, Final)] == ["One two three four five."]
    assert [c[3] for c in calls] == [""]  # no hypotheses, no prefix


def test_incremental_finals_live_mode_never_waits_and_loses_nothing():
    """Live sessions (commit_wait False): hypotheses go on the lane only when it is idle and
    are taken when done; whatever the timing, the finals together say the whole segment."""
    from jrsv_stream.stream.session import SessionConfig

    for _ in range(3):
        calls = []
        ev = _run_commit(_whisperish(calls), SessionConfig(commit_every_s=0.24))
        assert " ".join(e.text for e in ev if isinstance(e, Final)) == "One two three four five."


def test_incremental_finals_wait_for_confident_words():
    """A word two hypotheses agree on is committed only once both are sure of it
    (decoder confidence >= commit_min_conf): "One" is unsure until 20 frames of audio."""
    from jrsv_stream.stream.session import SessionConfig

    def unsure_first(track, audio, logp, ctc_text, hotwords=(), prefix=""):
        res = base(track, audio, logp, ctc_text, hotwords, prefix)
        conf = 0.3 if len(audio) // 640 < 20 else 0.9
        return res._replace(words=tuple((w[0], w[1], w[2], conf) for w in res.words))

    calls = []
    base = _whisperish(calls)
    ev = _run_commit(unsure_first, SessionConfig(commit_every_s=0.24, commit_wait=True))
    finals = [e for e in ev if isinstance(e, Final)]
    assert " ".join(f.text for f in finals) == "One two three four five."
    assert finals[0].audio_time_s >= 0.96  # hypotheses at 24 and 30 frames are the first sure ones
    assert all(w[3] == 0.9 for f in finals for w in f.words)


def test_a_final_under_the_confidence_floor_falls_back_to_the_last_hypothesis():
    """final_hypothesis_fallback: the segment's final comes back empty for low confidence
    (the beam final, less sure than the greedy hypotheses), nothing of the segment was
    committed (the hypotheses were sure enough to show, not to commit): the last
    hypothesis' words, with their times and confidence, are the final; off, nothing is."""
    from jrsv_stream.stream.session import SessionConfig

    calls = []
    base = _whisperish(calls)

    def hypothesis(track, audio, logp, ctc_text, hotwords=(), prefix=""):
        res = base(track, audio, logp, ctc_text, hotwords, prefix)
        return res._replace(words=tuple((w[0], w[1], w[2], 0.4) for w in res.words))

    def unsure_final(track, audio, logp, ctc_text, hotwords=(), prefix=""):
        return SegmentFinal("", (), "low_confidence", ("low_confidence",))

    class HypothesisPipeline(PrefixPipeline):
        hypothesis_fn = staticmethod(hypothesis)

    def run(config):
        return [e for e in _run_commit(unsure_final, config, pipe_cls=HypothesisPipeline) if isinstance(e, Final)]

    on = run(SessionConfig(commit_every_s=0.24, commit_wait=True, final_hypothesis_fallback=True))
    assert [f.text for f in on] == ["One two three four five."]
    assert [w[1:] for w in on[0].words] == [(round(a * 0.04, 3), round(b * 0.04, 3), 0.4) for _, a, b in WORDS]
    off = run(SessionConfig(commit_every_s=0.24, commit_wait=True))
    assert [f.text for f in off] == [""]  # the partial shown is closed, nothing said


def test_incremental_finals_only_on_the_commit_tracks():
    """The default commits the speech track only: the lyrics track (the same words here)
    keeps one final per segment, with no hypothesis asked for it."""
    from jrsv_stream.stream.session import SessionConfig

    calls = []
    cfg = SessionConfig(commit_every_s=0.24, commit_wait=True)
    assert cfg.commit_tracks == ("speech",)
    ly = _run_commit(_whisperish(calls), cfg, track="lyrics", lyrics=COUNT)
    assert [e.text for e in ly if isinstance(e, Final)] == ["One two three four five."]
    assert [c[3] for c in calls if c[0] == "lyrics"] == [""] and len([c for c in calls if c[0] == "speech"]) > 2
    calls.clear()
    ly = _run_commit(_whisperish(calls), dataclasses.replace(cfg, commit_tracks=("speech", "lyrics")),
                     track="lyrics", lyrics=COUNT)
    assert len([e for e in ly if isinstance(e, Final)]) > 2


def test_incremental_finals_commit_at_a_pause_without_closing_the_utterance():
    """A pause (0.32 s of CTC blank, shorter than the 0.8 s endpoint) asks a hypothesis at
    once and commits the words it is sure of without a second opinion; the utterance goes
    on after the pause and its endpoint's final continues the committed words."""
    from jrsv_stream.stream.session import SessionConfig

    words = [("One", 2, 5), ("two", 8, 11), ("three.", 25, 30)]
    paused = script({2: "o", 3: "n", 4: "e", 5: " ", 8: "t", 9: "w", 10: "o", 11: " ",
                     25: "t", 26: "h", 27: "r", 28: "e", 29: "e"}, N)
    calls = []
    audio = np.zeros(N * 640, dtype=np.float32)
    p = PrefixPipeline({"speech": paused, "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, _whisperish(calls, words))
    with BatchWorker(p, max_wait_ms=1) as w:
        s = StreamSession(w, "t", SessionConfig(commit_every_s=10.0, commit_pause_s=0.32, commit_wait=True))
        ev = s.process(audio) + s.finish()
        s.close()
    finals = [e for e in ev if isinstance(e, Final) and e.track == "speech"]
    ends = [e for e in ev if e.__class__.__name__ == "UtteranceEnd" and e.track == "speech"]
    assert [f.text for f in finals] == ["One two", "three."]
    assert finals[0].audio_time_s <= 0.96  # speech ended at frame 12 (0.48 s): + 0.32 s of pause + a chunk
    assert len(ends) == 1 and ends[0].segment_id == finals[1].segment_id
    assert [c[3] for c in calls] == ["", "One two"]  # one pause hypothesis, then the endpoint's final


class AheadPipeline(PrefixPipeline):
    """A recognizer with one chunk of lookahead, as the Whisper-CTC one: besides the chunk's
    frames (the scripted ones) each step gives the next chunk's provisional frames and audio
    (``ahead_logp`` / ``ahead_audio``, here the script's own next frames and silence)."""

    def step(self, audio, state):
        out, st = super().step(audio, state)
        F = out.logp["speech"].shape[1]
        T = next(iter(self.logp.values())).shape[0]
        idx = (state.pos[:, None] + F + torch.arange(F)[None]).clamp_max(T - 1)
        ahead = {t: self.logp[t][idx] for t in self.tracks}
        return out._replace(ahead_logp=ahead, ahead_audio={t: torch.zeros_like(audio) for t in self.tracks}), st


def test_hypotheses_hear_the_newest_chunk_but_commit_only_from_the_emitted_frames():
    """With lookahead, a hypothesis decodes the segment's audio plus the newest chunk's
    (provisional) frames: its words reach the partial a chunk earlier; words are still
    committed only where the emitted frames reach (minus the guard), also at a pause, so the
    finals are the same words at the same times as without the newest chunk."""
    from jrsv_stream.stream.session import SessionConfig

    def run(pipe_cls):
        calls = []
        audio = np.zeros(N * 640, dtype=np.float32)
        p = pipe_cls({"speech": COUNT, "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, _whisperish(calls))
        with BatchWorker(p, max_wait_ms=1) as w:
            s = StreamSession(w, "t", SessionConfig(commit_every_s=0.24, commit_wait=True))
            ev = s.process(audio) + s.finish()
            s.close()
        return calls, [e for e in ev if isinstance(e, (Final, Partial)) and e.track == "speech"]

    calls0, ev0 = run(PrefixPipeline)
    calls1, ev1 = run(AheadPipeline)
    F = CHUNK // 640
    hyps0 = [c for c in calls0[:-1]]  # (the last call is the endpoint's final: no newest chunk then)
    hyps1 = [c for c in calls1[:-1]]
    assert hyps1 and all(n % F == 0 for _, n, _, _, _ in hyps1)
    assert hyps1[0][1] == hyps0[0][1] + F  # the same moment, one chunk more audio heard
    finals0 = [(w[0], w[1], w[2]) for e in ev0 if isinstance(e, Final) for w in e.words]
    finals1 = [(w[0], w[1], w[2]) for e in ev1 if isinstance(e, Final) for w in e.words]
    assert finals1 == finals0 == [(w, round(a * 0.04, 3), round(b * 0.04, 3)) for w, a, b in WORDS]
    # a piece committed before the endpoint ends a guard (0.2 s) before the emitted frames'
    # end (here the audio fed: this scripted recognizer has no lag), never in the newest chunk
    pieces = [e for e in ev1 if isinstance(e, Final)][:-1]
    assert pieces and all(f.words[-1][2] <= f.audio_time_s - 0.2 + 1e-6 for f in pieces)

    def first_shown(ev, word):
        return min(e.audio_time_s for e in ev if word in e.text.split())

    assert first_shown(ev1, "three") < first_shown(ev0, "three")


def test_poll_gives_a_decoded_final_without_waiting_for_the_next_chunk():
    """A segment's final decoding on the finals lane comes out of ``poll()`` once done (the
    server calls it when the lane finishes), not only with the next chunk."""
    release = threading.Event()

    def final_fn(track, audio, logp, ctc_text):
        release.wait(10)
        return SegmentFinal(ctc_text.upper(), tuple((w, 0, 1) for w in ctc_text.split()), "ctc")

    audio = np.zeros(N * 640, dtype=np.float32)
    p = AudioPipeline({"speech": SPEECH, "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, final_fn)
    with BatchWorker(p, max_wait_ms=1) as w:
        s = StreamSession(w, "t")
        ev, k = [], 0
        while not s.waiting_on():  # feed until the first segment's final is on the lane
            ev += s.process(audio[k:k + CHUNK])
            k += CHUNK
        assert not s.poll_ready and s.poll() == []
        release.set()
        deadline = time.monotonic() + 10
        while not s.poll_ready and time.monotonic() < deadline:
            time.sleep(0.01)
        got = s.poll()
        assert [(e.text, e.track) for e in got if isinstance(e, Final)] == [("HI YO", "speech")]
        assert not s.waiting_on() and s.poll() == []
        s.close()


def test_the_server_sends_a_final_while_the_publisher_sends_nothing():
    """Live: the publisher stops sending after an utterance's endpoint (a pause in its
    capture, push-to-talk): the final still reaches the subscriber when decoded."""
    import asyncio

    from tests.test_serve_server import collect_until_ended, connect, end_stream, recv_msg, send_audio, url
    from jrsv_stream.serve.server import CaptionServer, ServerConfig

    def final_fn(track, audio, logp, ctc_text):
        time.sleep(0.3)  # a decode that outlasts the chunks fed so far
        return SegmentFinal(ctc_text.upper(), tuple((w, 0, 1) for w in ctc_text.split()), "ctc")

    async def main():
        p = AudioPipeline({"speech": SPEECH, "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, final_fn)
        srv = await CaptionServer(p, ServerConfig(port=0)).start()
        try:
            sub = await connect(url(srv, "subscribe", "s"), proxy=None)
            await recv_msg(sub)  # hello
            pub = await connect(url(srv, "publish", "s"), proxy=None)
            await pub.send('{"v": 1, "type": "start", "sample_rate": 16000, "dtype": "s16le"}')
            await recv_msg(pub)  # ready
            x = (0.1 * np.ones(40 * 640)).astype(np.float32)  # 1.6 s: "hi yo", then its endpoint
            await send_audio(pub, x)
            final = None
            deadline = time.monotonic() + 10
            while final is None and time.monotonic() < deadline:  # nothing more is sent meanwhile
                m = await recv_msg(sub)
                if isinstance(m, Final) and m.track == "speech":
                    final = m
            await end_stream(pub)
            await collect_until_ended(sub)
            await sub.close()
            return final
        finally:
            await srv.stop()

    final = asyncio.run(asyncio.wait_for(main(), 30))
    assert final is not None and final.text == "HI YO"
    assert final.audio_time_s <= 1.6 + 1e-6  # sent before any audio after the pause


def test_a_pause_is_seen_in_the_newest_chunk_too():
    """With lookahead, a pause (commit_pause_s of blank) counts the newest chunk's
    provisional frames that go on with it: the pause hypothesis, and its commit, come a
    chunk earlier; the words are the same."""
    from jrsv_stream.stream.session import SessionConfig

    words = [("One", 2, 5), ("two", 8, 11), ("three.", 25, 30)]
    paused = script({2: "o", 3: "n", 4: "e", 5: " ", 8: "t", 9: "w", 10: "o", 11: " ",
                     25: "t", 26: "h", 27: "r", 28: "e", 29: "e"}, N)

    def run(pipe_cls):
        audio = np.zeros(N * 640, dtype=np.float32)
        p = pipe_cls({"speech": paused, "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, _whisperish([], words))
        with BatchWorker(p, max_wait_ms=1) as w:
            s = StreamSession(w, "t", SessionConfig(commit_every_s=10.0, commit_pause_s=0.32, commit_wait=True))
            ev = s.process(audio) + s.finish()
            s.close()
        return [e for e in ev if isinstance(e, Final) and e.track == "speech"]

    f0, f1 = run(PrefixPipeline), run(AheadPipeline)
    assert [f.text for f in f0] == [f.text for f in f1] == ["One two", "three."]
    assert f1[0].audio_time_s == pytest.approx(f0[0].audio_time_s - CHUNK / 16000)


def test_the_endpoint_is_seen_in_the_newest_chunk_too():
    """endpoint_ahead (off by default): a segment ends (rule 2) once its trailing blank and the newest
    chunk's provisional blank frames reach rule2_trailing_silence_s: its final comes a chunk
    earlier, with the same words; a pause that the newest chunk shows going on for less
    than that (a word begins in it) ends nothing, with or without the newest chunk."""
    from jrsv_stream.stream.session import SessionConfig

    def final_fn(track, audio, logp, ctc_text, hotwords=(), prefix=""):
        # the CTC text, upper case, as one word timed over the segment's non-blank frames
        nb = np.flatnonzero(logp.argmax(-1) != 0)
        return SegmentFinal(ctc_text.upper(), ((ctc_text.upper(), int(nb[0]), int(nb[-1]) + 1),), "attention")

    def run(pipe_cls, tokens, **kw):
        audio = np.zeros(N * 640, dtype=np.float32)
        p = pipe_cls({"speech": script(tokens, N), "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, final_fn)
        with BatchWorker(p, max_wait_ms=1) as w:
            s = StreamSession(w, "t", SessionConfig(commit_every_s=0, commit_wait=True, **kw))
            ev = []
            for i in range(0, len(audio), CHUNK):  # a chunk at a time, each final taken before the next
                ev += s.process(audio[i:i + CHUNK])
                concurrent.futures.wait(s.waiting_on())
                ev += s.poll()
            ev += s.finish()
            s.close()
        return [e for e in ev if isinstance(e, Final) and e.track == "speech"]

    # "hi" ends at frame 3, "ok" begins at frame 50: 46 blank frames, rule 2 needs 20 (0.8 s)
    tokens = {2: "h", 3: "i", 50: "o", 51: "k"}
    f0, f1 = run(PrefixPipeline, tokens, endpoint_ahead=True), run(AheadPipeline, tokens, endpoint_ahead=True)
    off = run(AheadPipeline, tokens)  # off by default (measured: README)
    assert [f.text for f in f0] == [f.text for f in f1] == [f.text for f in off] == ["HI", "OK"]
    assert [[w[:3] for w in f.words] for f in f1] == [[w[:3] for w in f.words] for f in f0] == \
        [[("HI", 0.08, 0.16)], [("OK", 2.0, 2.08)]]
    assert f1[0].audio_time_s == pytest.approx(f0[0].audio_time_s - CHUNK / 16000)
    assert off[0].audio_time_s == pytest.approx(f0[0].audio_time_s)
    # "hi " ends at frame 4, "ok" begins at frame 23: 18 blank frames, two short of rule 2;
    # the newest chunk after the 17th blank frame shows 1 more, then "o": one segment
    tokens = {2: "h", 3: "i", 4: " ", 23: "o", 24: "k"}
    for cls in (PrefixPipeline, AheadPipeline):
        assert [f.text for f in run(cls, tokens, endpoint_ahead=True)] == ["HI OK"]


def test_at_a_pause_the_final_decodes_and_all_its_words_are_committed():
    """commit_pause_final: the pause asks the pipeline's final_fn (its beam), not
    the greedy hypothesis_fn; with commit_pause_min_conf 0 its words are committed whatever
    their confidence: the words the endpoint's final would send later for the same audio.
    Off: a greedy hypothesis and only its confident words."""
    from jrsv_stream.stream.session import SessionConfig

    words = [("One", 2, 5), ("two", 8, 11), ("three.", 25, 30)]
    paused = script({2: "o", 3: "n", 4: "e", 5: " ", 8: "t", 9: "w", 10: "o", 11: " ",
                     25: "t", 26: "h", 27: "r", 28: "e", 29: "e"}, N)

    def unsure(fn):
        def f(track, audio, logp, ctc_text, hotwords=(), prefix=""):
            res = fn(track, audio, logp, ctc_text, hotwords, prefix)
            return res._replace(words=tuple((w[0], w[1], w[2], 0.3) for w in res.words))
        return f

    def run(pause_final):
        finals_calls, hyp_calls = [], []
        p = PrefixPipeline({"speech": paused, "lyrics": SILENT}, {"speech": ON, "lyrics": ON},
                           unsure(_whisperish(finals_calls, words)))
        p.hypothesis_fn = unsure(_whisperish(hyp_calls, words))
        with BatchWorker(p, max_wait_ms=1) as w:
            s = StreamSession(w, "t", SessionConfig(commit_every_s=10.0, commit_pause_s=0.32, commit_wait=True,
                                                    commit_pause_final=pause_final,
                                                    commit_pause_min_conf=0.0 if pause_final else None))
            ev = s.process(np.zeros(N * 640, dtype=np.float32)) + s.finish()
            s.close()
        return [e.text for e in ev if isinstance(e, Final) and e.track == "speech"], finals_calls, hyp_calls

    texts, finals_calls, hyp_calls = run(True)
    assert texts == ["One two", "three."]  # committed at the pause although the decoder was unsure
    assert [c[3] for c in finals_calls] == ["", "One two"] and hyp_calls == []
    texts, finals_calls, hyp_calls = run(False)
    assert texts == ["One two three."]  # nothing sure enough at the pause: all at the endpoint
    assert hyp_calls and all(c[3] == "" for c in hyp_calls) and [c[3] for c in finals_calls] == [""]


def test_partials_read_the_newest_chunk_with_partial_ahead():
    """partial_ahead (on by default): a partial also shows what the CTC beam reads in the
    newest chunk's provisional frames, so each word is on screen a chunk earlier; the beam
    itself steps only over the emitted frames, so the finals (words and times) do not change;
    off, the partials are those of a recognizer without lookahead."""
    from jrsv_stream.stream.session import SessionConfig

    def final_fn(track, audio, logp, ctc_text, hotwords=(), prefix=""):
        return None  # the CTC final stands

    def run(pipe_cls, **kw):
        audio = np.zeros(N * 640, dtype=np.float32)
        p = pipe_cls({"speech": COUNT, "lyrics": SILENT}, {"speech": ON, "lyrics": ON}, final_fn)
        with BatchWorker(p, max_wait_ms=1) as w:
            s = StreamSession(w, "t", SessionConfig(commit_every_s=0, **kw))
            ev = s.process(audio) + s.finish()
            s.close()
        return [e for e in ev if isinstance(e, (Final, Partial)) and e.track == "speech"]

    def first_shown(ev, word):
        return min(e.audio_time_s for e in ev if isinstance(e, Partial) and word in e.text.split())

    plain, off, on = run(PrefixPipeline), run(AheadPipeline, partial_ahead=False), run(AheadPipeline)
    assert [(e.text, e.audio_time_s) for e in off] == [(e.text, e.audio_time_s) for e in plain]
    finals = [[(f.text, f.words) for f in ev if isinstance(f, Final)] for ev in (off, on)]
    assert finals[0] == finals[1] and finals[0][0][0] == "one two thre four five"  # (CTC merges "ee")
    for word in ("two", "thre", "four", "five"):
        assert first_shown(on, word) == pytest.approx(first_shown(off, word) - CHUNK / 16000)
    # the provisional words are timed where the newest chunk's frames put them (a word's end:
    # as far as those frames reach)
    early = next(e for e in on if isinstance(e, Partial) and "thre" in e.text.split())
    (_, s0, e0, _), (_, s1, e1, _) = (next(w for w in ws if w[0] == "thre")
                                      for ws in (early.words, finals[1][0][1]))
    assert s0 == s1 and s0 < e0 <= e1
