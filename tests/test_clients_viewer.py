"""Terminal viewer: board state and rendering (rich recording console), reconnects, and the
real `demo` command in tmux (send-keys + capture-pane)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from clients.viewer import CaptionBoard, render, run_viewer
from jrsv_stream.serve.protocol import message
from jrsv_stream.serve.server import CaptionServer, ServerConfig
from jrsv_stream.stream.events import Activity, Error, Final, Partial, Stats, UtteranceEnd
from jrsv_stream.nn.tiny import TinyPipeline
from tests.prereq import needs

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _p(track, seg, seq, text):
    return Partial("s", track, seg, seq, text, (), 0.0, 1.0, 1.0, time.time() - 0.01, 120.0)


def _f(track, seg, seq, text):
    return Final("s", track, seg, seq, text, (), 0.0, 1.0, 1.2, time.time() - 0.01, 80.0)


def _board() -> CaptionBoard:
    b = CaptionBoard()
    for m in [json.loads(message("hello", stream_id="show", live=True, tracks=["speech", "lyrics"])),
              _p("speech", "speech-0", 1, "good eve"), _p("speech", "speech-0", 2, "good evening every"),
              _f("speech", "speech-0", 3, "good evening everyone"),
              UtteranceEnd("s", "speech", "speech-0", 4, "silence", 1.2, 1.2, time.time()),
              _p("speech", "speech-1", 4, "welcome to"),
              _p("lyrics", "lyrics-0", 5, "twinkle twinkle"),
              Activity("s", 6, 1.2, time.time(), {"speech": 0.92, "lyrics": 0.15}, {"speech": True, "lyrics": False}),
              Stats("s", 7, 1.2, time.time(), 0.042, 0, 0, 3, 4, {})]:
        b.apply(m)
    return b


def test_board_semantics():
    b = _board()
    sp, ly = b.views["speech"], b.views["lyrics"]
    assert list(sp.finals) == ["good evening everyone"] and sp.partial == "welcome to"
    assert ly.partial == "twinkle twinkle" and not ly.finals
    assert sp.active and not ly.active and sp.activity == 0.92
    assert b.status == "live" and b.stream_id == "show" and b.rtf == 0.042 and b.dropped == 3
    assert b.latency_ms == 120.0 and 0 <= b.net_ms < 1000
    b.apply(_p("speech", "speech-0", 8, "late partial of a closed segment"))
    assert sp.partial == "welcome to"  # a closed segment's partial never comes back
    b.apply(_f("speech", "speech-1", 10, "welcome to the show"))
    assert sp.partial is None and list(sp.finals)[-1] == "welcome to the show"
    assert b.seq_gaps == 1  # seq 9 never arrived (dropped for this viewer)
    b.apply(Error("s", 11, "bad_audio", "odd byte count", False, time.time()))
    b.apply(json.loads(message("stream", stream_id="show", state="ended")))
    assert b.status == "stream ended" and "bad_audio: odd byte count" in b.errors


def test_board_joins_the_pieces_of_an_utterance_until_its_end():
    """Incremental finals: pieces of one utterance (finals with no utterance_end between
    them) make one line, the partial goes on on it; the next utterance starts a new line."""
    b = CaptionBoard()
    for m in [_f("speech", "speech-0", 1, "Good evening,"), _p("speech", "speech-1", 2, "every"),
              _f("speech", "speech-1", 3, "everyone, welcome"), _p("speech", "speech-2", 4, "to the")]:
        b.apply(m)
    sp = b.views["speech"]
    assert list(sp.finals) == ["Good evening, everyone, welcome"] and sp.line_open and sp.partial == "to the"
    con = Console(record=True, width=80, file=io.StringIO())
    con.print(render(b))
    assert "Good evening, everyone, welcome to the" in con.export_text()
    b.apply(_f("speech", "speech-2", 5, "to the show."))
    b.apply(UtteranceEnd("s", "speech", "speech-2", 6, "silence", 3.0, 3.2, time.time()))
    b.apply(_f("speech", "speech-3", 7, "Next up:"))
    assert list(sp.finals) == ["Good evening, everyone, welcome to the show.", "Next up:"]


def test_render_two_panes_partial_dimmed():
    con = Console(record=True, width=80, file=io.StringIO(), color_system="truecolor", force_terminal=True)
    con.print(render(_board()))
    text = con.export_text(clear=False)
    assert "Speech" in text and "Lyrics" in text and text.index("Speech") < text.index("Lyrics")
    assert "good evening everyone" in text and "welcome to" in text and "twinkle twinkle" in text
    assert "latency 120 ms server" in text and "RTF 0.042" in text and "dropped 3" in text
    styled = con.export_text(styles=True)
    dim_at = styled.index("welcome to")
    assert "\x1b[2;3m" in styled[dim_at - 20:dim_at]  # the partial: dim italic
    final_at = styled.index("good evening everyone")
    assert "\x1b[2" not in styled[final_at - 6:final_at]  # the final: normal text
    assert "\u2588" in text  # activity meters


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_viewer_reconnects_when_the_server_comes_up_later():
    port = _free_port()

    async def main():
        con = Console(record=True, width=80, file=io.StringIO())
        viewer = asyncio.ensure_future(run_viewer(f"ws://127.0.0.1:{port}/v1/subscribe/late", console=con, duration_s=6.0,
                                                  exit_on_end=True))
        await asyncio.sleep(1.0)  # the viewer fails to connect and retries
        srv = await CaptionServer(TinyPipeline(chunk_samples=1280), ServerConfig(port=port)).start()
        await asyncio.sleep(1.5)
        from websockets.asyncio.client import connect
        from jrsv_stream.serve.protocol import encode_pcm

        async with connect(f"ws://127.0.0.1:{port}/v1/publish/late", proxy=None) as pub:
            await pub.send('{"type": "start"}')
            await pub.recv()
            x = (0.2 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
            for a in range(0, len(x), 640):
                await pub.send(encode_pcm(x[a:a + 640]))
            await pub.send('{"type": "end"}')
            await pub.wait_closed()
        board = await viewer
        await srv.stop()
        return board, con.export_text()

    board, text = asyncio.run(main())
    assert board.status == "stream ended"
    assert any(v.finals for v in board.views.values())
    assert "Speech" in text


@needs("tmux")
def test_demo_in_tmux_shows_both_panes(tmp_path):
    audio = tmp_path / "demo.wav"
    from jrsv_stream.audio.io import save_audio

    rng = np.random.default_rng(0)
    save_audio(audio, np.concatenate([0.2 * rng.standard_normal(32000), np.zeros(16000), 0.2 * rng.standard_normal(24000)]))
    session = f"jrsv-viewer-test-{int(time.time() * 1000) % 100000}"
    cmd = f"{sys.executable} -m jrsv_stream.serve.cli demo --audio {audio} --duration 5 --threads 1 --pipeline tiny; sleep 20"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", "-c", str(REPO), cmd], check=True)
    try:
        screen, deadline = "", time.monotonic() + 40
        # the demo prints a "demo: ..." notice before the viewer draws, so wait for the summary
        # line that comes after the Lyrics pane, not for any "demo:"
        while time.monotonic() < deadline and not ("Lyrics" in screen and "demo:" in screen.split("Lyrics")[-1]):
            time.sleep(0.5)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        # the live viewer was drawn: two panes, a footer; then the demo's summary line
        assert "Speech" in screen and "Lyrics" in screen
        assert "stream demo" in screen and "latency" in screen
        assert "finals speech" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c", ""], check=False)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
