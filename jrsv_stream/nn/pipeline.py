"""The JRSV streaming pipeline: causal separator -> shared recognizer on two tracks.

One :meth:`JRSVPipeline.step` takes a chunk of mixture audio for ``B`` streams and returns,
per caption track (``speech`` from the separated speech, ``lyrics`` from the separated
singing voice), CTC log-probabilities, encoder frames (for attention rescoring of finals)
and the separator's activity probabilities pooled to the recognizer's 40 ms frames. It
implements :class:`jrsv_stream.stream.pipeline_api.StreamingPipeline`, so the batching
worker, sessions, server and benchmarks run it unchanged.

State is a :class:`JRSVState` of batch-first tensors with fixed shapes (the recognizer's
attention cache is bounded to ``left_chunks`` chunks), so the worker's slot pool can gather
and scatter streams. Both tracks run through the recognizer as one batch of ``2B``.

Latency: separator algorithmic latency (window + lookahead) + one recognizer chunk.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.decode.endpoint import EndpointConfig
from jrsv_stream.nn.asr import ASRModel, ASRState
from jrsv_stream.nn.separator import load_separator
from jrsv_stream.stream.pipeline_api import PipelineOutput, map_state, state_leaves

SPEECH, SINGING = 0, 1  # separator source / activity order, and the recognizer's track ids
# Live default: 160 ms chunks. The recognizer's encoder is causal frame by frame, so the chunk
# changes latency and per-chunk overhead, not the text (asr_eval: the same greedy WER at
# 160/320/640 ms); bench/latency.py (cascade, 12 test items): partial p50/p95 150/600 ms at 320 ms,
# 104/535 ms at 160 ms.
DEFAULT_CHUNK_SAMPLES = 2560
# Whisper-CTC: 320 ms chunks, the chunk its CTC heads were trained at (every chunk re-encodes
# the recognizer's window, so the chunk sets the cost per second of audio).
WHISPER_CHUNK_SAMPLES = 5120
PIPELINE_FILE = "pipeline.yaml"
# caption track -> the recognizer's track (its decoder adapter for the finals, if any)
_ASR_TRACK = {"speech": "speech", "lyrics": "singing"}
# time constant of the voice gate's smoothing of p(singing) (voice_gate)
VOICE_SMOOTH_S = 0.3
# the voice gate's prior toward talk, a logit offset subtracted from the voice-type logit: a
# voice goes on the lyrics track only when clearly sung (real talk, which the head trained on
# synthetic voices scores p(singing) 0.14 on average and up to ~0.8, must stay off it)
VOICE_BIAS = 3.0


class JRSVState(NamedTuple):
    """sep: the separator's state (B, ...); speech / lyrics: :class:`ASRState` (B, ...) of
    the recognizer on each separated track; mix: past mixture input, kept only when the
    speech finals decode the mixture (``speech_final_audio="mixture"``)."""

    sep: Any
    speech: ASRState
    lyrics: ASRState
    mix: torch.Tensor | None = None  # (B, delay + (lag + 1) * chunk) past mixture samples (finals from the mixture)
    # (B, 2, lag * F) the separator's activity of the last lag chunks: with recognizer lookahead
    # the frames a step emits describe the chunk lag_chunks back, and so must their activity
    act: torch.Tensor | None = None
    vt: torch.Tensor | None = None  # (B,) the lyrics track's smoothed voice-type logit at its last frame (voice_gate)


def _tree_cat(a: Any, b: Any) -> Any:
    """Concatenate two states of the same structure along the batch dimension."""
    leaves_b = iter(state_leaves(b))
    return map_state(lambda x: torch.cat([x, next(leaves_b)], 0), a)


class JRSVPipeline(nn.Module):
    """Separator + recognizer behind the live path's contract.

    Args:
        separator: a causal separator (``jrsv_stream.nn.separator``).
        asr: the recognizer (one model for both tracks, told apart by its track embedding).
        tokenizer: the recognizer's tokenizer.
        chunk_samples: audio per step; a multiple of the recognizer frame (640) and of the
            separator hop.
        left_chunks: recognizer attention context in chunks (bounded for live streams).
        lm: the recognizer's token n-gram LM (``asr/lm.npz``) for shallow fusion in the
            sessions' beam search; None decodes without one.
        track_gain: fixed gain on the separated tracks before the recognizer. The separator
            is trained with the scale-invariant SI-SDR, so its output level is arbitrary
            (the shipped one outputs vocals ~26 dB below the true stems); the recognizer
            needs natural levels. Calibrated on valid data into ``separator/calibration.json``
            (:func:`jrsv_stream.eval.calibrate.calibrate_separator`).
    """

    tracks = ("speech", "lyrics")
    sample_rate = SAMPLE_RATE
    endpoint: EndpointConfig | None = None  # its sessions' endpoint rules (pipeline.yaml ``endpoint:``); None: defaults
    lyrics_endpoint: EndpointConfig | None = None  # the lyrics track's (pipeline.yaml ``lyrics_endpoint:``); None: endpoint

    def __init__(self, separator: nn.Module, asr: ASRModel, tokenizer, chunk_samples: int = DEFAULT_CHUNK_SAMPLES, left_chunks: int = 16,
                 lm=None, track_gain: float = 1.0, speech_final_audio: str = "separated", voice_gate: bool = False,
                 voice_bias: float = VOICE_BIAS, voice_rescue: float | None = None):
        super().__init__()
        if chunk_samples % asr.frame_samples or chunk_samples % separator.hop_samples:
            raise ValueError(f"chunk_samples={chunk_samples} must be a multiple of {asr.frame_samples} (recognizer frame) "
                             f"and {separator.hop_samples} (separator hop)")
        self.separator, self.asr, self.tokenizer = separator.eval(), asr.eval(), tokenizer
        self.lm = lm
        self.track_gain = float(track_gain)
        self.chunk_samples = chunk_samples
        self.chunk_frames = chunk_samples // asr.frame_samples
        self.left_chunks = left_chunks
        self.frame_shift_s = asr.frame_samples / SAMPLE_RATE
        # outputs describe separated audio, which lags the input by the synthesis delay
        self.frame_offset_s = -separator.output_delay_samples / SAMPLE_RATE
        self.algorithmic_latency_ms = separator.algorithmic_latency_ms + 1000.0 * chunk_samples / SAMPLE_RATE
        self.last_stage_ms: dict[str, float] = {}
        # finals: Whisper's decoder over the segment's track audio (Whisper-CTC recognizer),
        # else attention rescoring of the CTC n-best over the encoder frames (from-scratch one)
        self.whisper_finals = hasattr(asr, "finalize")
        # a recognizer with lookahead emits each chunk's frames one step later: outputs
        # (frames and track audio) describe audio lag_chunks chunks older than the input
        self.lag_chunks = asr.lag_samples(chunk_samples) // chunk_samples if hasattr(asr, "lag_samples") else 0
        self.frame_offset_s -= self.lag_chunks * chunk_samples / SAMPLE_RATE
        if speech_final_audio not in ("separated", "mixture"):
            raise ValueError(f"speech_final_audio must be 'separated' or 'mixture', got {speech_final_audio!r}")
        # "mixture": the speech track's finals decode the mixture over the segment (Whisper is
        # robust to music; the separator's artifacts cost more on real voices), aligned to
        # the separated output by the separator's delay and the recognizer's lag
        self.speech_final_audio = speech_final_audio if self.whisper_finals else "separated"
        self.mix_samples = separator.output_delay_samples + (self.lag_chunks + 1) * chunk_samples
        self.algorithmic_latency_ms += 1000.0 * self.lag_chunks * chunk_samples / SAMPLE_RATE
        self.final_fn = self._final_fn if self.whisper_finals else None
        # incremental finals' hypotheses: greedy whatever the finals' beam (their words need
        # the decoder's confidence)
        self.hypothesis_fn = self._hypothesis_fn if self.whisper_finals else None
        self.final_prefix = self.whisper_finals  # final_fn takes prefix= (incremental finals)
        self.hypothesis_draft = self.whisper_finals  # hypothesis_fn takes draft= (the previous hypothesis)
        self.commit_every_s: float | None = None  # the sessions' incremental finals (pipeline.yaml commit_every_s)
        # with speech_final_audio "mixture": the speech finals decode speech_final_mix x the
        # mixture + (1 - speech_final_mix) x the separated speech (1.0: the mixture alone)
        self.speech_final_mix = 1.0
        # and (with the mixture kept) the lyrics finals lyrics_final_mix x the mixture + the rest
        # x the separated singing (0.0: the separated singing alone)
        self.lyrics_final_mix = 0.0
        # consensus speech finals (with the mixture kept): the speech track's audio is kept two
        # ways, (mixture, separated) per sample; hypotheses decode the speech_final_mix blend,
        # finals decode the blend, the mixture and the separated speech and keep the one
        # whose text is nearest the other two (decode.hybrid.consensus_index): three decodes
        # a final. pipeline.yaml speech_final_consensus; README "Consensus finals live"
        self.speech_final_consensus = False
        # voice gate: the lyrics track's activity times p(singing) of its voice, from the
        # recognizer's voice-type head over the track's own encoder frames (nn.voice_type),
        # smoothed causally, with a prior toward talk (voice_bias). Real talk that the separator
        # puts on the singing track is then not captioned twice. (Gating the speech track by
        # 1 - p(singing) as well was measured: it cut real talk over music, 39.7 -> 44.8 % WER.)
        if voice_gate and getattr(asr, "voice_type", None) is None:
            raise ValueError("voice_gate needs a recognizer with a voice-type head (voice_type.pt in its folder)")
        self.voice_gate = bool(voice_gate)
        self.voice_bias = float(voice_bias)
        # voice rescue: talk that the separator routes to the singing track (real voices it
        # rates as "singing") opens the speech track's gate: speech activity becomes the larger
        # of its own and the singing track's activity times p(talk) = sigmoid(voice_rescue - z)
        # of that voice (z the smoothed voice-type logit). The speech final then decodes the
        # voice from the mixture (speech_final_audio: mixture). None: off.
        if voice_rescue is not None and not voice_gate:
            raise ValueError("voice_rescue needs voice_gate (the voice-type head's logits)")
        self.voice_rescue = None if voice_rescue is None else float(voice_rescue)
        self.voice_alpha = float(torch.exp(torch.tensor(-asr.frame_samples / SAMPLE_RATE / VOICE_SMOOTH_S)))
        self.rescore_fn = None if self.whisper_finals else self._rescore_fn

    @property
    def device(self) -> torch.device:
        return next(self.asr.parameters()).device

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> JRSVState:
        cache = self.left_chunks * self.chunk_frames
        return JRSVState(
            self.separator.init_state(batch, device),
            self.asr.init_state(batch, device, tracks=[SPEECH] * batch, cache_frames=cache),
            self.asr.init_state(batch, device, tracks=[SINGING] * batch, cache_frames=cache),
            torch.zeros(batch, self.mix_samples, device=device) if self.speech_final_audio == "mixture" else None,
            torch.zeros(batch, 2, self.lag_chunks * self.chunk_frames, device=device) if self.lag_chunks else None,
            torch.zeros(batch, device=device) if self.voice_gate else None,
        )

    @torch.no_grad()
    def step(self, audio: torch.Tensor, state: JRSVState) -> tuple[PipelineOutput, JRSVState]:
        """audio: (B, chunk_samples) mixture -> per-track (B, F, V) log-probs, (B, F) activity,
        (B, F, D) encoder frames, with F = chunk_samples / 640."""
        if audio.dim() != 2 or audio.shape[1] != self.chunk_samples:
            raise ValueError(f"expected audio of shape (B, {self.chunk_samples}), got {tuple(audio.shape)}")
        B = audio.shape[0]
        t0 = time.perf_counter()
        sep, sep_state = self.separator.step(audio, state.sep)
        t1 = time.perf_counter()
        act = F.adaptive_avg_pool1d(sep.activity_probs, self.chunk_frames)  # (B, 2, F)
        act_hist = None
        if state.act is not None:  # the emitted frames' activity (see JRSVState.act)
            act_hist = torch.cat([state.act, act.to(state.act.dtype)], 2)
            prev, act_hist = act_hist[:, :, :self.chunk_frames], act_hist[:, :, self.chunk_frames:]
            act = torch.stack([torch.maximum(prev[:, SPEECH], act[:, SPEECH]), prev[:, SINGING]], 1)
        tracks_audio = torch.cat([sep.sources[:, SPEECH], sep.sources[:, SINGING]], 0)
        if self.track_gain != 1.0:
            tracks_audio = tracks_audio * self.track_gain
        ahead_logp = None
        if self.whisper_finals and self.lag_chunks:  # the newest chunk's provisional frames too (hypotheses)
            logp, enc, asr_state, ahead_logp = self.asr.step_ahead(tracks_audio, _tree_cat(state.speech, state.lyrics))
        else:
            logp, enc, asr_state = self.asr.step(tracks_audio, _tree_cat(state.speech, state.lyrics), self.left_chunks)
        vt = None
        if self.voice_gate:
            z, vt = self._voice_logits(enc[B:], state.vt)
            p_sing = torch.sigmoid(z - self.voice_bias).to(act.dtype)
            speech_act = act[:, SPEECH]
            if self.voice_rescue is not None:
                p_talk = torch.sigmoid(self.voice_rescue - z).to(act.dtype)
                speech_act = torch.maximum(speech_act, act[:, SINGING] * p_talk)
            act = torch.stack([speech_act, act[:, SINGING] * p_sing], 1)
        t2 = time.perf_counter()
        self.last_stage_ms = {"separator": 1000 * (t1 - t0), "encoder": 1000 * (t2 - t1)}
        speech_state = map_state(lambda x: x[:B], asr_state)
        lyrics_state = map_state(lambda x: x[B:], asr_state)
        mix = None if state.mix is None else torch.cat([state.mix, audio.to(state.mix.dtype)], 1)[:, -self.mix_samples:]
        out = PipelineOutput(
            logp={"speech": logp[:B], "lyrics": logp[B:]},
            activity={"speech": act[:, SPEECH], "lyrics": act[:, SINGING]},
            encoder_out=None if self.whisper_finals else {"speech": enc[:B], "lyrics": enc[B:]},
            track_audio=self._track_audio(tracks_audio, asr_state, B, mix) if self.whisper_finals else None,
            ahead_logp=None if ahead_logp is None else {"speech": ahead_logp[:B], "lyrics": ahead_logp[B:]},
            ahead_audio=None if ahead_logp is None else self._ahead_audio(tracks_audio, B, mix),
        )
        return out, JRSVState(sep_state, speech_state, lyrics_state, mix, act_hist, vt)

    def _voice_logits(self, enc: torch.Tensor, vt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lyrics track's encoder frames (B, F, D) -> voice-type logits (B, F) smoothed
        frame by frame (one-pole, VOICE_SMOOTH_S; p(singing) = sigmoid(logit - voice_bias)),
        and the last smoothed logit (B,) for the next step."""
        z = self.asr.voice_type.logits(enc)  # (B, F)
        a, prev, out = self.voice_alpha, vt.to(z.dtype), []
        for f in range(z.shape[1]):
            prev = a * prev + (1 - a) * z[:, f]
            out.append(prev)
        return torch.stack(out, 1), prev

    def _track_audio(self, tracks_audio: torch.Tensor, asr_state, B: int, mix: torch.Tensor | None
                     ) -> dict[str, torch.Tensor]:
        """The track audio of the frames this step emits (the chunk itself, or with
        lookahead the chunk before it, still in the recognizer's window); with ``mix`` (the
        mixture history) the speech track's is the mixture those frames describe."""
        if self.lag_chunks:
            cs = self.chunk_samples
            a = asr_state.history[:, -(self.lag_chunks + 1) * cs: asr_state.history.shape[1] - self.lag_chunks * cs]
        else:
            a = tracks_audio
        cs = self.chunk_samples
        m = None if mix is None else mix[:, :cs]
        return {"speech": self._speech_audio(a[:B], m), "lyrics": self._blend(a[B:], m, self.lyrics_final_mix)}

    def _ahead_audio(self, tracks_audio: torch.Tensor, B: int, mix: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The track audio of the newest chunk, which the emitted frames lag (with lookahead):
        what ``ahead_logp`` describes, mixed for the speech track as :meth:`_track_audio`."""
        cs = self.chunk_samples
        m = None if mix is None else mix[:, cs:2 * cs]
        return {"speech": self._speech_audio(tracks_audio[:B], m),
                "lyrics": self._blend(tracks_audio[B:], m, self.lyrics_final_mix)}

    def _speech_audio(self, separated: torch.Tensor, mix: torch.Tensor | None) -> torch.Tensor:
        """The speech track's finals audio of one chunk: the blend (:meth:`_blend`), or with
        ``speech_final_consensus`` the two ways it is heard, (B, n, 2): mixture, separated."""
        if self.speech_final_consensus and mix is not None:
            return torch.stack([mix.to(separated.dtype), separated], -1)
        return self._blend(separated, mix, self.speech_final_mix)

    @staticmethod
    def _blend(separated: torch.Tensor, mix: torch.Tensor | None, w: float) -> torch.Tensor:
        """A track's finals audio of one chunk: the separated track, or with the mixture over
        the same samples (kept with ``speech_final_audio: mixture``) ``w`` x the mixture + the
        rest x the separated track (``speech_final_mix`` / ``lyrics_final_mix``: the music
        partly removed, the separator's artifacts partly masked)."""
        if mix is None or w <= 0.0:
            return separated
        if w >= 1.0:
            return mix
        return w * mix.to(separated.dtype) + (1.0 - w) * separated

    def _final_fn(self, track: str, audio, logp, ctc_text: str, hotwords: tuple[str, ...] = (), prefix: str = ""):
        """The segment's final from its track audio (see :meth:`WhisperCTC.finalize`);
        ``hotwords`` prompt its decoder; ``prefix``: the segment's words already committed
        (incremental finals: the result is what follows them). Audio heard two ways
        (``speech_final_consensus``, (n, 2): mixture, separated): the blend, the mixture and
        the separated speech are each decoded and the consensus of the three is the final."""
        audio = np.asarray(audio)
        if audio.ndim == 1:
            return self.asr.finalize(audio, logp, ctc_text, self.tokenizer, hotwords, prefix, track=_ASR_TRACK[track])
        from jrsv_stream.decode.hybrid import consensus_index

        res = []
        for view in (self._blend_views(audio), audio[:, 0], audio[:, 1]):
            r = self.asr.finalize(np.ascontiguousarray(view), logp, ctc_text, self.tokenizer, hotwords, prefix,
                                  track=_ASR_TRACK[track])
            if r is None:  # nothing heard (the same CTC text for every view): not decoded
                return None
            res.append(r)
        return res[consensus_index([r.text for r in res])]

    def _blend_views(self, audio: np.ndarray) -> np.ndarray:
        """(n, 2) mixture / separated speech -> the speech_final_mix blend (n,)."""
        w = self.speech_final_mix
        return (w * audio[:, 0] + (1.0 - w) * audio[:, 1]).astype(audio.dtype)

    def _hypothesis_fn(self, track: str, audio, logp, ctc_text: str, hotwords: tuple[str, ...] = (), prefix: str = "",
                       draft: str = ""):
        """:meth:`_final_fn` greedy (a hypothesis of an open segment, incremental finals);
        ``draft``: the previous hypothesis' words after ``prefix``, checked in one decoder
        pass instead of decoded token by token (see :meth:`WhisperCTC.finalize`)."""
        audio = np.asarray(audio)
        if audio.ndim == 2:  # heard two ways (speech_final_consensus): hypotheses decode the blend
            audio = self._blend_views(audio)
        return self.asr.finalize(audio, logp, ctc_text, self.tokenizer, hotwords, prefix, beam=1,
                                 track=_ASR_TRACK[track], draft=draft)

    @torch.no_grad()
    def _rescore_fn(self, track: str, encoder_out: torch.Tensor, hyps: list[list[int]]):
        """Attention-decoder log p(hyp + <eos>) for each hypothesis, one batched call."""
        enc = encoder_out.to(self.device)[None]
        return self.asr.score(enc, torch.tensor([enc.shape[1]], device=self.device), hyps)


def pipeline_from_folders(separator: str | Path | None, asr: str | Path, chunk_samples: int | None = None,
                          device: str | None = None, left_chunks: int = 16, lm: bool = True,
                          whisper_overrides: dict | None = None, lm_dir: str | Path | None = None,
                          speech_final_audio: str = "separated", voice_gate: bool = False,
                          voice_bias: float = VOICE_BIAS, voice_rescue: float | None = None) -> JRSVPipeline:
    """A pipeline from a separator folder (or ``separator.pt``; None: the mixture passes
    through to both tracks) and a recognizer folder (a Whisper-CTC folder, ``type:
    whisper_ctc``, or the from-scratch baseline's), with the separator's output calibration
    (``calibration.json``) and the recognizer's LM (``lm.npz``, when ``lm`` and present).
    ``whisper_overrides``: Whisper-CTC config fields to replace (e.g. ``{"final_whisper":
    "small"}``: finals from Whisper small); ``$JRSV_FINAL_WHISPER`` sets ``final_whisper``.
    ``lm_dir``: take the LM (``lm.npz``) from this folder instead of the recognizer's.
    ``speech_final_audio``: what the speech track's Whisper finals decode: the separated
    speech (default) or the mixture (see :class:`JRSVPipeline`). ``voice_gate``: gate the
    lyrics track by the recognizer's voice-type head, ``voice_bias`` its prior toward talk
    (see :class:`JRSVPipeline`); ``voice_rescue``: talk on the singing track opens the speech
    track's gate (see :class:`JRSVPipeline`).

    Raises:
        FileNotFoundError: a model folder is missing; ValueError: a checkpoint or LM is corrupt.
    """
    from jrsv_stream.decode.ngram_lm import load_model_lm
    from jrsv_stream.decode.tokenizer import Tokenizer

    asr_dir = Path(asr)
    if not asr_dir.is_dir():
        raise FileNotFoundError(f"recognizer folder {asr_dir} not found")
    if separator is not None and not Path(separator).exists():
        raise FileNotFoundError(f"separator folder {separator} not found")
    from jrsv_stream.nn.whisper_ctc import WhisperCTC, is_whisper_ctc_folder

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if separator is None:
        sep, gain = PassThroughSeparator(), 1.0
    else:
        sep, gain = load_separator(separator, dev)[0], separator_track_gain(separator)
    if is_whisper_ctc_folder(asr_dir):
        import os

        over = dict(whisper_overrides or {})
        if os.environ.get(FINAL_WHISPER_ENV):
            over.setdefault("final_whisper", os.environ[FINAL_WHISPER_ENV])
        model = WhisperCTC.from_pretrained(asr_dir, dev, **over)
        default_chunk = WHISPER_CHUNK_SAMPLES
    else:
        model = ASRModel.from_pretrained(asr_dir, dev)
        default_chunk = DEFAULT_CHUNK_SAMPLES
    tok = Tokenizer(asr_dir / "tokenizer.model")
    return JRSVPipeline(sep, model, tok, chunk_samples or default_chunk, left_chunks,
                        lm=load_model_lm(lm_dir or asr_dir) if lm else None, track_gain=gain,
                        speech_final_audio=speech_final_audio, voice_gate=voice_gate, voice_bias=voice_bias,
                        voice_rescue=voice_rescue).to(dev)


FINAL_WHISPER_ENV = "JRSV_FINAL_WHISPER"


def set_final_whisper(size: str | None) -> None:
    """``--final-whisper``: the Whisper model the Whisper-CTC pipeline's finals use
    (``$JRSV_FINAL_WHISPER``, read by :func:`pipeline_from_folders` when it loads)."""
    import os

    if size:
        os.environ[FINAL_WHISPER_ENV] = size


def read_pipeline_file(model_dir: str | Path) -> dict | None:
    """``model_dir/pipeline.yaml`` resolved: ``{"separator": Path | None, "asr": Path,
    "lm": Path | None, "chunk_ms": float | None, "speech_final_audio": str, "voice_gate": bool,
    "voice_bias": float, "voice_rescue": float | None, "endpoint": EndpointConfig | None,
    "lyrics_endpoint": EndpointConfig | None, "commit_every_s": float | None,
    "speech_final_mix": float, "lyrics_final_mix": float, "speech_final_consensus": bool}``
    (folders relative to the file; ``endpoint:`` a mapping of
    :class:`~jrsv_stream.decode.endpoint.EndpointConfig` fields, the endpoint rules of this
    pipeline's sessions; ``lyrics_endpoint:`` fields that replace those on the lyrics track),
    or None when the folder has no such file.

    Raises:
        ValueError: the file is unreadable or lacks ``separator:`` / ``asr:``.
    """
    import yaml

    root = Path(model_dir)
    spec = root / PIPELINE_FILE
    if not spec.is_file():
        return None
    try:
        doc = yaml.safe_load(spec.read_text())
        sep_rel, asr_rel = doc["separator"], doc["asr"]
        chunk_ms, lm_rel = doc.get("chunk_ms"), doc.get("lm")
        speech_final_audio = str(doc.get("speech_final_audio", "separated"))
        voice_gate = bool(doc.get("voice_gate", False))
        voice_bias = float(doc.get("voice_gate_bias", VOICE_BIAS))
        rescue = doc.get("voice_rescue")
        voice_rescue = None if rescue is None else float(rescue)
        final_mix = float(doc.get("speech_final_mix", 1.0))
        if not 0.0 <= final_mix <= 1.0:
            raise ValueError(f"speech_final_mix must be in [0, 1], got {final_mix}")
        lyrics_mix = float(doc.get("lyrics_final_mix", 0.0))
        if not 0.0 <= lyrics_mix <= 1.0:
            raise ValueError(f"lyrics_final_mix must be in [0, 1], got {lyrics_mix}")
        if lyrics_mix > 0.0 and speech_final_audio != "mixture":
            raise ValueError("lyrics_final_mix needs speech_final_audio: mixture (the mixture is kept for it)")
        consensus = doc.get("speech_final_consensus", False)
        if not isinstance(consensus, bool):
            raise ValueError(f"speech_final_consensus must be true or false, got {consensus!r}")
        if consensus and speech_final_audio != "mixture":
            raise ValueError("speech_final_consensus needs speech_final_audio: mixture (the mixture is one of its ways)")
        commit = doc.get("commit_every_s")
        commit_every_s = None if commit is None else float(commit)
        if commit_every_s is not None and commit_every_s < 0:
            raise ValueError(f"commit_every_s must be >= 0, got {commit_every_s}")
    except Exception as e:
        raise ValueError(f"{spec}: not a pipeline file (needs separator: and asr:): {e}") from e
    try:
        ep = doc.get("endpoint")
        endpoint = None if ep is None else EndpointConfig(**_endpoint_fields(ep))
        lep = doc.get("lyrics_endpoint")  # fields replacing the endpoint's (or the defaults) on the lyrics track
        lyrics_endpoint = None if lep is None else dataclasses.replace(endpoint or EndpointConfig(), **_endpoint_fields(lep))
    except Exception as e:
        raise ValueError(f"{spec}: bad endpoint: (EndpointConfig fields: seconds, activity_window_frames a "
                         f"whole number of frames): {e}") from e
    return {"separator": None if sep_rel is None else root / sep_rel, "asr": root / asr_rel,
            "lm": None if lm_rel is None else root / lm_rel, "chunk_ms": None if chunk_ms is None else float(chunk_ms),
            "speech_final_audio": speech_final_audio, "voice_gate": voice_gate, "voice_bias": voice_bias,
            "voice_rescue": voice_rescue, "endpoint": endpoint, "lyrics_endpoint": lyrics_endpoint,
            "commit_every_s": commit_every_s,
            "speech_final_mix": final_mix, "lyrics_final_mix": lyrics_mix, "speech_final_consensus": consensus}


def load_streaming_pipeline(model_dir: str | Path = "models", chunk_samples: int | None = None, device: str | None = None,
                            left_chunks: int = 16, lm: bool = True) -> JRSVPipeline:
    """Load a pipeline folder (:func:`pipeline_from_folders`): one holding
    ``pipeline.yaml`` (``separator:`` and ``asr:`` folders relative to it; ``separator:
    null`` for none; optional ``chunk_ms``, and ``lm:`` a folder whose ``lm.npz`` the CTC
    partials fuse), or the plain layout ``model_dir/separator`` +
    ``model_dir/asr``.

    Raises:
        FileNotFoundError: a model folder is missing; ValueError: a checkpoint, LM or
        ``pipeline.yaml`` is corrupt.
    """
    root = Path(model_dir)
    spec = read_pipeline_file(root)
    if spec is not None:
        if chunk_samples is None and spec["chunk_ms"]:
            chunk_samples = int(round(spec["chunk_ms"] * SAMPLE_RATE / 1000))
        pipe = pipeline_from_folders(spec["separator"], spec["asr"], chunk_samples, device, left_chunks, lm,
                                     lm_dir=spec["lm"], speech_final_audio=spec["speech_final_audio"],
                                     voice_gate=spec["voice_gate"], voice_bias=spec["voice_bias"],
                                     voice_rescue=spec["voice_rescue"])
        pipe.endpoint = spec["endpoint"]  # the sessions' endpoint rules (None: the defaults)
        pipe.lyrics_endpoint = spec["lyrics_endpoint"]  # the lyrics track's (None: the endpoint's)
        pipe.commit_every_s = spec["commit_every_s"]  # the sessions' incremental finals (None: off)
        pipe.speech_final_mix = spec["speech_final_mix"]
        pipe.lyrics_final_mix = spec["lyrics_final_mix"]
        pipe.speech_final_consensus = spec["speech_final_consensus"]
        return pipe
    for sub in ("separator", "asr"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root / sub} not found: a pipeline folder holds separator/ and asr/ model folders")
    return pipeline_from_folders(root / "separator", root / "asr", chunk_samples, device, left_chunks, lm)


CALIBRATION_FILE = "calibration.json"


def _endpoint_fields(mapping: dict) -> dict:
    """A ``pipeline.yaml`` ``endpoint:`` (or ``lyrics_endpoint:``) mapping as EndpointConfig
    fields: frames a whole number (40, not 40.5), the rest seconds (float)."""
    out = {}
    for k, v in mapping.items():
        if str(k) == "activity_window_frames":
            f = float(v)
            if f != int(f):
                raise ValueError(f"activity_window_frames must be a whole number, got {v!r}")
            out[str(k)] = int(f)
        else:
            out[str(k)] = float(v)
    return out


def separator_track_gain(separator: str | Path) -> float:
    """Linear gain from ``calibration.json`` (``output_gain_db``) of a separator folder (or
    beside a ``separator.pt`` file, as :func:`load_separator` accepts), 1.0 when there is none.

    Raises:
        ValueError: the file is unreadable or the gain is not a finite number in [-60, 60] dB.
    """
    import json
    import math

    folder = Path(separator)
    path = (folder if folder.is_dir() else folder.parent) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    try:
        db = float(json.loads(path.read_text())["output_gain_db"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable calibration ({type(e).__name__}: {e})") from e
    if not (math.isfinite(db) and -60.0 <= db <= 60.0):
        raise ValueError(f"{path}: output_gain_db {db} outside [-60, 60] dB")
    return 10.0 ** (db / 20.0)


class PassThroughState(NamedTuple):
    """samples_seen: (B,) int64 input samples stepped so far (the state needs a batch-first
    leaf so the worker's slot pool can hold it)."""

    samples_seen: torch.Tensor


class PassThroughSeparator(nn.Module):
    """No separation: every source is the mixture and both vocals are active everywhere.

    Put in place of the separator of a :class:`JRSVPipeline`, it hands the mixture to both
    recognizer tracks with activity 1 on every frame, so the "mixture ASR" / "clean ASR on
    the mixture" baselines run through the same live path as the full system. Zero delay,
    zero lookahead.

    Args:
        hop_samples: activity frame size; chunks must be multiples of it.
    """

    ACTIVE_LOGIT = 30.0  # sigmoid(30) rounds to exactly 1.0 in float32

    def __init__(self, hop_samples: int = 640):
        super().__init__()
        self.hop_samples = self.window_samples = int(hop_samples)
        self.lookahead_samples = 0
        self.output_delay_samples = 0
        # empty, so code that reads a model's dtype / device from its parameters works here too
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    @property
    def algorithmic_latency_ms(self) -> float:
        return 0.0

    def describe(self) -> dict:
        return {"arch": "none", "hop_samples": self.hop_samples, "output_delay_samples": 0, "algorithmic_latency_ms": 0.0,
                "parameters": 0}

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> PassThroughState:
        return PassThroughState(torch.zeros(batch, dtype=torch.long, device=device))

    def step(self, chunk: torch.Tensor, state: PassThroughState):
        """chunk: (B, T), T a multiple of ``hop_samples`` -> (SeparatorOutput with sources
        (B, 3, T) = the chunk three times and activity logits (B, 2, T // hop) all
        :attr:`ACTIVE_LOGIT`, new state)."""
        from jrsv_stream.nn.separator import SeparatorOutput

        if chunk.dim() != 2 or chunk.shape[1] % self.hop_samples:
            raise ValueError(f"expected a (B, n * {self.hop_samples}) chunk, got {tuple(chunk.shape)}")
        B, T = chunk.shape
        logits = torch.full((B, 2, T // self.hop_samples), self.ACTIVE_LOGIT, device=chunk.device, dtype=chunk.dtype)
        return SeparatorOutput(chunk.unsqueeze(1).repeat(1, 3, 1), logits), PassThroughState(state.samples_seen + T)

    def forward(self, wav: torch.Tensor):
        """wav: (B, T) -> SeparatorOutput (one ``step`` from the initial state)."""
        return self.step(wav, self.init_state(wav.shape[0], wav.device, wav.dtype))[0]
