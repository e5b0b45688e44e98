"""StreamSession: one live stream, network-free.

It slices incoming 16 kHz samples into the pipeline's fixed chunks, owns the stream's slot
in the :class:`~jrsv_stream.stream.worker.BatchWorker`, and turns each chunk's model output
into caption events, per track:

1. **activity gate** (hysteresis per frame: opens at ``gate_on``, closes below
   ``gate_off``): frames where the track's source is inactive are decoded as certain
   blanks, so no caption appears on a track whose source is silent (no lyrics over
   instrumental music);
2. **CTC prefix beam step** (:mod:`jrsv_stream.decode.ctc_prefix_beam`) -> the best prefix
   is the segment's :class:`~jrsv_stream.stream.events.Partial` (sent when its text changes);
3. **endpoint** (:mod:`jrsv_stream.decode.endpoint`: trailing blanks, max length, activity)
   -> **attention rescoring** of the n-best when the pipeline has a ``rescore_fn``
   (:mod:`jrsv_stream.decode.rescoring`, run on the worker thread) -> the segment's
   :class:`~jrsv_stream.stream.events.Final` with word times and confidences in audio
   time, then an :class:`~jrsv_stream.stream.events.UtteranceEnd` naming the endpoint's
   reason; the next segment of the track gets the next ``segment_id``;
4. **incremental finals** (``SessionConfig.commit_every_s`` > 0, pipelines whose
   ``final_fn`` takes a ``prefix``): while a segment is open, the pipeline's final_fn
   decodes it so far on the finals lane (a *hypothesis*, with the words already committed
   forced as its prefix); the words two consecutive hypotheses agree on, confidently, are
   committed at once as a Final of their own segment (no utterance_end: the utterance goes
   on), the partial shows the latest hypothesis' other words and the CTC words beyond it,
   and the endpoint's final is what follows the committed words.

The stream's :class:`~jrsv_stream.stream.captions.CaptionOptions` choose the tracks
decoded, add hotwords to the beam search (and the ``final_fn``'s prompt), and rewrite
every caption (replace, mask).

Also per chunk an :class:`~jrsv_stream.stream.events.Activity` event, and every
``stats_every_s`` of audio a :class:`~jrsv_stream.stream.events.Stats` event.

Usage (synchronous; the server does the same with asyncio around the futures)::

    with BatchWorker(pipeline) as worker:
        session = StreamSession(worker, "demo")
        events = session.process(audio) + session.end()
        session.close()
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np

from jrsv_stream.decode.confidence import ctc_token_confidence, span_confidence
from jrsv_stream.decode.ctc_prefix_beam import PrefixBeamConfig, best, init_state, nbest, prefix_beam_step
from jrsv_stream.decode.endpoint import EndpointConfig, blank_frames, endpoint_step, init_endpoint_state
from jrsv_stream.decode.hybrid import normalize_text, normalize_word
from jrsv_stream.decode.rescoring import attention_rescore, words_with_times
from jrsv_stream.stream.captions import CaptionOptions
from jrsv_stream.stream.events import Activity, Error, Event, Final, Partial, Stats, UtteranceEnd
from jrsv_stream.stream.session_state import _PENDING, Chunk, _PendingFinal, _Timings, _Track
from jrsv_stream.stream.worker import BatchWorker, StepResult

_FORCED_BLANK_LOGP = -1.0e4  # log-prob given to non-blank tokens on gated-off frames
# endpoint rule -> the ``reason`` of an utterance_end event
_END_REASONS = {"rule1": "silence", "rule2": "silence", "pause": "silence", "rule3": "max_length", "activity": "activity"}


@dataclass(frozen=True)
class SessionConfig:
    """Decoding and event settings of a session.

    Attributes:
        beam: prefix beam search settings (``blank_id`` is taken from the tokenizer; its
            ``lm``, when None, from the pipeline's optional ``lm`` attribute).
        endpoint: endpoint rules (``frame_shift_ms`` is taken from the pipeline); None: the
            pipeline's own (its ``endpoint`` attribute, from ``pipeline.yaml``), else the
            :class:`EndpointConfig` defaults.
        lyrics_endpoint: the lyrics track's endpoint rules; None: the pipeline's
            ``lyrics_endpoint`` (``pipeline.yaml``), else ``endpoint``'s.
        gate_on: a track's gate opens on a frame with activity >= this.
        gate_off: and closes on a frame with activity < this (hysteresis).
        ctc_weight: CTC weight in attention rescoring.
        reverse_weight: right-to-left decoder weight in rescoring (bidirectional decoders).
        stats_every_s: audio seconds between Stats events.
        activity_events: emit an Activity event per chunk.
        max_samples_per_feed: largest single feed accepted (guards memory).
        final_timeout_s: longest wait for the pipeline's ``final_fn`` (then the CTC final).
        track_margin: cross-track rule (None: off): a segment gets no text when, over its
            frames, another track's mean activity exceeds its own by more than this (the
            voice is the other track's, leaked by the separator); a partial it showed is
            closed by an empty final.
        commit_every_s: incremental finals (pipelines whose ``final_fn`` takes a
            ``prefix``): every this many seconds of an open segment, when the finals lane is
            idle, the pipeline decodes the segment so far with the words already committed
            forced as its prefix (a *hypothesis*); the words two consecutive hypotheses
            agree on (local agreement) are committed at once as a Final, and the partial
            shows the latest hypothesis' other words followed by the CTC words beyond it.
            The endpoint's final is then what follows the committed words. 0: off (one final
            per segment, at its endpoint); None: the pipeline's ``commit_every_s``
            attribute (``pipeline.yaml``), else off.
        commit_guard_s: a word is committed only when it ends at least this long before the
            end of the audio its hypothesis heard.
        commit_min_conf: and only when its confidence (the decoder's, see
            docs/protocol.md) is at least this in both hypotheses: Whisper misreads the
            first words of an utterance while it has heard little after them ("Howdy, Mary"
            for "Had he married" until 3 s of audio), agreeing with itself, but unsure
            (measured on real voices: 0.04-0.5 for such words, 0.65-1.0 for the right ones;
            0.6 and 0.7 keep the final WER of the real-voice sets, 0.5 cost 1-2 points).
        commit_tracks: the tracks with incremental finals (Whisper reads the corpus's
            singing too poorly for early commits: lyrics +3.6 WER points with them, and
            each track's hypotheses share the one finals lane).
        commit_pause_s: a pause: once the CTC path has been blank this long after words, a
            hypothesis is asked at once (one per pause) and its words are committed without
            waiting for a second one to agree (only the confidence rule): what follows them
            is silence, so the endpoint's final would decode the same audio; the segment
            stays open (the endpoint still needs ``rule2_trailing_silence_s``), so an
            utterance that goes on is not cut. 0: off.
        commit_pause_final: at a pause, the pipeline's *final* (``final_fn``: its beam) is
            asked instead of a greedy hypothesis (what the endpoint's final would decode 0.5 s
            later, for the same audio). Off by default: measured, with the confidence rule
            it changes nothing; committing all its words (``commit_pause_min_conf=0``) makes
            finals ~0.3-0.7 s earlier and costs 2-4 WER points on real voices (README).
        commit_pause_min_conf: the confidence a word needs to be committed at a pause (None:
            ``commit_min_conf``; 0: all the words before the pause).
        commit_wait: every ``commit_every_s`` a hypothesis is queued whatever the lane is
            doing, and the next chunk waits for it: the commits no longer depend on how
            fast the machine is (offline transcription and evaluation; live sessions keep
            False: a hypothesis must never hold the captions back).
        commit_ahead: hypotheses also hear the newest chunk, which a recognizer with
            lookahead has encoded only at its window's edge (``PipelineOutput.ahead_logp``):
            their words reach the partial a chunk earlier, and a pause (``commit_pause_s``)
            is seen as soon as its newest frames are blank too; commits still come only
            from the emitted frames (minus ``commit_guard_s``).
        endpoint_ahead: with ``commit_ahead``, a segment also ends (rule 2) when its trailing
            blank goes on through the first provisional frames of the newest chunk for
            ``rule2_trailing_silence_s`` in all: its final comes a chunk earlier; the newest
            chunk's frames, once emitted, open the next segment. Off: measured (session 21,
            30 items per set, int8 decoder), final audio latency p50 real clean 1.34 -> 1.31 s,
            real 0 dB 1.56 -> 1.50 s (most words are committed at the pause before), but final
            WER real clean 6.9 -> 8.6 %, 0 dB 25.3 -> 27.6, corpus mixtures speech 76.3 ->
            80.5, out of domain 52.7 -> 54.9 (the edge frames' blanks end utterances that go on).
        partial_ahead: with ``commit_ahead``, a partial also shows what the CTC beam reads in
            the newest chunk's provisional frames (a copy of the beam steps over them; the
            next chunk's emitted frames replace it), while the track's gate is open: a word
            is on screen a chunk earlier when its provisional frames already spell it.
            Measured (session 25, real voices at 0 dB, 12 items, two runs each): live partial
            latency p50 502 / 501 -> 461 / 461 ms, p95 2.62 s either way, final latency the
            same; final WER within the runs' spread; 7 % more partial messages.
        hypothesis_draft: a hypothesis gets the previous one's uncommitted words as a draft
            (pipelines with ``hypothesis_draft``: their hypothesis_fn takes ``draft``): its
            decoder checks them in one pass and decodes token by token only from the first
            word it writes otherwise (speculative decoding; consecutive hypotheses of a
            segment mostly repeat each other). See the README, "Hypotheses that check the
            previous one in one pass".
        final_hypothesis_fallback: when a segment's final is dropped by the recognizer's
            confidence floor (``final.min_confidence``: source "low_confidence") and nothing
            of the segment was committed, its last hypothesis' words (greedy, which passed
            the same floor, having heard the segment and the newest chunk) are its final.
            Found: the beam-5 final reads some short utterances less surely than the greedy
            hypotheses before it ("less than" 0.48 / 0.89 -> "Less then." 0.25 / 0.12).
    """

    beam: PrefixBeamConfig = PrefixBeamConfig(beam=8, top_k=8, nbest=8)
    endpoint: EndpointConfig | None = None
    lyrics_endpoint: EndpointConfig | None = None
    gate_on: float = 0.5
    gate_off: float = 0.3
    ctc_weight: float = 0.5
    reverse_weight: float = 0.0
    stats_every_s: float = 1.0
    activity_events: bool = True
    max_samples_per_feed: int = 16000 * 10
    final_timeout_s: float = 30.0
    track_margin: float | None = None
    commit_every_s: float | None = None
    commit_guard_s: float = 0.2
    commit_min_conf: float = 0.6
    commit_tracks: tuple[str, ...] = ("speech",)
    commit_pause_s: float = 0.32
    commit_pause_final: bool = False
    commit_pause_min_conf: float | None = None
    commit_wait: bool = False
    commit_ahead: bool = True
    endpoint_ahead: bool = False
    partial_ahead: bool = True
    hypothesis_draft: bool = True
    final_hypothesis_fallback: bool = False

    def __post_init__(self):
        if not 0.0 <= self.gate_off <= self.gate_on <= 1.0:
            raise ValueError(f"need 0 <= gate_off <= gate_on <= 1, got {self.gate_off}, {self.gate_on}")
        if self.stats_every_s <= 0:
            raise ValueError(f"stats_every_s must be > 0, got {self.stats_every_s}")
        if self.commit_every_s is not None and self.commit_every_s < 0:
            raise ValueError(f"commit_every_s must be >= 0 (0: off), got {self.commit_every_s}")
        if self.commit_guard_s < 0:
            raise ValueError(f"commit_guard_s must be >= 0, got {self.commit_guard_s}")


def session_endpoint(config: SessionConfig, pipeline, track: str = "speech") -> EndpointConfig:
    """The endpoint rules a session of ``pipeline`` runs on ``track``: ``config.endpoint``,
    else the pipeline's ``endpoint`` attribute, else the defaults; for the lyrics track
    ``config.lyrics_endpoint``, else the pipeline's ``lyrics_endpoint``, before those."""
    if track == "lyrics":
        own = config.lyrics_endpoint or getattr(pipeline, "lyrics_endpoint", None)
        if own is not None:
            return own
    if config.endpoint is not None:
        return config.endpoint
    return getattr(pipeline, "endpoint", None) or EndpointConfig()


