"""Tiny random models in the shipped layout (``separator/``, ``asr/``), shared by tests that
need a loadable pipeline folder: seconds to build, no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jrsv_stream.decode.tokenizer import train_tokenizer
from jrsv_stream.nn.asr import ASRModel, ASRModelConfig
from jrsv_stream.nn.attention_decoder import DecoderConfig
from jrsv_stream.nn.encoder import ConformerConfig
from jrsv_stream.nn.separator import SeparatorConfig, StftMaskConfig, build_separator, save_separator

TEXTS = ["the quick brown fox jumps over the lazy dog", "we sail across the silver sea tonight",
         "a rolling stone gathers no moss", "never underestimate the bandwidth of a station wagon"] * 20


def save_tiny_pipeline(root: Path, texts: list[str] = TEXTS, seed: int = 0, encoder: str = "conformer") -> Path:
    """Write a random 32 ms STFT-mask separator to ``root/separator`` and a 2-layer d32
    recognizer (``encoder``: conformer or lstm; 40-piece tokenizer trained on ``texts``,
    fixed feature normalization) to ``root/asr``."""
    root = Path(root)
    torch.manual_seed(seed)
    sep_cfg = SeparatorConfig("stft_mask", stft_mask=StftMaskConfig(window_ms=32.0, hop_ms=16.0, conv_channels=8, conv_layers=1,
                                                                     gru_hidden=8, gru_layers=1, residual_hidden=4))
    save_separator(build_separator(sep_cfg), sep_cfg, root / "separator" / "separator.pt")
    tok = train_tokenizer(texts, str(root / "tok"), vocab_size=40)
    cfg = ASRModelConfig(vocab_size=tok.vocab_size,
                         encoder=ConformerConfig(type=encoder, d_model=32, n_heads=4, ff_dim=64, n_layers=2, conv_kernel=5,
                                                 subsampling_channels=8, dropout=0.0, lstm_layers=2, lstm_hidden=24),
                         decoder=DecoderConfig(d_model=32, n_heads=4, ff_dim=64, n_layers=1, dropout=0.0))
    asr = ASRModel(cfg).eval()
    asr.features.set_normalization(torch.full((80,), -5.0), torch.full((80,), 3.0))
    asr.save_pretrained(root / "asr", root / "tok.model")
    return root


def tone(f_hz: float, n: int, amp: float, sr: int = 16000) -> np.ndarray:
    """``n`` samples of a sine at ``f_hz`` (float32), for hand-made stems."""
    return (amp * np.sin(2 * np.pi * f_hz * np.arange(n) / sr)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Importing this into a test module runs its tests with one torch thread (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
