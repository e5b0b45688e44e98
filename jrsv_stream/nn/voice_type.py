"""Voice type from Whisper encoder frames: is the voice on a track talking or singing?

The causal separator decides which track a voice goes to from what it learned on the
corpus's voices; on real voices it is often wrong (real talk lands on the singing track
as well, and the lyrics track then captions the streamer's talk a second time). The
pretrained encoder's frames tell talk from singing far better: a small per-frame
classifier over them (LayerNorm-free standardization -> Linear -> GELU -> Linear),
trained here on the corpus's clean speech and singing (``jrsv_stream.train.voice_type``),
gives p(singing) per 20 ms frame. The pipeline smooths it causally and gates each track's
activity with it (:class:`jrsv_stream.nn.pipeline.JRSVPipeline`, ``voice_gate``).

File: ``voice_type.pt`` in the Whisper-CTC folder (``{"state": state_dict, "info": {...}}``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

VOICE_TYPE_FILE = "voice_type.pt"


class VoiceTypeHead(nn.Module):
    """Per-frame p(singing) over encoder frames (..., T, D) -> (..., T)."""

    def __init__(self, d_in: int, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def logits(self, enc: torch.Tensor) -> torch.Tensor:
        return self.net((enc.float() - self.mean) / self.std)[..., 0]

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(enc))


def save_voice_type(head: VoiceTypeHead, path: str | os.PathLike, info: dict | None = None) -> Path:
    p = Path(path)
    torch.save({"state": {k: v.detach().float().cpu() for k, v in head.state_dict().items()},
                "hidden": head.net[0].out_features, "info": info or {}}, p.with_suffix(".part"))
    os.replace(p.with_suffix(".part"), p)
    return p


def load_voice_type(path: str | os.PathLike, d_in: int) -> VoiceTypeHead:
    """Raises ValueError on a corrupt or mismatched file."""
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
        head = VoiceTypeHead(d_in, int(doc["hidden"]))
        head.load_state_dict(doc["state"])
    except Exception as e:
        raise ValueError(f"cannot read {path}: {type(e).__name__}: {e}") from e
    return head.eval()
