"""Broadcaster and live subtitle writer against a real server on loopback; overlay page."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.broadcast import broadcast
from clients.subtitle_writer import SubtitleSink, write_live
from jrsv_stream.audio.io import save_audio
from jrsv_stream.audio.sources import ArraySource
from jrsv_stream.serve.protocol import stream_url
from jrsv_stream.serve.server import CaptionServer, ServerConfig, ServerThread
from jrsv_stream.nn.tiny import TinyPipeline
from tests.prereq import require_tools

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _audio() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([0.2 * rng.standard_normal(24000), np.zeros(16000), 0.2 * rng.standard_normal(16000)]).astype(np.float32)


def test_broadcast_and_live_subtitles(tmp_path):
    async def main():
        srv = await CaptionServer(TinyPipeline(chunk_samples=1280), ServerConfig(port=0)).start()
        sink = SubtitleSink(tmp_path / "subs")
        writer = asyncio.ensure_future(write_live(stream_url(srv.url, "subscribe", "s"), sink, duration_s=30))
        await asyncio.sleep(0.2)
        res = await broadcast(stream_url(srv.url, "publish", "s"), ArraySource(_audio(), realtime=False), dtype="f32le")
        n = await writer
        sink.close()
        await srv.stop()
        return res, n

    res, n = asyncio.run(main())
    assert res.ready["type"] == "ready" and res.ended["audio_s"] == pytest.approx(3.5) and not res.errors
    assert res.audio_s == pytest.approx(3.5) and res.frames == 175
    assert n >= 2
    files = sorted(p.name for p in (tmp_path / "subs").iterdir())
    assert files == ["lyrics.lrc", "lyrics.srt", "lyrics.vtt", "speech.srt", "speech.vtt"]
    srt = (tmp_path / "subs" / "speech.srt").read_text()
    blocks = [b for b in srt.split("\n\n") if b]
    assert blocks and all(re.fullmatch(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.+", b) for b in blocks)
    vtt = (tmp_path / "subs" / "lyrics.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n") and "-->" in vtt
    assert re.fullmatch(r"(\[\d\d:\d\d\.\d\d\].+\n)+", (tmp_path / "subs" / "lyrics.lrc").read_text())


def test_broadcast_cli_with_ffmpeg_source_and_tokens(tmp_path):
    require_tools("ffmpeg")
    save_audio(tmp_path / "a.wav", _audio())
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "a.wav"), "-c:a", "libvorbis",
                    str(tmp_path / "a.ogg")], check=True)
    cli = [sys.executable, "-m", "clients.broadcast"]
    with ServerThread(TinyPipeline(chunk_samples=1280), ServerConfig(port=0, publish_token="t0k")) as st:
        ok = subprocess.run(cli + [st.url, "--stream", "x", "--token", "t0k", "--ffmpeg", str(tmp_path / "a.ogg")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
        refused = subprocess.run(cli + [st.url, "--stream", "x", "--file", str(tmp_path / "a.wav"), "--fast"],
                                 cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "sent 3.5 s of audio" in ok.stderr and "'type': 'ended'" in ok.stderr
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr


def test_overlay_page_speaks_the_protocol():
    html = (REPO / "clients" / "overlay.html").read_text()

    class P(HTMLParser):
        ids, scripts = set(), []

        def handle_starttag(self, tag, attrs):
            d = dict(attrs)
            if "id" in d:
                self.ids.add(d["id"])

        def handle_data(self, data):
            if "WebSocket" in data:
                self.scripts.append(data)

    p = P()
    p.feed(html)
    assert {"captions", "status"} <= p.ids  # the track boxes are made by the script (tests/test_overlay_browser.py)
    js = p.scripts[0]
    for needle in ("/v1/subscribe/", "SCHEMA_VERSION = 1", '"partial"', '"final"', "segment_id", "token", '"lyrics,speech"'):
        assert needle in js
