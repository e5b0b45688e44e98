"""The streaming CTC/attention recognizer: log-mel -> chunked conformer (+ track embedding)
-> CTC head (streaming partials) and attention decoder (rescoring finals).

One shared model serves both caption tracks: a learned track embedding (0 = speech,
1 = singing, :data:`TRACKS`) is added to the encoder input. A model trained on one track
only (``tracks: separate`` in the training config) has ``encoder.n_tracks = 0``.

Units: audio at 16 kHz; features every 10 ms; encoder frames every 40 ms
(:attr:`ASRModel.frame_samples` = 640). A streaming chunk of ``c`` encoder frames is
``c * 640`` samples (160/320/640 ms = 4/8/16 frames), chosen at run time.

Token ids follow :mod:`jrsv_stream.decode.tokenizer`: 0 = CTC blank, 2 = <sos/eos> of the
attention decoder (``ASRModelConfig.sos_eos_id``); both heads output ``vocab_size`` ids.

Model folder (``save_pretrained`` / ``from_pretrained``): ``config.yaml`` (the
:class:`ASRModelConfig`), ``asr.pt`` (state dict, including the global feature
normalization) and ``tokenizer.model`` (sentencepiece, blank = id 0).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import yaml
from torch import nn

from jrsv_stream.config import ConfigError, config_from_dict
from jrsv_stream.nn.attention_decoder import AttentionDecoder, DecoderConfig
from jrsv_stream.nn.encoder import SUBSAMPLING, ConformerConfig, EncoderState, LSTMEncoderState, build_encoder
from jrsv_stream.nn.features import FeatureConfig, FeatureState, LogMel

TRACKS = {"speech": 0, "singing": 1}
BLANK_ID = 0


# One strict loader for every config (jrsv_stream.config); the old name stays for callers.
dataclass_from_dict = config_from_dict


def dataclass_to_dict(obj) -> dict:
    """Plain dict (tuples as lists) for YAML."""
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(dataclasses.asdict(obj))


@dataclass(frozen=True)
class ASRModelConfig:
    vocab_size: int = 256  # tokenizer size incl. blank 0 (CTC and decoder output size)
    sos_eos_id: int = 2  # the tokenizer's <sos/eos> id (jrsv_stream.decode.tokenizer layout)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    encoder: ConformerConfig = field(default_factory=ConformerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1


class ASRState(NamedTuple):
    """Streaming state of :class:`ASRModel` for B streams.

    feat: :class:`FeatureState` (samples not framed yet).
    enc: :class:`EncoderState` (conformer: subsampling, attention and convolution caches) or
        :class:`LSTMEncoderState` (LSTM: subsampling cache, hidden and cell states).
    tracks: (B,) long track id of each stream.
    """

    feat: FeatureState
    enc: EncoderState | LSTMEncoderState
    tracks: torch.Tensor


class ASRModel(nn.Module):
    """CTC/attention hybrid with a streaming encoder.

    Declared sizes: ``frame_samples`` = 640 (40 ms), chunk = ``chunk_frames * 640`` samples,
    ``lookahead_samples`` = 0 beyond the chunk.
    """

    lookahead_samples = 0

    def __init__(self, cfg: ASRModelConfig = ASRModelConfig()):
        super().__init__()
        if cfg.encoder.input_dim != cfg.features.n_mels:
            raise ConfigError(f"encoder.input_dim {cfg.encoder.input_dim} != features.n_mels {cfg.features.n_mels}")
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        self.blank_id = BLANK_ID
        self.features = LogMel(cfg.features)
        self.encoder = build_encoder(cfg.encoder)
        self.ctc = nn.Linear(cfg.encoder.d_model, cfg.vocab_size)
        self.decoder = AttentionDecoder(cfg.vocab_size, cfg.encoder.d_model, cfg.decoder, cfg.sos_eos_id)
        self.sos_id = self.eos_id = self.decoder.eos_id

    @property
    def frame_samples(self) -> int:
        return self.features.hop * SUBSAMPLING

    def chunk_samples(self, chunk_frames: int) -> int:
        return chunk_frames * self.frame_samples

    # --- offline ---------------------------------------------------------------------------
    def encode(self, wav: torch.Tensor, wav_lens: torch.Tensor, tracks: torch.Tensor | None = None,
               chunk_frames: int | None = None, left_chunks: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveform (B, N) -> enc_out (B, N // 640, d_model), enc_lens (B,)."""
        feats, feat_lens = self.features(wav, wav_lens)
        return self.encoder(feats, feat_lens, chunk_frames, left_chunks, tracks)

    def ctc_logp(self, enc_out: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) -> (B, T, vocab_size) CTC log-probabilities (float32)."""
        return torch.log_softmax(self.ctc(enc_out).float(), dim=-1)

    def loss(self, feats: torch.Tensor, feat_lens: torch.Tensor, ys: list[list[int]], tracks: torch.Tensor | None = None,
             chunk_frames: int | None = None, left_chunks: int = -1) -> dict[str, torch.Tensor]:
        """Hybrid loss ``ctc_weight * CTC + (1 - ctc_weight) * attention CE`` (per utterance).

        Args:
            feats: (B, T, n_mels) normalized (and possibly augmented) features.
            feat_lens: (B,) frames.
            ys: B token-id lists (ids >= 1).
            tracks: (B,) long.
            chunk_frames, left_chunks: the dynamic chunk mask for this batch.

        Returns:
            {"loss", "ctc", "att", "acc"} scalar tensors.
        """
        enc_out, enc_lens = self.encoder(feats, feat_lens, chunk_frames, left_chunks, tracks)
        logp = self.ctc_logp(enc_out)
        targets = torch.tensor([t for y in ys for t in y], dtype=torch.long)
        y_lens = torch.tensor([len(y) for y in ys], dtype=torch.long)
        ctc = nn.functional.ctc_loss(logp.transpose(0, 1), targets.to(logp.device), enc_lens, y_lens.to(logp.device),
                                     blank=self.blank_id, reduction="sum", zero_infinity=True) / len(ys)
        w = self.cfg.ctc_weight
        if w < 1.0:
            att, acc = self.decoder.loss(enc_out, enc_lens, ys, self.cfg.label_smoothing)
        else:
            att, acc = torch.zeros_like(ctc), torch.zeros_like(ctc)
        return {"loss": w * ctc + (1 - w) * att, "ctc": ctc, "att": att, "acc": acc}

    # --- streaming -------------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | str = "cpu", tracks: torch.Tensor | list[int] | None = None,
                   dtype: torch.dtype = torch.float32, cache_frames: int = 0) -> ASRState:
        """Fresh state for ``batch`` streams; ``tracks`` (B,) ids (default all speech)."""
        t = torch.zeros(batch, dtype=torch.long) if tracks is None else torch.as_tensor(tracks, dtype=torch.long)
        if t.shape != (batch,):
            raise ValueError(f"tracks must have shape ({batch},), got {tuple(t.shape)}")
        return ASRState(self.features.init_state(batch, device, dtype),
                        self.encoder.init_state(batch, device, dtype, cache_frames), t.to(device))

    def step(self, wav_chunk: torch.Tensor, state: ASRState, left_chunks: int = -1) -> tuple[torch.Tensor, torch.Tensor, ASRState]:
        """One chunk of audio for B streams.

        Args:
            wav_chunk: (B, chunk_frames * 640) samples (the last chunk may be shorter).
            state: from :meth:`init_state` or the previous step (not modified).
            left_chunks: attention left context in chunks (< 0 = unlimited; bound it for
                long live streams, e.g. 8 chunks).

        Returns:
            ctc_logp (B, c, vocab_size) float32, enc_out (B, c, d_model), new state.
        """
        feats, fst = self.features.step(wav_chunk, state.feat)
        enc_out, est = self.encoder.step(feats, state.enc, left_chunks, state.tracks)
        return self.ctc_logp(enc_out), enc_out, ASRState(fst, est, state.tracks)

    @torch.no_grad()
    def score(self, enc_out: torch.Tensor, enc_lens: torch.Tensor, hyps: list[list[int]]) -> np.ndarray:
        """Attention-decoder log p(hyp + <eos>) per hypothesis; see :meth:`AttentionDecoder.score`."""
        return self.decoder.score(enc_out, enc_lens, hyps)

    # --- files -----------------------------------------------------------------------------
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, out_dir: str | os.PathLike, tokenizer_model: str | os.PathLike | None = None,
                        extra: dict | None = None) -> Path:
        """Write ``config.yaml``, ``asr.pt`` (float32 state dict) and ``tokenizer.model``
        atomically per file."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"model": dataclass_to_dict(self.cfg), "sos_eos_id": self.eos_id, "blank_id": self.blank_id,
               "tracks": dict(TRACKS), "frame_ms": self.frame_samples * 1000 // self.cfg.features.sample_rate}
        if extra:
            doc["info"] = extra
        tmp = out / "config.yaml.part"
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, out / "config.yaml")
        sd = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in self.state_dict().items()}
        torch.save(sd, out / "asr.pt.part")
        os.replace(out / "asr.pt.part", out / "asr.pt")
        if tokenizer_model is not None and Path(tokenizer_model).resolve() != (out / "tokenizer.model").resolve():
            shutil.copyfile(tokenizer_model, out / "tokenizer.model.part")
            os.replace(out / "tokenizer.model.part", out / "tokenizer.model")
        return out

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, device: torch.device | str = "cpu") -> "ASRModel":
        """Load a model folder (eval mode). The tokenizer is ``model_dir / "tokenizer.model"``."""
        d = Path(model_dir)
        if not (d / "config.yaml").is_file() or not (d / "asr.pt").is_file():
            raise FileNotFoundError(f"{d} is not an ASR model folder (needs config.yaml and asr.pt)")
        doc = yaml.safe_load((d / "config.yaml").read_text())
        model = cls(dataclass_from_dict(ASRModelConfig, doc["model"], "model"))
        try:
            sd = torch.load(d / "asr.pt", map_location="cpu", weights_only=True)
        except Exception as e:
            raise RuntimeError(f"cannot read {d / 'asr.pt'}: {e}") from e
        model.load_state_dict(sd)
        return model.to(device).eval()