def session_commit_every_s(config: SessionConfig, pipeline) -> float:
    """The incremental finals' interval a session of ``pipeline`` runs (0: off):
    ``config.commit_every_s``, else the pipeline's ``commit_every_s`` attribute
    (``pipeline.yaml``), else off."""
    if config.commit_every_s is not None:
        return float(config.commit_every_s)
    return float(getattr(pipeline, "commit_every_s", None) or 0.0)

class StreamSession:
    """One stream: chunking, its worker slot, per-track decoding, events.

    Args:
        worker: the running :class:`BatchWorker` (its pipeline gives sizes and tokenizer).
        stream_id: name used in events.
        config: :class:`SessionConfig`.
        rescore: use the pipeline's ``rescore_fn`` for finals when it has one.
        clock: wall clock for ``emitted_at`` / ``ready_at`` (``time.time``).
        options: the stream's caption controls (:mod:`jrsv_stream.stream.captions`):
            hotwords bias the CTC beam (partials) and prompt the pipeline's ``final_fn``;
            replace / mask rewrite every caption; ``tracks`` selects the tracks decoded.

    Raises:
        PoolFull: the worker has no free slot.

    Thread use: one caller at a time (the server runs a stream's steps sequentially).
    """

    def __init__(self, worker: BatchWorker, stream_id: str, config: SessionConfig = SessionConfig(),
                 rescore: bool = True, clock: Callable[[], float] = time.time, options: CaptionOptions = CaptionOptions()):
        p = worker.pipeline
        self.worker = worker
        self.stream_id = stream_id
        self.sample_rate = int(p.sample_rate)
        self.chunk_samples = int(p.chunk_samples)
        self.frame_shift_s = float(p.frame_shift_s)
        self.frame_offset_s = float(getattr(p, "frame_offset_s", 0.0))
        self.tracks = tuple(p.tracks)
        self.tokenizer = p.tokenizer
        self.final_fn = getattr(p, "final_fn", None) if rescore else None
        self.rescore_fn = p.rescore_fn if (rescore and self.final_fn is None) else None
        # incremental finals' hypotheses (the pipeline's greedy hypothesis_fn, else its final_fn)
        self.hypothesis_fn = getattr(p, "hypothesis_fn", None) or self.final_fn
        self.draft_hypotheses = (config.hypothesis_draft and getattr(p, "hypothesis_draft", False)
                                 and getattr(p, "hypothesis_fn", None) is not None)
        self.frame_samples = int(round(self.frame_shift_s * self.sample_rate))
        # a pipeline whose outputs lag its input by lag_chunks chunks (a recognizer with
        # lookahead): the frames of chunk k describe chunk k - lag; the end of the stream
        # feeds lag silent chunks so the last real frames come out
        self.lag_chunks = int(getattr(p, "lag_chunks", 0))
        self._frames_valid = collections.deque([self.chunk_samples] * self.lag_chunks)
        self._finals_pending: collections.deque[_PendingFinal] = collections.deque()  # finals decoding on the finals lane
        self.options = options
        self.caption_tracks = tuple(t for t in self.tracks if options.tracks is None or t in options.tracks)
        self.final_hotwords = tuple(h.phrase for h in options.hotwords)
        self.config = dataclasses.replace(
            config, beam=self._with_hotwords(dataclasses.replace(
                config.beam, blank_id=int(self.tokenizer.blank_id),
                lm=config.beam.lm if config.beam.lm is not None else getattr(p, "lm", None))))
        # each track's endpoint rules, resolved (session_endpoint) at the pipeline's frame shift (the lyrics track may have its own: sung notes hold a
        # vowel for seconds, where the CTC head emits blanks that end a spoken segment)
        self.track_endpoints = {t: dataclasses.replace(session_endpoint(config, p, t), frame_shift_ms=1000.0 * self.frame_shift_s)
                                for t in self.tracks}
        # incremental finals: frames between hypotheses (0: off) and the commit guard
        self.commit_frames = (int(round(session_commit_every_s(config, p) / self.frame_shift_s))
                              if self.final_fn is not None and getattr(p, "final_prefix", False) else 0)
        self.guard_frames = int(round(config.commit_guard_s / self.frame_shift_s))
        self.pause_frames = int(round(config.commit_pause_s / self.frame_shift_s))
        self.clock = clock
        self.handle = worker.open_stream(stream_id)
        self._pending = np.zeros(0, dtype=np.float32)  # samples of the incomplete chunk
        self._chunks_made = 0
        self._chunks_done = 0
        self._last_ready_at = 0.0  # the last decoded chunk's ready_at (the latency base of poll()'s events)
        self._samples_in = 0
        self.audio_time_s = 0.0  # audio decoded so far
        self._seq = itertools.count(1)  # next() is atomic: errors may be made on another thread
        self._tracks = {t: self._new_track(t, 0) for t in self.tracks}
        self._timings = _Timings()
        self._compute_ms_window: collections.deque[tuple[float, float]] = collections.deque(maxlen=50)
        self._next_stats_s = self.config.stats_every_s
        self.overruns = 0  # set by whoever feeds the session (ring overruns, dropped audio)
        self.closed = False

    def _with_hotwords(self, beam: PrefixBeamConfig) -> PrefixBeamConfig:
        """``beam`` plus the stream's hotwords as CTC token sequences (normalized like the
        CTC head's text), each with its boost per matched token."""
        encode = getattr(self.tokenizer, "encode", None)
        if not self.options.hotwords or encode is None:
            return beam
        ids, scores = list(beam.hotwords), list(beam.hotword_scores or [beam.context_score] * len(beam.hotwords))
        for h in self.options.hotwords:
            t = tuple(encode(normalize_text(h.phrase)))
            if t:
                ids.append(t)
                scores.append(h.boost)
        return dataclasses.replace(beam, hotwords=tuple(ids), hotword_scores=tuple(scores))

    # ------------------------------------------------------------------ audio in
    def _new_track(self, name: str, start_frame: int, segment: int = 0, gate: bool = False) -> _Track:
        return _Track(name, init_state(self.config.beam, start_frame), init_endpoint_state(self.track_endpoints[name]),
                      segment=segment, seg_start_frame=start_frame, gate=gate)

    def validate(self, samples: np.ndarray) -> np.ndarray:
        """Check one block of input: (n,) float32, finite, not too long.

        Raises:
            ValueError: with a message fit for an ``error`` event.
        """
        x = np.asarray(samples)
        if x.dtype != np.float32:
            raise ValueError(f"audio must be float32 samples, got {x.dtype}")
        if x.ndim != 1:
            raise ValueError(f"audio must be mono (n,), got shape {x.shape}")
        if len(x) > self.config.max_samples_per_feed:
            raise ValueError(f"audio block of {len(x)} samples exceeds {self.config.max_samples_per_feed}")
        if not np.isfinite(x).all():
            raise ValueError("audio contains NaN or Inf samples")
        return x

    def feed(self, samples: np.ndarray) -> list[Chunk]:
        """Append samples; return the chunks now complete (in order).

        Raises:
            ValueError: invalid samples (see :meth:`validate`); nothing is appended.
        """
        x = self.validate(samples)
        self._samples_in += len(x)
        buf = np.concatenate([self._pending, x]) if len(self._pending) else x
        n = len(buf) // self.chunk_samples
        now = self.clock()
        chunks = []
        for i in range(n):
            a = buf[i * self.chunk_samples:(i + 1) * self.chunk_samples]
            chunks.append(Chunk(self._chunks_made, np.ascontiguousarray(a, dtype=np.float32), self.chunk_samples, now))
            self._chunks_made += 1
        self._pending = buf[n * self.chunk_samples:].copy()
        return chunks

    def flush(self) -> Chunk | None:
        """The remaining samples zero-padded to a chunk (end of stream), or None."""
        if not len(self._pending):
            return None
        a = np.zeros(self.chunk_samples, dtype=np.float32)
        a[:len(self._pending)] = self._pending
        c = Chunk(self._chunks_made, a, len(self._pending), self.clock())
        self._chunks_made += 1
        self._pending = np.zeros(0, dtype=np.float32)
        return c

    def final_chunks(self) -> list[Chunk]:
        """End of stream: the padded last chunk (if any) and the pipeline's ``lag_chunks``
        silent chunks that bring out the frames of the last real audio."""
        out = [c for c in (self.flush(),) if c is not None]
        for _ in range(self.lag_chunks):
            out.append(Chunk(self._chunks_made, np.zeros(self.chunk_samples, dtype=np.float32), 0, self.clock()))
            self._chunks_made += 1
        return out

    def submit(self, chunk: Chunk) -> Future:
        """Queue the chunk on the worker (see :meth:`BatchWorker.submit`)."""
        return self.handle.submit(chunk.audio)

    # ------------------------------------------------------------------ decoding
    def _next_seq(self) -> int:
        return next(self._seq)

    def _audio_time(self, model_s: float) -> float:
        """A time on the model's frame clock -> audio time, within [0, audio decoded so far]
        (a padded last frame ends after the audio)."""
        return round(min(self.audio_time_s, max(0.0, model_s + self.frame_offset_s)), 3)

    def _words(self, tokens, frames, logp: np.ndarray, start_frame: int) -> tuple[tuple[str, float, float, float], ...]:
        conf = ctc_token_confidence(logp, tokens, frames, start_frame)
        ws = words_with_times(tokens, frames, self.tokenizer, self.frame_shift_s, conf)
        return tuple((w.word, self._audio_time(w.start_s), self._audio_time(w.end_s), round(w.conf, 3)) for w in ws)

    def _seg_logp(self, tr: _Track) -> np.ndarray:
        if not tr.seg_logp:
            return np.zeros((0, 1), dtype=np.float32)
        if len(tr.seg_logp) > 1:
            tr.seg_logp = [np.concatenate(tr.seg_logp)]
        return tr.seg_logp[0]

    def _emit(self, cls, tr: _Track, text: str, words, empty_start: float, now: float, ready_at: float, **kw):
        """A caption event of segment ``tr`` after the stream's replace / mask filters: its
        start / end from ``words`` (``empty_start`` when there are none)."""
        if cls is not Final or text:
            text, words = self.options.filter_text(text), self.options.filter_words(words)
        start = words[0][1] if words else empty_start
        end = words[-1][2] if words else start
        return cls(stream_id=self.stream_id, track=tr.name, segment_id=f"{tr.name}-{tr.segment}", seq=self._next_seq(),
                   text=text, words=words, start_s=start, end_s=end, audio_time_s=round(self.audio_time_s, 3),
                   emitted_at=now, latency_ms=round(1000.0 * (now - ready_at), 2), **kw)

    def _caption(self, cls, tr: _Track, tokens, frames, now: float, ready_at: float, logp: np.ndarray | None = None, **kw):
        logp = self._seg_logp(tr) if logp is None else logp
        return self._emit(cls, tr, self.tokenizer.decode(list(tokens)).strip(),
                          self._words(tokens, frames, logp, tr.seg_start_frame),
                          max(0.0, tr.seg_start_frame * self.frame_shift_s + self.frame_offset_s), now, ready_at, **kw)

    def _utterance_end(self, tr: _Track, fin: Final, reason: str, now: float) -> UtteranceEnd:
        return UtteranceEnd(self.stream_id, tr.name, fin.segment_id, self._next_seq(), reason, fin.end_s,
                            round(self.audio_time_s, 3), now)

    def _submit_final(self, tr: _Track, tokens, frames, ready_at: float, reason: str) -> bool:
        """Queue the pipeline's ``final_fn`` over the closed segment's track audio on the
        worker's finals lane; True when queued (its Final comes out of :meth:`_drain_finals`
        later, in order, while the next segment's partials already flow). False when there
        is nothing to decode (the CTC path is empty) or the lane refused."""
        ctc_text = self.tokenizer.decode(list(tokens)).strip()
        # with committed words, the final is what follows them: also when only the last
        # hypothesis (not the CTC path) heard more
        if not (ctc_text or tr.hyp) or not tr.audio:
            return False
        audio = np.concatenate(tr.audio)
        logp = self._seg_logp(tr)
        tr.audio = []
        off = tr.cut_frame
        if tr.committed:
            args = (logp[off:], ctc_text, self.final_hotwords, " ".join(tr.committed))
        else:  # final_fns without hotwords (or a prefix) keep working
            args = (logp, ctc_text) + ((self.final_hotwords,) if self.final_hotwords else ())
        try:
            fut = self.worker.call_final(self.final_fn, tr.name, audio, *args)
        except Exception:  # worker stopping: the CTC final stands
            return False
        self._finals_pending.append(_PendingFinal(tr, tuple(tokens), tuple(frames), fut, ready_at, logp, reason, off))
        return True

    def _drain_finals(self, block: bool) -> list[Event]:
        """The Finals of queued segments whose decoding is done (all of them, waiting up to
        ``final_timeout_s`` each, when ``block``), in the order the segments ended. A failed
        decode gives the segment's CTC final; "nothing heard" gives the CTC final only if a
        partial was shown (it must be closed), else no event."""
        out: list[Event] = []
        while self._finals_pending:
            p = self._finals_pending[0]
            if not block and not p.future.done():
                break
            self._finals_pending.popleft()
            try:
                res = p.future.result(self.config.final_timeout_s)
            except Exception:  # the Whisper final is an improvement; the CTC final stands without it
                res = False
            now = self.clock()
            if res is None or res is False:
                if res is None and p.tr.partial_text is None:
                    out += self._close_committed(p.tr, p.reason, now)
                    continue
                fin = self._caption(Final, p.tr, p.tokens, p.frames, now, p.ready_at, logp=p.logp, rescored=False)
            elif (self.config.final_hypothesis_fallback and res.source == "low_confidence" and p.tr.hyp
                  and not p.tr.committed):
                # the beam final read the segment less surely than the confidence floor; the
                # segment's last greedy hypothesis passed it: its words are the final
                fin = self._hypothesis_final(p.tr, p.tr.hyp, now, p.ready_at)
            elif not res.text.strip() and p.tr.partial_text is None:
                out += self._close_committed(p.tr, p.reason, now)
                continue  # nothing said, nothing shown
            else:
                fin = self._final_event(p.tr, res, p.logp, now, p.ready_at, p.offset)
            out += [fin, self._utterance_end(p.tr, fin, p.reason, now)]
        return out

    def _close_committed(self, tr: _Track, reason: str, now: float) -> list[Event]:
        """The utterance_end of a segment that ended with no Final of its own after words
        were committed from it (incremental finals): it names the last committed Final."""
        return [self._utterance_end(tr, tr.last_final, reason, now)] if tr.last_final is not None else []

    def _frame_words(self, res_words, offset: int, logp: np.ndarray) -> tuple:
        """``final_fn`` words (display, start / end frame counted from segment frame
        ``offset``, confidence or None) -> (display, start, end frame in the segment,
        confidence); a word without one gets its CTC posterior over ``logp`` (the segment's)."""
        encode = getattr(self.tokenizer, "encode", None)
        out = []
        for w in res_words:
            a, b = offset + int(w[1]), offset + int(max(w[1], w[2]))
            if len(w) > 3 and w[3] is not None:
                c = round(float(w[3]), 3)
            else:
                norm = normalize_word(w[0])
                c = 1.0 if (not norm or encode is None) else round(span_confidence(logp, encode(norm), a, b), 3)
            out.append((w[0], a, b, c))
        return tuple(out)

    def _timed(self, tr: _Track, w) -> tuple[str, float, float, float]:
        """(display, segment frames start / end, conf) -> the event's (word, start_s, end_s, conf)."""
        return (w[0], self._frame_time(tr, w[1]), self._frame_time(tr, w[2]), w[3])

    def _frame_time(self, tr: _Track, f: int) -> float:
        return self._audio_time((tr.seg_start_frame + f) * self.frame_shift_s)

    def _final_event(self, tr: _Track, res, logp: np.ndarray, now: float, ready_at: float, offset: int = 0) -> Final:
        """A Final from a ``final_fn`` result (text, words with frames relative to segment
        frame ``offset``, and their confidence; a word without one gets its CTC posterior)."""
        words = tuple(self._timed(tr, w) for w in self._frame_words(res.words, offset, logp))
        return self._emit(Final, tr, res.text, words, self._frame_time(tr, offset), now, ready_at,
                          rescored=res.source == "attention")

    # ------------------------------------------------------------------ incremental finals
    def _tail(self, tokens, frames, first_frame: int) -> tuple[tuple, tuple]:
        """The CTC path's words whose text starts at absolute frame ``first_frame`` or later
        (a word begun before it belongs to what is already committed / hypothesized; a bare
        word-start piece, which CTC may emit frames before the word's letters, does not
        count as its beginning)."""
        i = 0
        while i < len(tokens) and frames[i] < first_frame:
            i += 1
        if 0 < i < len(tokens) and not self.tokenizer.is_word_start(int(tokens[i])):
            j = i - 1
            while j > 0 and not self.tokenizer.is_word_start(int(tokens[j])):
                j -= 1
            if not self.tokenizer.decode([int(t) for t in tokens[j:i]]).strip():
                i = j  # the word's text begins after first_frame
            else:
                while i < len(tokens) and not self.tokenizer.is_word_start(int(tokens[i])):
                    i += 1
        return tuple(tokens[i:]), tuple(frames[i:])

    def _maybe_hypothesize(self, tr: _Track) -> None:
        """Queue a hypothesis of the open segment on the finals lane (see
        ``SessionConfig.commit_every_s``): when commits are on, none is pending, the lane is
        idle (finals first), the segment grew by ``commit_frames`` since the last one and
        the CTC path or the last hypothesis heard something beyond the committed words."""
        if (self.commit_frames <= 0 or tr.hyp_future is not None or not tr.audio
                or tr.name not in self.config.commit_tracks):
            return
        if self.worker.finals_waiting and not self.config.commit_wait:
            return
        n = tr.beam.num_frames - tr.seg_start_frame
        blank = tr.beam.trailing_blank_frames
        seen = blank  # the pause so far, with the newest chunk's provisional frames that go on with it
        if tr.ahead is not None and blank:
            nb = tr.ahead[0].argmax(-1) != self.config.beam.blank_id
            seen += int(nb.argmax()) if nb.any() else len(nb)
        pause = 0 < self.pause_frames <= seen and n - blank > max(tr.pause_at, tr.cut_frame)
        if n - tr.hyp_submitted < self.commit_frames and not pause:
            return
        top = best(tr.beam, self.config.beam)
        toks, _ = self._tail(top.tokens, top.token_frames, tr.seg_start_frame + tr.cut_frame)
        ctc_text = self.tokenizer.decode(list(toks)).strip()
        if not (ctc_text or tr.hyp):  # nothing heard beyond the committed words
            return
        audio = np.concatenate(tr.audio)
        tr.audio = [audio]
        logp = self._seg_logp(tr)[tr.cut_frame:n]
        heard = n
        if tr.ahead is not None:  # and the newest chunk, which the segment's frames lag
            logp = np.concatenate([logp, tr.ahead[0]])
            audio = np.concatenate([audio, tr.ahead[1]])
            heard += tr.ahead[0].shape[0]
        try:
            args = (tr.name, audio, logp, ctc_text, self.final_hotwords, " ".join(tr.committed))
            if pause and self.config.commit_pause_final:
                tr.hyp_future = self.worker.call_final(self.final_fn, *args)
            elif self.draft_hypotheses:  # the previous hypothesis' words beyond the committed ones
                tr.hyp_future = self.worker.call_final(self.hypothesis_fn, *args, " ".join(w[0] for w in tr.hyp or ()))
            else:
                tr.hyp_future = self.worker.call_final(self.hypothesis_fn, *args)
        except Exception:  # lane full or worker stopping: no hypothesis this time
            return
        tr.hyp_submitted = n
        tr.hyp_heard = heard
        tr.hyp_pause = pause
        if pause:
            tr.pause_at = n - blank

    def _hypothesis_final(self, tr: _Track, words, now: float, ready_at: float) -> Final:
        """A Final of hypothesis words ((display, segment frames start / end, conf), not
        empty): committed ones, or a segment's fallback final."""
        return self._emit(Final, tr, " ".join(w[0] for w in words), tuple(self._timed(tr, w) for w in words),
                          self._frame_time(tr, words[0][1]), now, ready_at, rescored=True)

    def _take_hypothesis(self, tr: _Track, now: float, ready_at: float) -> list[Event]:
        """A finished hypothesis of the open segment: commit the words it and the previous
        one agree on (a Final, no utterance_end: the utterance goes on), keep the rest as
        the hypothesis the next one is compared with."""
        fut = tr.hyp_future
        if fut is None or not (fut.done() or self.config.commit_wait):
            return []
        tr.hyp_future = None
        try:
            res = fut.result(self.config.final_timeout_s)
        except Exception:  # a hypothesis is an improvement; the segment's final still comes
            res = None
        if res is None or res.source != "attention" or not res.words:
            tr.hyp = None  # nothing to agree with
            return []
        new = self._frame_words(res.words, tr.cut_frame, self._seg_logp(tr))
        prev = tr.hyp or ()
        limit = tr.hyp_submitted - self.guard_frames
        k = 0
        if tr.hyp_pause:  # at a pause: the words it is sure of, no second opinion needed
            # (before the pause and the guard: a "pause" the CTC head hears inside speech
            # must not commit a word cut at its edge)
            sure = self.config.commit_pause_min_conf
            sure = self.config.commit_min_conf if sure is None else sure
            while k < len(new) and new[k][3] >= sure and new[k][2] <= limit:
                k += 1
        while (k < min(len(prev), len(new)) and new[k][2] <= limit
               and normalize_word(prev[k][0]) == normalize_word(new[k][0])
               and min(prev[k][3], new[k][3]) >= self.config.commit_min_conf):
            k += 1
        events: list[Event] = []
        if k:
            words = new[:k]
            fin = self._hypothesis_final(tr, words, now, ready_at)
            events.append(fin)
            tr.committed += [w[0] for w in words]
            tr.cut_frame = max(tr.cut_frame, words[-1][2])
            tr.last_final = fin
            tr.segment += 1
            tr.partial_text = None
        tr.hyp, tr.hyp_frames = new[k:], tr.hyp_heard
        return events

    def _partial(self, tr: _Track, now: float, ready_at: float, ahead: tuple | None = None) -> list[Event]:
        """The open segment's Partial when its text changed: the CTC prefix beam's best path
        (with incremental finals: the latest hypothesis' uncommitted words, then the CTC
        words beyond the audio it heard); with ``partial_ahead`` and the newest chunk's
        provisional frames (``ahead``), the path over them too."""
        beam, logp = tr.beam, self._seg_logp(tr)
        if ahead is not None and self.config.partial_ahead and tr.gate:
            beam = prefix_beam_step(tr.beam, ahead[0], self.config.beam)  # a copy: tr.beam stays
            logp = np.concatenate([logp, ahead[0]]) if len(logp) else ahead[0]
        hyp = best(beam, self.config.beam)
        if self.commit_frames <= 0 or tr.name not in self.config.commit_tracks:
            text = self.tokenizer.decode(list(hyp.tokens)).strip()
            if text and text != tr.partial_text:
                tr.partial_text = text
                return [self._caption(Partial, tr, hyp.tokens, hyp.token_frames, now, ready_at, logp=logp)]
            return []
        start = tr.cut_frame if tr.hyp is None else max(tr.cut_frame, tr.hyp_frames)
        toks, frs = self._tail(hyp.tokens, hyp.token_frames, tr.seg_start_frame + start)
        words = tuple(self._timed(tr, w) for w in (tr.hyp or ()))
        if toks:
            words += self._words(toks, frs, logp, tr.seg_start_frame)
        text = " ".join(w[0] for w in words)
        if text and text != tr.partial_text:
            tr.partial_text = text
            return [self._emit(Partial, tr, text, words, self._frame_time(tr, start), now, ready_at)]
        return []

    def _final(self, tr: _Track, now: float, ready_at: float, reason: str) -> Final | None | object:
        """The segment's Final now (CTC, or attention-rescored), None for none, or
        ``_PENDING`` when its final decodes on the finals lane (see :meth:`_submit_final`;
        ``reason``: why the segment ended, for its utterance_end)."""
        rescored = False
        hyps = nbest(tr.beam, None, self.config.beam)
        top = hyps[0]
        tokens, frames = top.tokens, top.token_frames
        if tr.hyp_future is not None:  # the endpoint's final supersedes it
            tr.hyp_future.cancel()
            tr.hyp_future = None
        if tr.cut_frame:  # words committed: the final is about what follows them
            tokens, frames = self._tail(tokens, frames, tr.seg_start_frame + tr.cut_frame)
            hyps = []
        m = self.config.track_margin
        if m is not None and tr.act_frames and (tr.other_sum - tr.act_sum) / tr.act_frames > m:
            # the other track's source dominates this segment: its words are a leak
            if tr.partial_text is None:
                return None
            return self._caption(Final, tr, (), (), now, ready_at, rescored=False)
        if self.final_fn is not None:
            if self._submit_final(tr, tokens, frames, ready_at, reason):
                return _PENDING
            if not self.tokenizer.decode(list(tokens)).strip() and tr.partial_text is None:
                return None
        if self.rescore_fn is not None and tr.enc and hyps and any(h.tokens for h in hyps):
            import torch

            enc = torch.cat(tr.enc, dim=0)  # (T, D)
            fn = self.rescore_fn
            track = tr.name
            try:
                res = attention_rescore(hyps, self.config.ctc_weight,
                                        lambda hs: self.worker.call(fn, track, enc, hs).result(),
                                        self.config.reverse_weight)
                tokens, frames, rescored = res[0].tokens, res[0].token_frames, True
            except Exception:  # rescoring is an improvement; the CTC result stands without it
                rescored = False
        if tr.partial_text is None and not self.tokenizer.decode(list(tokens)).strip():
            return None  # nothing was shown and nothing to say: close the segment silently
        return self._caption(Final, tr, tokens, frames, now, ready_at, rescored=rescored)

    def _end_segment(self, tr: _Track, reason: str, now: float, ready_at: float) -> tuple[_Track, list[Event]]:
        """Close the track's open segment (its Final, or the end of its committed words)
        and open the next one at the current frame -> (the new track state, events)."""
        events: list[Event] = []
        fin = self._final(tr, now, ready_at, reason)
        if isinstance(fin, Final):
            events += [fin, self._utterance_end(tr, fin, reason, now)]
        elif fin is None:
            events += self._close_committed(tr, reason, now)
        nxt = tr.segment + (1 if fin is not None else 0)
        self._tracks[tr.name] = new = self._new_track(tr.name, tr.beam.num_frames, nxt, tr.gate)
        return new, events

    def _ends_ahead(self, tr: _Track, ahead_logp: np.ndarray) -> bool:
        """``SessionConfig.endpoint_ahead``: the segment's trailing blank (rule 2: after
        decoded words) and the blank frames that open the newest chunk's provisional
        log-probs together reach ``rule2_trailing_silence_s``."""
        ep_cfg = self.track_endpoints[tr.name]
        r2 = ep_cfg.frames(ep_cfg.rule2_trailing_silence_s)
        if not (self.config.endpoint_ahead and r2 and tr.ep.decoded_something and tr.ep.trailing_blank_frames):
            return False
        nb = ahead_logp.argmax(-1) != self.config.beam.blank_id
        lead = int(nb.argmax()) if nb.any() else len(nb)
        return tr.ep.trailing_blank_frames < r2 <= tr.ep.trailing_blank_frames + lead

    def _gate(self, tr: _Track, act: np.ndarray) -> np.ndarray:
        """Per-frame gate with hysteresis; returns (F,) bool open."""
        g = tr.gate
        out = np.empty(len(act), dtype=bool)
        on, off = self.config.gate_on, self.config.gate_off
        for i, a in enumerate(act.tolist()):
            g = a >= on if not g else a >= off
            out[i] = g
        tr.gate = g
        return out

    def _decode_track(self, tr: _Track, logp: np.ndarray, act: np.ndarray, enc, now: float, ready_at: float,
                      audio: np.ndarray | None = None, other_act: np.ndarray | None = None,
                      ahead: tuple | None = None) -> list[Event]:
        events: list[Event] = self._take_hypothesis(tr, now, ready_at)
        gate = self._gate(tr, act)
        if not gate.all():
            logp = logp.copy()
            blank = self.config.beam.blank_id
            logp[~gate] = _FORCED_BLANK_LOGP
            logp[~gate, blank] = 0.0
        blanks = blank_frames(logp, self.config.beam.blank_id)
        pos, F = 0, logp.shape[0]
        while pos < F:
            tr.ep, ended = endpoint_step(tr.ep, blanks[pos:], act[pos:], self.track_endpoints[tr.name])
            used = tr.ep.frames_used
            tr.beam = prefix_beam_step(tr.beam, logp[pos:pos + used], self.config.beam)
            if enc is not None:
                tr.enc.append(enc[pos:pos + used])
            if audio is not None:
                tr.audio.append(audio[pos * self.frame_samples:(pos + used) * self.frame_samples])
            tr.seg_logp.append(logp[pos:pos + used])
            if other_act is not None:
                tr.act_sum += float(act[pos:pos + used].sum())
                tr.other_sum += float(other_act[pos:pos + used].sum())
                tr.act_frames += used
            pos += used
            if ended:
                tr, ev = self._end_segment(tr, _END_REASONS.get(tr.ep.ended_rule or "", "silence"), now, ready_at)
                events += ev
        if ahead is not None and self._ends_ahead(tr, ahead[0]):
            # the pause goes on through the newest chunk's provisional frames: the segment
            # ends now, a chunk before its emitted frames would show it (those frames,
            # blank or not, open the next segment)
            tr, ev = self._end_segment(tr, "silence", now, ready_at)
            events += ev
        events += self._partial(tr, now, ready_at, ahead)
        tr.ahead = ahead
        self._maybe_hypothesize(tr)
        tr.activity = float(act.mean()) if len(act) else 0.0
        return events

    def on_result(self, chunk: Chunk, result: StepResult) -> list[Event]:
        """Decode one chunk's model output (chunks must arrive in order) -> events."""
        if self.worker.faults is not None:  # test-only fault injection (stream/faults.py); before any state change
            self.worker.faults.check(self.stream_id, "decoder", chunk.index)
        t0 = time.perf_counter()
        self._chunks_done += 1
        n_frames = result.logp[self.tracks[0]].shape[0]
        valid_frames = n_frames
        self._frames_valid.append(chunk.valid_samples)
        frames_valid = self._frames_valid.popleft()  # real samples of the chunk these frames describe
        if frames_valid < self.chunk_samples and n_frames:
            # padded last chunk: frames beyond the real audio are not decoded
            valid_frames = int(np.ceil(frames_valid / self.chunk_samples * n_frames))
        self.audio_time_s += chunk.valid_samples / self.sample_rate
        now = self.clock()
        self._last_ready_at = chunk.ready_at
        events: list[Event] = []
        acts = {t: result.activity[t].numpy()[:valid_frames].astype(np.float64) for t in self.tracks}
        for t in self.caption_tracks:
            logp = result.logp[t].numpy()[:valid_frames]
            act = acts[t]
            others = [acts[o] for o in self.tracks if o != t]
            other_act = np.max(others, axis=0) if (others and self.config.track_margin is not None) else None
            enc = result.encoder_out[t][:valid_frames] if (self.rescore_fn is not None and result.encoder_out) else None
            audio = (result.track_audio[t].numpy()[:valid_frames * self.frame_samples]
                     if (self.final_fn is not None and result.track_audio) else None)
            ahead = None
            if (audio is not None and result.ahead_logp and self.config.commit_ahead
                    and chunk.valid_samples == self.chunk_samples):
                # the newest chunk's provisional frames (not of a padded last chunk or a flush)
                ahead = (result.ahead_logp[t].numpy(), result.ahead_audio[t].numpy())
            events += self._decode_track(self._tracks[t], logp, act, enc, now, chunk.ready_at, audio, other_act, ahead)
        if self._finals_pending:
            events += self._drain_finals(block=False)
        decode_ms = 1000.0 * (time.perf_counter() - t0)
        self._timings.add("queue", result.queued_ms)
        self._timings.add("model", result.compute_ms)
        for stage, ms in (result.stage_ms or {}).items():  # pipelines that time their stages
            self._timings.add(stage, ms)
        self._timings.add("decode", decode_ms)
        self._compute_ms_window.append((result.compute_ms / max(1, result.batch_size) + decode_ms, chunk.valid_samples / self.sample_rate))
        if self.config.activity_events:
            trs = [self._tracks[t] for t in self.tracks]
            events.append(Activity(self.stream_id, self._next_seq(), round(self.audio_time_s, 3), now,
                                   {tr.name: round(tr.activity, 3) for tr in trs}, {tr.name: bool(tr.gate) for tr in trs}))
        if self.audio_time_s + 1e-9 >= self._next_stats_s:
            self._next_stats_s += self.config.stats_every_s * max(1, int((self.audio_time_s - self._next_stats_s) // self.config.stats_every_s) + 1)
            events.append(self.stats())
        return events

    def waiting_on(self) -> list[Future]:
        """The finals-lane futures whose results this session has not taken yet (segment
        finals, incremental-finals hypotheses): a live driver that waits for the next chunk
        should also wake on these and call :meth:`poll`, so a final or a hypothesis reaches
        subscribers when it is decoded, not with the next chunk (or never, while a
        publisher sends nothing)."""
        futs = [self._finals_pending[0].future] if self._finals_pending else []  # finals leave in order
        return futs + [tr.hyp_future for tr in self._tracks.values() if tr.hyp_future is not None]

    @property
    def poll_ready(self) -> bool:
        """True when :meth:`poll` has something to take (one of :meth:`waiting_on` is done)."""
        return any(f.done() for f in self.waiting_on())

    def poll(self) -> list[Event]:
        """Events from finals-lane work that finished since the last chunk: the Finals of
        decoded segments (in order) and, for a finished hypothesis, its commits and the
        partial it changes. Never waits; call between chunks (not concurrently with
        :meth:`on_result`)."""
        now = self.clock()
        events: list[Event] = []
        for t in self.caption_tracks:
            tr = self._tracks[t]
            if tr.hyp_future is not None and tr.hyp_future.done():
                events += self._take_hypothesis(tr, now, self._last_ready_at)
                events += self._partial(tr, now, self._last_ready_at, tr.ahead)
        if self._finals_pending:
            events += self._drain_finals(block=False)
        return events

    def on_failure(self, chunk: Chunk, exc: BaseException) -> list[Event]:
        """The worker could not process ``chunk``: its audio time still passes; an error event."""
        self._chunks_done += 1
        self._frames_valid.append(chunk.valid_samples)
        self._frames_valid.popleft()
        self.audio_time_s += chunk.valid_samples / self.sample_rate
        return [self.error("model_error", str(exc), fatal=False)] + self._drain_finals(block=False)

    def end(self) -> list[Event]:
        """End of stream: finalize every open segment (finals for anything shown)."""
        now = self.clock()
        events: list[Event] = []
        for t in self.caption_tracks:
            tr = self._tracks[t]
            fin = self._final(tr, now, now, "end_of_stream")
            if isinstance(fin, Final):
                events += [fin, self._utterance_end(tr, fin, "end_of_stream", now)]
            elif fin is None:
                events += self._close_committed(tr, "end_of_stream", now)
            self._tracks[t] = self._new_track(t, tr.beam.num_frames, tr.segment + (1 if fin is not None else 0))
        events = self._drain_finals(block=True) + events
        events.sort(key=lambda e: e.seq)
        events.append(self.stats())
        return events

    # ------------------------------------------------------------------ events
    def error(self, code: str, message: str, fatal: bool = False) -> Error:
        return Error(self.stream_id, self._next_seq(), code, message, fatal, self.clock())

    def stats(self) -> Stats:
        w = list(self._compute_ms_window)
        audio = sum(a for _, a in w)
        rtf = (sum(c for c, _ in w) / 1000.0 / audio) if audio > 0 else 0.0
        return Stats(self.stream_id, self._next_seq(), round(self.audio_time_s, 3), self.clock(), round(rtf, 4),
                     self.worker.queue_depth, int(self.overruns), 0, self._chunks_done, self._timings.summary())

    @property
    def open_partials(self) -> dict[str, str | None]:
        """Text of the partial currently shown per track (None: none)."""
        return {t: self._tracks[t].partial_text for t in self.tracks}

    # ------------------------------------------------------------------ sync driver
    def process(self, samples: np.ndarray, timeout_s: float = 60.0) -> list[Event]:
        """Feed samples, run every complete chunk through the worker, return the events."""
        events: list[Event] = []
        for c in self.feed(samples):
            events += self.run_chunk(c, timeout_s)
        return events

    def run_chunk(self, chunk: Chunk, timeout_s: float = 60.0) -> list[Event]:
        try:
            res = self.submit(chunk).result(timeout_s)
        except (RuntimeError, ValueError) as e:
            return self.on_failure(chunk, e)
        return self.on_result(chunk, res)

    def finish(self, timeout_s: float = 60.0) -> list[Event]:
        """Flush the padded last chunk through the model, then :meth:`end`."""
        events: list[Event] = []
        for c in self.final_chunks():
            events += self.run_chunk(c, timeout_s)
        return events + self.end()

    def close(self) -> None:
        """Leave the worker (frees the slot)."""
        if not self.closed:
            self.closed = True
            self.handle.close()


def transcribe(worker: BatchWorker, audio: np.ndarray, config: SessionConfig = SessionConfig(),
               stream_id: str = "offline") -> list[Event]:
    """Offline transcription = the streaming path as fast as possible (one code path);
    incremental finals, when on, wait for each hypothesis (``SessionConfig.commit_wait``),
    so the captions do not depend on the machine's speed.

    Args:
        worker: a running worker.
        audio: (T,) float32 16 kHz mono.

    Returns:
        All events in order (partials, finals, activity, stats).
    """
    s = StreamSession(worker, stream_id, dataclasses.replace(config, commit_wait=True))
    try:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        events: list[Event] = []
        for a in range(0, len(audio), s.chunk_samples * 8):
            events += s.process(audio[a:a + s.chunk_samples * 8])
        return events + s.finish()
    finally:
        s.close()
