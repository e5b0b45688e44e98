"""The overlay page in a real headless Chromium (Debian ``chromium``, driven over its DevTools
protocol with ``websockets``): the caption server serves the page at /overlay, the page
subscribes on loopback, the server sends finals; the DOM text equals what was sent and a
screenshot shows pixels of the caption colour inside the caption box, inside the frame."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from websockets.asyncio.client import connect

from jrsv_stream.export.readability import READABILITY
from jrsv_stream.serve.server import CaptionServer, ServerConfig
from jrsv_stream.stream.events import Final
from jrsv_stream.nn.tiny import TinyPipeline

torch.set_num_threads(1)
W, H = 1280, 720


class Cdp:
    """Minimal DevTools protocol client: ``await call(method, **params)`` -> result."""

    def __init__(self, ws):
        self.ws, self.ids = ws, itertools.count(1)

    async def call(self, method: str, **params):
        i = next(self.ids)
        await self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
            if m.get("id") == i:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    async def js(self, expr: str):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")

    async def wait_for(self, expr: str, timeout_s: float = 15.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.05)
        status = await self.js("document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expr}: page status {status!r}")


def _chromium(profile: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (Debian package 'chromium', listed in .ci/setup.sh APT_PACKAGES)")
    p = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                          "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                          f"--window-size={W},{H}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    for _ in range(300):
        if port_file.is_file() and port_file.read_text().strip():
            return p, int(port_file.read_text().split()[0])
        if p.poll() is not None:
            pytest.fail(f"chromium exited with {p.returncode} before opening its DevTools port")
        time.sleep(0.1)
    p.kill()
    pytest.fail("chromium did not open its DevTools port within 30 s")


def _final(seg: int, text: str, track: str = "speech") -> Final:
    words = tuple((w, 1.0 + i, 1.5 + i) for i, w in enumerate(text.split()))
    return Final("ov", track, f"{track}-{seg}", seg + 1, text, words, words[0][1], words[-1][2], words[-1][2] + 0.3,
                 time.time(), 50.0, True)


def _colour_box(png: bytes, rgb: tuple[int, int, int], tol: int = 60):
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    px = im.load()
    xs, ys = [], []
    for y in range(0, im.height, 2):
        for x in range(0, im.width, 2):
            p = px[x, y]
            if all(abs(p[k] - rgb[k]) <= tol for k in range(3)):
                xs.append(x)
                ys.append(y)
    return im.size, len(xs), (min(xs), min(ys), max(xs), max(ys)) if xs else None


def test_overlay_in_headless_chromium(tmp_path):
    async def main():
        srv = await CaptionServer(TinyPipeline(chunk_samples=1280), ServerConfig(port=0)).start()
        proc, port = await asyncio.to_thread(_chromium, tmp_path / "profile")
        try:
            targets = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read()))
            page = next(t for t in targets if t["type"] == "page")
            async with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
                cdp = Cdp(ws)
                await cdp.call("Page.enable")
                await cdp.call("Emulation.setDeviceMetricsOverride", width=W, height=H, deviceScaleFactor=1, mobile=False)
                await cdp.call("Page.navigate", url=f"http://127.0.0.1:{srv.port}/overlay?stream=ov&color=%2300ff00"
                                                    "&lyrics_color=%23ff00ff&bg=rgba(0,0,0,0)&font_size=40&dim_below=0.5&fade_ms=0")
                await cdp.wait_for("document.getElementById('status').textContent === 'waiting for a publisher'")
                hub = srv._hubs["ov"]

                # a final the server sends reaches the page; the DOM holds exactly its text
                sent = _final(0, "good evening everyone")
                srv._dispatch(hub, [sent])
                await cdp.wait_for("document.getElementById('speech').innerText.trim().length > 0")
                speech = await cdp.js("document.getElementById('speech').innerText")
                lyrics_idle = await cdp.js("document.getElementById('lyrics').classList.contains('idle')")
                rect = await cdp.js("(() => { const r = document.getElementById('speech').getBoundingClientRect();"
                                    " return [r.left, r.top, r.right, r.bottom]; })()")
                shot = (await cdp.call("Page.captureScreenshot", format="png"))["data"]

                # a long final: at most two lines of at most the shared line length
                long = _final(1, "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                                 "fifteen sixteen seventeen eighteen nineteen twenty")
                srv._dispatch(hub, [long])
                await cdp.wait_for("document.getElementById('speech').innerText.includes('twenty')")
                long_lines = (await cdp.js("document.getElementById('speech').innerText")).strip().split("\n")

                # 4-element words (with confidence): the low one is dimmed; lyrics shown on their own track
                lyr = {"v": 1, "type": "final", "stream_id": "ov", "track": "lyrics", "segment_id": "lyrics-0", "seq": 9,
                       "text": "la la land", "words": [["la", 1, 1.2, 0.9], ["la", 1.3, 1.5, 0.2], ["land", 1.6, 2.0]],
                       "start_s": 1, "end_s": 2, "audio_time_s": 2.2, "emitted_at": time.time(), "rescored": True}
                srv._dispatch(hub, [json.dumps(lyr)])
                await cdp.wait_for("document.getElementById('lyrics').innerText.includes('land')")
                dimmed = await cdp.js("[...document.querySelectorAll('#lyrics .line > span')].map(s => s.classList.contains('low'))")
                lyrics_text = await cdp.js("document.getElementById('lyrics').innerText")

                # a final goes after its reading time (17 cps, at least 0.5 s): "la la land" -> 0.59 s
                await cdp.wait_for("document.getElementById('lyrics').classList.contains('idle')", timeout_s=5)

                # incremental finals: the pieces of one utterance stay together for the reading
                # time of all of them ("oh" alone would go after 0.5 s; with its 44-character
                # continuation both stay ~2.6 s)
                def piece(seg, text, seq):
                    return json.dumps({"v": 1, "type": "final", "stream_id": "ov", "track": "lyrics",
                                       "segment_id": f"lyrics-{seg}", "seq": seq, "text": text, "words": [],
                                       "start_s": 3, "end_s": 4, "audio_time_s": 4.2, "emitted_at": time.time()})
                srv._dispatch(hub, [piece(1, "oh", 10), piece(2, "whoa whoa whoa whoa whoa whoa whoa whoa whoa", 11)])
                await cdp.wait_for("document.getElementById('lyrics').innerText.includes('whoa')")
                await asyncio.sleep(1.0)
                pieces_text = await cdp.js("document.getElementById('lyrics').innerText")
                srv._dispatch(hub, [json.dumps({"v": 1, "type": "utterance_end", "stream_id": "ov", "track": "lyrics",
                                                "segment_id": "lyrics-2", "seq": 12, "reason": "silence", "end_s": 4,
                                                "audio_time_s": 4.2, "emitted_at": time.time()})])
                await cdp.wait_for("document.getElementById('lyrics').classList.contains('idle')", timeout_s=5)
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)
            await srv.stop()
        return sent, speech, lyrics_idle, rect, shot, long_lines, dimmed, lyrics_text, pieces_text

    sent, speech, lyrics_idle, rect, shot, long_lines, dimmed, lyrics_text, pieces_text = asyncio.run(
        asyncio.wait_for(main(), 90))
    assert speech.strip() == sent.text
    assert lyrics_idle is True
    import base64

    size, n, box = _colour_box(base64.b64decode(shot), (0, 255, 0))
    assert size == (W, H)
    assert n > 200, f"only {n} pixels of the caption colour in the screenshot"
    x0, y0, x1, y1 = box
    assert 0 <= x0 and x1 < W and 0 <= y0 and y1 < H  # inside the frame
    assert y0 > H / 2  # at the bottom (position=bottom)
    left, top, right, bottom = rect
    assert left - 2 <= x0 and x1 <= right + 2 and top - 2 <= y0 and y1 <= bottom + 2  # inside the caption box
    assert len(long_lines) == READABILITY.max_lines
    assert all(len(line) <= READABILITY.max_chars_per_line for line in long_lines)
    assert long_lines[-1].endswith("twenty")
    assert dimmed == [False, True, False]
    assert lyrics_text.strip() == "la la land"
    assert pieces_text.split()[0] == "oh" and pieces_text.count("whoa") == 9  # 1 s on: the first piece still shown
