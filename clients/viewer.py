"""Two-pane live caption viewer for the terminal (rich).

    python -m clients.viewer ws://127.0.0.1:8765 --stream demo [--token T] [--duration S]

Panes Speech and Lyrics: committed finals in normal text (the pieces of one utterance,
with incremental finals, joined on one line until its utterance_end), the current partial dimmed
(replaced as it grows, replaced by its final); an activity meter per track (green while
the server's gate for the track is open); a footer with the connection state, caption
latency (server-side: audio arrival -> event; network: event -> this screen), RTF and
events dropped for this viewer. Reconnects with backoff when the server goes away.
Words whose confidence (the 4th element of ``words``) is under ``--min-conf`` are shown
dimmed (and underlined) in finals and partials.

:class:`CaptionBoard` holds the state and :func:`render` draws it (both pure, tested
through rich's recording console); :func:`run_viewer` is the websocket loop.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from jrsv_stream.serve.protocol import decode_server_message, stream_url
from jrsv_stream.stream.events import Activity, Error, EventDecodeError, Final, Partial, Stats, UtteranceEnd

TITLES = {"speech": "Speech", "lyrics": "Lyrics \u266a"}


@dataclass
class TrackView:
    finals: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    final_words: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))  # beside finals
    partial: str | None = None
    partial_words: tuple = ()
    partial_segment: str | None = None
    closed_segments: set = field(default_factory=set)
    line_open: bool = False  # the last line's utterance goes on (incremental finals: no utterance_end yet)
    activity: float = 0.0
    active: bool = False


class CaptionBoard:
    """What the viewer shows; :meth:`apply` takes every message a subscriber receives."""

    def __init__(self, tracks: tuple[str, ...] = ("speech", "lyrics"), stream_id: str = ""):
        self.stream_id = stream_id
        self.tracks = tuple(tracks)
        self.views = {t: TrackView() for t in self.tracks}
        self.status = "connecting"
        self.latency_ms: float | None = None  # server side, last caption
        self.net_ms: float | None = None  # emitted -> received, last caption
        self.rtf: float | None = None
        self.dropped = 0
        self.audio_time_s = 0.0
        self.errors: collections.deque[str] = collections.deque(maxlen=3)
        self.last_seq = 0
        self.seq_gaps = 0

    def _view(self, track: str) -> TrackView:
        if track not in self.views:
            self.views[track] = TrackView()
            self.tracks = (*self.tracks, track)
        return self.views[track]

    def apply(self, msg, received_at: float | None = None) -> None:
        now = time.time() if received_at is None else received_at
        if isinstance(msg, dict):
            t = msg.get("type")
            if t == "hello":
                self.stream_id = msg.get("stream_id", self.stream_id)
                for tr in msg.get("tracks", []):
                    self._view(tr)
                self.status = "live" if msg.get("live") else "waiting for a publisher"
                self.last_seq = 0
            elif t == "stream":
                self.status = "live" if msg.get("state") == "live" else "stream ended"
                if msg.get("state") == "live":
                    self.last_seq = 0
            return
        seq = getattr(msg, "seq", 0)
        if seq:
            if self.last_seq and seq > self.last_seq + 1:
                self.seq_gaps += 1
            self.last_seq = max(self.last_seq, seq)
        if isinstance(msg, (Partial, Final)):
            v = self._view(msg.track)
            if isinstance(msg, Partial):
                if msg.segment_id not in v.closed_segments:
                    v.partial, v.partial_segment, v.partial_words = msg.text, msg.segment_id, msg.words
            else:
                v.closed_segments.add(msg.segment_id)
                if msg.text and v.line_open and v.finals:  # the next piece of the same utterance: one line
                    v.finals[-1] = f"{v.finals[-1]} {msg.text}"
                    if len(v.final_words) == len(v.finals):
                        v.final_words[-1] = tuple(v.final_words[-1]) + tuple(msg.words)
                elif msg.text:
                    v.finals.append(msg.text)
                    v.final_words.append(msg.words)
                v.line_open = bool(msg.text) or v.line_open
                if v.partial_segment == msg.segment_id:
                    v.partial, v.partial_segment, v.partial_words = None, None, ()
            if msg.latency_ms is not None:
                self.latency_ms = msg.latency_ms
            self.net_ms = max(0.0, 1000.0 * (now - msg.emitted_at))
            self.audio_time_s = max(self.audio_time_s, msg.audio_time_s)
        elif isinstance(msg, UtteranceEnd):
            self._view(msg.track).line_open = False
        elif isinstance(msg, Activity):
            for tr, a in msg.activity.items():
                v = self._view(tr)
                v.activity = a
                v.active = bool(msg.active.get(tr, False))
            self.audio_time_s = max(self.audio_time_s, msg.audio_time_s)
        elif isinstance(msg, Stats):
            self.rtf = msg.rtf
            self.dropped = msg.dropped_partials
        elif isinstance(msg, Error):
            self.errors.append(f"{msg.code}: {msg.message}")


def _meter(a: float, active: bool, width: int = 10) -> Text:
    n = max(0, min(width, int(round(a * width))))
    return Text.assemble(("\u2588" * n, "green" if active else "yellow"), ("\u2591" * (width - n), "grey50"),
                         (f" {a:.2f}", "bold" if active else "dim"))


LOW_CONF_STYLE = "dim underline"


def caption_text(text: str, words, min_conf: float | None, style: str = "") -> Text:
    """A caption line; words with confidence under ``min_conf`` in :data:`LOW_CONF_STYLE`
    (when the words carry confidences and match the text word for word)."""
    toks = text.split()
    if min_conf is None or len(words) != len(toks) or not all(len(w) > 3 for w in words):
        return Text(text, style=style)
    out = Text()
    for i, (tok, w) in enumerate(zip(toks, words)):
        out.append((" " if i else ""), style=style)
        out.append(tok, style=f"{style} {LOW_CONF_STYLE}".strip() if w[3] < min_conf else style)
    return out


def render(board: CaptionBoard, lines: int = 4, min_conf: float | None = None) -> Group:
    """The screen: one panel per track, then a status footer. ``min_conf``: dim words
    whose confidence is under it."""
    panels = []
    for t in board.tracks:
        v = board.views[t]
        body = Text()
        finals = list(v.finals)[-lines:]
        words = list(v.final_words)[-lines:] if len(v.final_words) == len(v.finals) else [()] * len(finals)
        for i, (line, ws) in enumerate(zip(finals, words)):
            if i:
                body.append("\n")
            body.append_text(caption_text(line, ws, min_conf))
        if v.partial:
            if len(body):
                body.append(" " if v.line_open else "\n")  # an utterance committed in pieces goes on
            body.append_text(caption_text(v.partial, v.partial_words, min_conf, "dim italic"))
        if not len(body):
            body.append("\u2026", style="dim")
        title = Text.assemble((TITLES.get(t, t.title()), "bold"), "  ", _meter(v.activity, v.active))
        panels.append(Panel(body, title=title, title_align="left", border_style="green" if v.active else "grey50"))
    lat = "-" if board.latency_ms is None else f"{board.latency_ms:.0f} ms"
    net = "-" if board.net_ms is None else f"{board.net_ms:.0f} ms"
    rtf = "-" if board.rtf is None else f"{board.rtf:.3f}"
    footer = Text.assemble(("\u25cf ", "green" if board.status == "live" else "yellow"), (board.status, "bold"),
                           f"  stream {board.stream_id or '-'}  t={board.audio_time_s:.1f}s",
                           f"  latency {lat} server + {net} net  RTF {rtf}  dropped {board.dropped}")
    parts = [*panels, footer]
    for e in board.errors:
        parts.append(Text(f"error {e}", style="red"))
    return Group(*parts)


async def run_viewer(url: str, console: Console | None = None, duration_s: float | None = None, reconnect: bool = True,
                     exit_on_end: bool = False, plain: bool = False, lines: int = 4, min_conf: float | None = None,
                     ssl_context=None) -> CaptionBoard:
    """Subscribe to ``url`` and show captions until ``duration_s`` passes (None: forever),
    the stream ends (``exit_on_end``) or the connection fails without ``reconnect``.

    ``plain``: print one line per final instead of the live screen (logs, CI).
    ``min_conf``: dim words under this confidence. ``ssl_context``: for wss:// servers
    with a certificate the system does not trust.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

    console = console or Console()
    board = CaptionBoard()

    async def loop(update):
        delay = 0.5
        while True:
            try:
                tls = {"ssl": ssl_context} if ssl_context is not None else {}
                async with connect(url, proxy=None, open_timeout=5, max_size=None, **tls) as ws:
                    delay = 0.5
                    async for m in ws:
                        try:
                            msg = decode_server_message(m)
                        except EventDecodeError as e:
                            board.errors.append(f"undecodable message: {e}")
                            continue
                        board.apply(msg)
                        if plain and isinstance(msg, Final) and msg.text:
                            console.print(f"[{msg.track}] {msg.text}", markup=False, highlight=False)
                        update()
                        if exit_on_end and isinstance(msg, dict) and msg.get("type") == "stream" and msg.get("state") == "ended":
                            return
            except InvalidStatus as e:
                code = e.response.status_code
                board.status = f"refused by server: HTTP {code}"
                update()
                if code in (401, 403, 404) or not reconnect:
                    return
            except InvalidURI:
                raise
            except (OSError, ConnectionClosed, TimeoutError) as e:
                board.status = f"reconnecting ({type(e).__name__})"
                update()
            if not reconnect:
                return
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    async def bounded(update):
        if duration_s is None:
            await loop(update)
            return
        try:
            await asyncio.wait_for(loop(update), duration_s)
        except (TimeoutError, asyncio.TimeoutError):
            pass

    if plain:
        await bounded(lambda: None)
        return board
    with Live(render(board, lines, min_conf), console=console, refresh_per_second=8, transient=False) as live:
        await bounded(lambda: live.update(render(board, lines, min_conf)))
    return board


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clients.viewer", description="Two-pane live caption viewer.")
    ap.add_argument("server", nargs="?", default="ws://127.0.0.1:8765", help="server URL (ws://host:port)")
    ap.add_argument("--stream", default="demo", help="stream id")
    ap.add_argument("--token", default=None, help="subscriber token")
    ap.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    ap.add_argument("--no-reconnect", action="store_true")
    ap.add_argument("--exit-on-end", action="store_true", help="exit when the stream ends")
    ap.add_argument("--plain", action="store_true", help="print finals as lines instead of the live screen")
    ap.add_argument("--lines", type=int, default=4, help="committed lines shown per track")
    ap.add_argument("--min-conf", type=float, default=0.5, help="dim words with confidence under this (0: never)")
    ap.add_argument("--cafile", default=None, help="CA / self-signed certificate to trust for wss://")
    a = ap.parse_args(argv)
    if not 0.0 <= a.min_conf <= 1.0:
        ap.error(f"--min-conf must be in [0, 1], got {a.min_conf}")
    url = stream_url(a.server, "subscribe", a.stream, a.token)
    tls = None
    if a.cafile:
        import ssl

        tls = ssl.create_default_context(cafile=a.cafile)
    try:
        asyncio.run(run_viewer(url, duration_s=a.duration, reconnect=not a.no_reconnect, exit_on_end=a.exit_on_end,
                               plain=a.plain, lines=a.lines, min_conf=a.min_conf or None, ssl_context=tls))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
