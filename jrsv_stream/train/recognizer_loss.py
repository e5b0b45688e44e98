"""Recognition losses through the pretrained Whisper-CTC recognizer, for the separator's
training (issue 16: joint fine-tuning, the frozen-separator variant, online distillation).

``L = L_separator + weight * (ctc * L_ctc + kd * L_kd + feat * L_feat)`` where, for each
vocal track (speech -> track 0, singing -> track 1) of each crop:

- ``L_ctc`` (joint fine-tuning): CTC of the recognizer's head over the separated track
  against the crop's words (per frame; a word cut by the crop's edge is outside the scored
  frame span, see :func:`ctc_span`); an absent source gets the empty target ("say
  nothing": the leak of the other voice is penalised) unless ``absent_ctc`` is off.
- ``L_kd`` (online distillation, the JRSV seed's teacher on clean stems): KL(teacher ||
  student) of the temperature-``T`` softened CTC posteriors per frame, times ``T^2``; the
  teacher is the same frozen recognizer hearing the CLEAN stem over the same samples.
- ``L_feat``: L1 distance of the Whisper encoder features (student on the separated
  track, teacher on the clean stem), over the teacher's mean |feature|: what Whisper's own
  decoder reads for the finals.
  ``L_kd`` and ``L_feat`` skip absent sources (the teacher would hear silence).

Features. ``features: whole`` encodes each aligned crop as one Whisper input (all its
frames; the gradient flows through the frozen encoder into the separator: ~1 s per 8
crops of 2.56 s forward + backward on one core). ``features: live`` computes exactly the
live steps' frames (a 2.56 s window per 320 ms chunk, ``all_windows`` /
``_chunk_frames``) without gradient into the separator: 8x the encoder work, used by the
frozen-separator variant, whose only learner is the CTC head (``train_head``).

The Whisper encoder stays frozen in every variant (as the recognizer of issue 15 chose):
finals decode with the unchanged pretrained Whisper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.decode.hybrid import normalize_text
from jrsv_stream.nn.whisper_ctc import FRAME_SAMPLES, N_FFT, HOP, WhisperCTC

TRACK_OF_SOURCE = {0: 0, 1: 1}  # separator source index (speech, singing) -> recognizer track id


@dataclass(frozen=True)
class RecognizerLossConfig:
    enabled: bool = False
    asr: str = "models/whisper_ctc"  # a Whisper-CTC model folder (its head and tokenizer)
    weight: float = 1.0  # a in L = L_sep_total + a * L_rec
    ctc: float = 0.0  # joint fine-tuning term (crop texts)
    kd: float = 0.0  # KL(teacher on clean stems || student) of CTC posteriors
    feat: float = 0.0  # L1 of encoder features against the teacher's
    temperature: float = 1.0
    absent_ctc: bool = True  # CTC toward the empty text on tracks whose source is absent
    features: str = "whole"  # "whole" (gradient into the separator) or "live" (the live frames, no gradient)
    train_head: bool = False  # the CTC head learns too (its own lr); exported beside the separator
    head_lr: float = 1e-4
    freeze_separator: bool = False  # the frozen-separator variant: only the head learns
    presence_db: float = -30.0  # a source quieter than this relative to the mixture is absent
    edge_margin_s: float = 0.04  # frames this close to a cut word are outside the CTC span
    # the level the recognizer hears the separated tracks at, as in the live pipeline (which
    # applies the separator folder's calibration.json: SI-SDR leaves the output level free,
    # ~26 dB below the stems): None takes run.init_from's calibration (0 dB without one)
    gain_db: float | None = None


class RecognizerLossTerms(dict):
    """total (scalar tensor) and floats: ctc, kd, feat (NaN when not computed), rows."""


def ctc_span(words, dur_s: float, margin_s: float = 0.04) -> tuple[float, float, str]:
    """The span of a crop of ``dur_s`` seconds that CTC scores, and its text: from the end
    of a word cut by the crop's start to the start of a word cut by its end (``margin_s``
    further in); the words wholly inside it. words: (text, start, end) in crop time."""
    a, b, inside = 0.0, dur_s, []
    for w, s, e in words:
        if s < 0.0 < e or (s < 0.0 and e <= 0.0):
            a = max(a, e + margin_s)
        elif s < dur_s < e or s >= dur_s:
            b = min(b, s - margin_s)
    for w, s, e in words:
        if s >= a - margin_s and e <= b + margin_s and s >= 0.0 and e <= dur_s:
            inside.append(w)
    return a, b, normalize_text(" ".join(inside))


class RecognizerLoss(nn.Module):
    """The recognizer (frozen encoder, head frozen unless ``train_head``) and the loss of
    :class:`RecognizerLossConfig`; ``forward(sources, stems, mixture, meta, delay)``."""

    def __init__(self, cfg: RecognizerLossConfig, whisper=None, gain_db: float = 0.0):
        """``gain_db``: the separated tracks' gain before the recognizer (used when
        ``cfg.gain_db`` is None)."""
        super().__init__()
        if cfg.features not in ("whole", "live"):
            raise ValueError(f"recognizer.features must be 'whole' or 'live', got {cfg.features!r}")
        if cfg.features == "live" and not cfg.freeze_separator:
            raise ValueError("recognizer.features 'live' computes no gradient into the separator: "
                             "use it with freeze_separator (the frozen-separator variant)")
        if cfg.freeze_separator and not cfg.train_head:
            raise ValueError("recognizer.freeze_separator without train_head leaves nothing to learn")
        if cfg.train_head and cfg.kd == 0 and cfg.ctc == 0:
            raise ValueError("recognizer.train_head needs a ctc or kd term (features alone do not reach the head)")
        self.cfg = cfg
        self.gain = 10.0 ** ((gain_db if cfg.gain_db is None else cfg.gain_db) / 20.0)
        self.model = WhisperCTC.from_pretrained(cfg.asr, whisper=whisper)
        self.model.heads.requires_grad_(cfg.train_head)
        self.tok = None
        if cfg.ctc > 0:
            from jrsv_stream.decode.tokenizer import Tokenizer

            self.tok = Tokenizer(Path(cfg.asr) / "tokenizer.model")

    # --------------------------------------------------------------- features
    def _whole(self, wav: torch.Tensor) -> torch.Tensor:
        """(N, T) -> encoder frames (N, (T - 240) // 320, D) of each row as one input."""
        m = self.model
        n = (wav.shape[1] - (N_FFT - HOP)) // FRAME_SAMPLES
        n = min(n, m.whisper.encoder.positional_embedding.shape[0])
        x = wav[:, :n * FRAME_SAMPLES + N_FFT - HOP]
        mel = m.window_mel(x)
        with m._autocast(x.device, m.cfg.compute_dtype):
            enc = m.whisper.encoder(mel)
        return enc.float()

    @torch.no_grad()
    def _live(self, wav: torch.Tensor, chunk_samples: int = 5120) -> torch.Tensor:
        """(N, T) -> the frames the live steps emit, (N, T // 320, D) (T a multiple of
        the chunk after trimming)."""
        n_chunks = wav.shape[1] // chunk_samples
        out = []
        for row in wav[:, :n_chunks * chunk_samples]:
            out.append(self.model.encode_stream(row, chunk_samples))
        return torch.stack(out)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        return self._whole(wav) if self.cfg.features == "whole" else self._live(wav)

    # --------------------------------------------------------------- loss
    def forward(self, sources: torch.Tensor, stems: torch.Tensor, mixture: torch.Tensor, meta: dict,
                delay_samples: int) -> RecognizerLossTerms:
        """sources (B, 3, T) separator output (delayed by ``delay_samples``), stems (B, 3, T),
        mixture (B, T), meta with ``speech_words`` / ``singing_words`` (crop time)."""
        c = self.cfg
        T = sources.shape[-1]
        est = sources[:, :2, delay_samples:]
        ref = stems[:, :2, :T - delay_samples]
        mix_e = mixture[:, :T - delay_samples].pow(2).sum(-1, keepdim=True) + 1e-8
        present = ref.pow(2).sum(-1) > mix_e * 10.0 ** (c.presence_db / 10.0)  # (B, 2)
        B = est.shape[0]
        rows = [(b, s) for b in range(B) for s in range(2)
                if present[b, s] or (c.ctc > 0 and c.absent_ctc)]
        nan = float("nan")
        if not rows:
            return RecognizerLossTerms(total=sources.sum() * 0.0, ctc=nan, kd=nan, feat=nan, rows=0)
        student_wav = torch.stack([est[b, s] for b, s in rows]) * self.gain
        if c.freeze_separator:
            student_wav = student_wav.detach()
        tracks = torch.tensor([TRACK_OF_SOURCE[s] for _, s in rows], device=est.device)
        enc = self.features(student_wav)
        lp_t = self.model.heads(enc, tracks)[0].float()  # logits (N, F, V)
        total = enc.new_zeros(())
        out = {"ctc": nan, "kd": nan, "feat": nan}
        pres = torch.tensor([bool(present[b, s]) for b, s in rows], device=est.device)
        if (c.kd > 0 or c.feat > 0) and pres.any():
            with torch.no_grad():
                t_enc = self.features(torch.stack([ref[b, s] for (b, s), p in zip(rows, pres.tolist()) if p]))
                t_logits = self.model.heads(t_enc, tracks[pres])[0].float()
            s_enc, s_logits = enc[pres], lp_t[pres]
            if c.kd > 0:
                tau = c.temperature
                t_lp = torch.log_softmax(t_logits / tau, -1)
                kd = (t_lp.exp() * (t_lp - torch.log_softmax(s_logits / tau, -1))).sum(-1).mean() * tau * tau
                total = total + c.kd * kd
                out["kd"] = float(kd.detach())
            if c.feat > 0:
                feat = (s_enc - t_enc).abs().mean() / (t_enc.abs().mean() + 1e-6)
                total = total + c.feat * feat
                out["feat"] = float(feat.detach())
        if c.ctc > 0:
            ctc = self._ctc(lp_t, rows, pres, meta, student_wav.shape[1])
            if ctc is not None:
                total = total + c.ctc * ctc
                out["ctc"] = float(ctc.detach())
        return RecognizerLossTerms(total=c.weight * total, rows=len(rows), **out)

    def _ctc(self, logits: torch.Tensor, rows, pres, meta: dict, n_samples: int) -> torch.Tensor | None:
        """Per-frame CTC over each row's scored span (:func:`ctc_span`)."""
        fps = SAMPLE_RATE / FRAME_SAMPLES
        n_frames = logits.shape[1]
        lps, targets, in_lens, tgt_lens = [], [], [], []
        for k, ((b, s), p) in enumerate(zip(rows, pres.tolist())):
            words = meta["speech_words" if s == 0 else "singing_words"][b] if p else []
            a, e, text = ctc_span(words, n_samples / SAMPLE_RATE, self.cfg.edge_margin_s)
            f0, f1 = max(0, int(a * fps + 0.999)), min(n_frames, int(e * fps))
            ids = self.tok.encode(text) if text else []
            if f1 - f0 < max(4, 2 * len(ids) + 1):  # too short a span for its text (or none)
                continue
            lps.append(torch.log_softmax(logits[k, f0:f1], -1))
            targets += ids
            in_lens.append(f1 - f0)
            tgt_lens.append(len(ids))
        if not lps:
            return None
        x = nn.utils.rnn.pad_sequence(lps, batch_first=False)  # (F, N, V)
        loss = F.ctc_loss(x, torch.tensor(targets, dtype=torch.long), torch.tensor(in_lens), torch.tensor(tgt_lens),
                          blank=self.model.blank_id, reduction="sum", zero_infinity=True)
        return loss / sum(in_lens)

    def head_parameters(self):
        return list(self.model.heads.parameters()) if self.cfg.train_head else []
