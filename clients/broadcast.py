"""Send live audio to the caption server as a publisher.

    python -m clients.broadcast ws://127.0.0.1:8765 --stream demo --file talk.wav      # paced at real time
    python -m clients.broadcast ws://127.0.0.1:8765 --stream demo --device "USB Mic"   # microphone
    python -m clients.broadcast ws://127.0.0.1:8765 --stream demo --ffmpeg rtmp://host/live/key

    python -m clients.broadcast wss://host:8765 --cafile ca.pem --stream demo --file talk.wav \
        --hotword "Kaylee Vonderhaar" --replace gonna="going to" --mask damn --tracks speech

Protocol (docs/protocol.md): ``start`` (16 kHz mono s16le, and the caption controls
``hotwords``, ``replace``, ``mask``, ``tracks`` when given), binary PCM frames of
``--frame-ms``, ``end``; the server answers ``ready`` and finally ``ended``. Error events
from the server are printed to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from jrsv_stream.audio.sources import ArraySource, AudioSource, FfmpegSource, FileSource, SoundDeviceSource
from jrsv_stream.serve.protocol import PROTOCOL_VERSION, encode_pcm, stream_url


@dataclass
class BroadcastResult:
    """What happened: audio sent, frame send times (for latency measurements), server messages."""

    audio_s: float = 0.0
    frames: int = 0
    start_time: float | None = None  # wall time of audio time 0 (real-time sources)
    ready: dict | None = None
    ended: dict | None = None
    errors: list[dict] = field(default_factory=list)


async def broadcast(url: str, source: AudioSource, dtype: str = "s16le", on_message: Callable[[dict], None] | None = None,
                    end_timeout_s: float = 60.0, options: dict | None = None, ssl_context=None) -> BroadcastResult:
    """Publish ``source`` to ``url`` (a ``/v1/publish/<id>`` URL) until it ends.

    Args:
        options: caption controls sent in ``start`` (``hotwords``, ``replace``, ``mask``,
            ``tracks``; docs/protocol.md).
        ssl_context: for a wss:// server whose certificate the system does not trust.

    Raises:
        RuntimeError: the server refused the stream (error before ``ready``).
    """
    from websockets.asyncio.client import connect

    res = BroadcastResult()

    async def reader(ws):
        async for m in ws:
            if isinstance(m, bytes):
                continue
            d = json.loads(m)
            if on_message is not None:
                on_message(d)
            if d.get("type") == "error":
                res.errors.append(d)
                print(f"server error: {d.get('code')}: {d.get('message')}", file=sys.stderr)
            elif d.get("type") == "ended":
                res.ended = d

    tls = {"ssl": ssl_context} if ssl_context is not None else {}
    async with connect(url, proxy=None, max_size=None, compression=None, **tls) as ws:
        await ws.send(json.dumps({"v": PROTOCOL_VERSION, "type": "start", "sample_rate": 16000, "dtype": dtype, "channels": 1,
                                  **(options or {})}))
        first = json.loads(await ws.recv())
        if first.get("type") != "ready":
            raise RuntimeError(f"server refused the stream: {first}")
        res.ready = first
        rd = asyncio.ensure_future(reader(ws))
        it = iter(source)
        try:
            while True:
                block = await asyncio.to_thread(next, it, None)
                if block is None:
                    break
                if res.start_time is None:
                    res.start_time = getattr(source, "start_time", None) or time.time()
                await ws.send(encode_pcm(block, dtype))
                res.frames += 1
                res.audio_s += len(block) / 16000
            await ws.send(json.dumps({"v": PROTOCOL_VERSION, "type": "end"}))
            await asyncio.wait_for(rd, end_timeout_s)
        finally:
            source.close()
            rd.cancel()
    return res


def start_options(a: argparse.Namespace) -> dict:
    """The caption controls of ``start`` from the command line (the server validates them).

    Raises:
        CaptionOptionError (a ValueError): a ``--replace`` without ``=``.
    """
    from jrsv_stream.stream.captions import options_from_flags

    return options_from_flags(a.hotword, a.replace, a.mask, a.tracks)


def client_tls(cafile: str | None):
    """An SSL context trusting ``cafile`` (None: the system's trust, websockets' default)."""
    if cafile is None:
        return None
    import ssl

    return ssl.create_default_context(cafile=cafile)


def make_source(a: argparse.Namespace) -> AudioSource:
    if a.file:
        return FileSource(a.file, realtime=not a.fast, block_ms=a.frame_ms)
    if a.ffmpeg:
        return FfmpegSource(a.ffmpeg, realtime=a.realtime_ffmpeg, block_ms=a.frame_ms)
    if a.device is not None:
        return SoundDeviceSource(a.device or None, block_ms=a.frame_ms)
    raise SystemExit("give one of --file, --device, --ffmpeg")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clients.broadcast", description="Publish audio to the caption server.")
    ap.add_argument("server", nargs="?", default="ws://127.0.0.1:8765")
    ap.add_argument("--stream", default="demo")
    ap.add_argument("--token", default=None, help="publisher token")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="audio file, paced at real time (see --fast)")
    src.add_argument("--device", nargs="?", const="", help="capture device name or index (empty: default input)")
    src.add_argument("--ffmpeg", help="anything ffmpeg reads: file, http(s)/HLS/RTMP URL")
    ap.add_argument("--fast", action="store_true", help="send a file as fast as the server takes it")
    ap.add_argument("--realtime-ffmpeg", action="store_true", help="pass -re to ffmpeg (files played live)")
    ap.add_argument("--frame-ms", type=float, default=20.0)
    ap.add_argument("--dtype", choices=("s16le", "f32le"), default="s16le")
    ap.add_argument("--cafile", default=None, help="CA / self-signed certificate to trust for wss://")
    ap.add_argument("--hotword", action="append", default=[], metavar="PHRASE[:BOOST]", help="phrase to prefer (repeat)")
    ap.add_argument("--replace", action="append", default=[], metavar="FROM=TO", help="whole-word replacement (repeat)")
    ap.add_argument("--mask", action="append", default=[], metavar="WORD", help="word shown masked (repeat)")
    ap.add_argument("--tracks", default=None, help="speech, lyrics or speech,lyrics")
    a = ap.parse_args(argv)
    from websockets.exceptions import InvalidStatus, WebSocketException

    url = stream_url(a.server, "publish", a.stream, a.token)
    try:
        r = asyncio.run(broadcast(url, make_source(a), a.dtype, options=start_options(a), ssl_context=client_tls(a.cafile)))
    except KeyboardInterrupt:
        return 130
    except InvalidStatus as e:
        body = e.response.body.decode(errors="replace").strip() if e.response.body else ""
        print(f"broadcast: server refused the connection: HTTP {e.response.status_code} {body}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, ValueError, WebSocketException) as e:
        print(f"broadcast: {e}", file=sys.stderr)
        return 2
    print(f"sent {r.audio_s:.1f} s of audio in {r.frames} frames; server: {r.ended}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ArraySource", "BroadcastResult", "broadcast"]
