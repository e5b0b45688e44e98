"""The shipped default separator, models/separator_real (models/separator fine-tuned with real
talk and that talk sung): it loads with its calibration, its streaming path equals its
offline forward on a real recording, and it keeps real talk on the speech track where
models/separator put part of it on the singing track."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jrsv_stream.nn.separator import load_separator

REPO = Path(__file__).resolve().parents[1]
REAL, OLD = REPO / "models" / "separator_real", REPO / "models" / "separator"


@pytest.fixture(scope="module")
def prompt() -> np.ndarray:
    """A real recorded prompt (Asterisk's; a voice no training saw)."""
    from jrsv_stream.data.real_voices import real_voice_items

    (v,) = [v for v in real_voice_items(["asterisk"]) if v.id == "asterisk-000"]
    return v.load()


def _activity(model_dir: Path, audio: np.ndarray, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(streamed activity (2, frames), offline activity) of a separator over ``audio``."""
    model, _, _ = load_separator(model_dir, "cpu")
    n = len(audio) // model.hop_samples // chunk * chunk * model.hop_samples
    x = torch.from_numpy(np.asarray(audio[:n], dtype=np.float32))[None].double()
    model = model.double()
    with torch.no_grad():
        full = model(x).activity_probs[0]
        st, parts = model.init_state(1, "cpu", dtype=torch.float64), []
        for k in range(0, n, chunk * model.hop_samples):
            o, st = model.step(x[:, k:k + chunk * model.hop_samples], st)
            parts.append(o.activity_probs[0])
    return torch.cat(parts, -1), full


def test_shipped_with_calibration_and_streaming_equals_offline(prompt):
    cal = json.loads((REAL / "calibration.json").read_text())
    assert 15.0 < cal["output_gain_db"] < 40.0
    streamed, full = _activity(REAL, prompt, chunk=7)
    torch.testing.assert_close(streamed, full, atol=1e-5, rtol=0)


def test_real_talk_stays_on_the_speech_track(prompt):
    new, _ = _activity(REAL, prompt, chunk=20)
    old, _ = _activity(OLD, prompt, chunk=20)
    talk = old.max(0).values > 0.5  # frames either track calls voiced, by the old model
    assert float(old[1][talk].mean()) > 0.2  # the old separator puts part of the talk on singing
    assert float(new[1][talk].mean()) < 0.5 * float(old[1][talk].mean())
    assert float(new[0][talk].mean()) > float(old[0][talk].mean())
