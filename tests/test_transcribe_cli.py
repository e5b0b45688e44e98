"""`jrsv-stream transcribe` writes the DESIGN.md JSON and subtitle files (tiny pipeline)."""

import json
import subprocess
import sys

import numpy as np
import soundfile as sf


def test_transcribe_writes_json_and_subtitles(tmp_path):
    x = (np.random.default_rng(0).normal(size=(44100 * 4, 2)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 44100)  # stereo 44.1 kHz: resampled and downmixed
    r = subprocess.run([sys.executable, "-m", "jrsv_stream.cli", "transcribe", str(tmp_path / "in.wav"), "--pipeline", "tiny",
                        "--json", str(tmp_path / "o.json"), "--srt", str(tmp_path / "o.srt"), "--vtt", str(tmp_path / "o.vtt"),
                        "--lrc", str(tmp_path / "o.lrc")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "o.json").read_text())
    assert set(out) == {"speech", "lyrics"}
    for seg in out["speech"] + out["lyrics"]:
        assert set(seg) >= {"text", "start", "end"} and 0 <= seg["start"] <= seg["end"] <= 4.5
    for name in ("o.speech.srt", "o.lyrics.srt", "o.speech.vtt", "o.lyrics.vtt", "o.lrc"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "o.speech.vtt").read_text().startswith("WEBVTT")
    n_speech_cues = (tmp_path / "o.speech.srt").read_text().count(" --> ")
    assert n_speech_cues >= len(out["speech"])  # a long final may be split into several cues


def test_transcribe_missing_file_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jrsv_stream.cli", "transcribe", str(tmp_path / "nope.wav"), "--pipeline", "tiny"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr
