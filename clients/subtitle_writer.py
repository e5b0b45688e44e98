"""Subscriber that writes subtitle files live as finals arrive.

    python -m clients.subtitle_writer ws://127.0.0.1:8765 --stream demo --out-dir subs/ [--formats srt,vtt,lrc]

Writes ``<out-dir>/<track>.srt`` and ``<track>.vtt`` for every caption track and
``lyrics.lrc`` (LRC is for lyrics), appending one cue per final (flushed), so a player or
OBS can follow the files while the stream runs. Exits when the stream ends
(``--exit-on-end``), after ``--duration`` seconds, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from jrsv_stream.export.subtitles import FORMATS, LiveSubtitleWriter
from jrsv_stream.serve.protocol import decode_server_message, stream_url
from jrsv_stream.stream.events import Final, UtteranceEnd


class SubtitleSink:
    """Route finals to one :class:`LiveSubtitleWriter` per (track, format)."""

    def __init__(self, out_dir: str | Path, formats: tuple[str, ...] = FORMATS, tracks: tuple[str, ...] = ("speech", "lyrics"),
                 lrc_word_times: bool = False):
        self.out_dir = Path(out_dir)
        self.writers: dict[tuple[str, str], LiveSubtitleWriter] = {}
        for t in tracks:
            for f in formats:
                if f == "lrc" and t != "lyrics":
                    continue
                self.writers[(t, f)] = LiveSubtitleWriter(self.out_dir / f"{t}.{f}", f, t, word_times=lrc_word_times)

    def add(self, final: Final, more: bool = False) -> None:
        """``more``: a piece of an utterance that goes on (written at its utterance_end)."""
        for (t, _), w in self.writers.items():
            if t == final.track:
                w.add(final, more)

    def end_utterance(self, track: str) -> None:
        for (t, _), w in self.writers.items():
            if t == track:
                w.end_utterance()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    @property
    def paths(self) -> list[Path]:
        return [w.path for w in self.writers.values()]


async def write_live(url: str, sink: SubtitleSink, duration_s: float | None = None, exit_on_end: bool = True) -> int:
    """Subscribe and feed finals to ``sink``; returns the number of finals written."""
    from websockets.asyncio.client import connect

    n = 0

    async def run():
        nonlocal n
        async with connect(url, proxy=None, max_size=None) as ws:
            async for m in ws:
                msg = decode_server_message(m)
                if isinstance(msg, Final) and msg.text:
                    sink.add(msg, more=True)  # written at the utterance's end (its pieces joined)
                    n += 1
                elif isinstance(msg, UtteranceEnd):
                    sink.end_utterance(msg.track)
                elif exit_on_end and isinstance(msg, dict) and msg.get("type") == "stream" and msg.get("state") == "ended":
                    return

    try:
        if duration_s is None:
            await run()
        else:
            await asyncio.wait_for(run(), duration_s)
    except (TimeoutError, asyncio.TimeoutError):
        pass
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clients.subtitle_writer", description="Write SRT/VTT/LRC live from a stream.")
    ap.add_argument("server", nargs="?", default="ws://127.0.0.1:8765")
    ap.add_argument("--stream", default="demo")
    ap.add_argument("--token", default=None, help="subscriber token")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--formats", default="srt,vtt,lrc", help="comma list of srt, vtt, lrc")
    ap.add_argument("--lrc-word-times", action="store_true", help="enhanced LRC with <mm:ss.xx> word times")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--keep-running", action="store_true", help="do not exit when the stream ends")
    a = ap.parse_args(argv)
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        ap.error(f"unknown format(s) {bad}; known: {', '.join(FORMATS)}")
    sink = SubtitleSink(a.out_dir, formats, lrc_word_times=a.lrc_word_times)
    try:
        n = asyncio.run(write_live(stream_url(a.server, "subscribe", a.stream, a.token), sink, a.duration, not a.keep_running))
    except KeyboardInterrupt:
        n = -1
    except OSError as e:
        print(f"subtitle_writer: {e}", file=sys.stderr)
        return 2
    finally:
        sink.close()
    print(f"wrote {n} finals to {', '.join(str(p) for p in sink.paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
