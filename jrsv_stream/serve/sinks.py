"""Caption sinks: push a stream's finals to OBS, YouTube Live or a webhook.

Each sink is fed by a subscriber of the caption server (:func:`run_sinks` subscribes over
the websocket like any client), so a sink can never slow or stop captioning. Every sink
has its own bounded queue and task: when one is down, its queue fills and its oldest
captions are dropped (counted, logged); the other sinks and subscribers go on. Delivery
retries with exponential back-off (``retry_base_s`` doubling up to ``retry_max_s``,
``max_attempts`` per caption), each failure logged with its reason.

Specs (``jrsv-stream serve --sink SPEC``, repeatable, or one per line in ``--sinks-file``):

- ``obs://[:PASSWORD@]HOST:PORT[?tracks=speech,lyrics]``: obs-websocket v5
  ``SendStreamCaption`` (OBS puts the text into the stream as CEA-608 captions); the
  password may also come from ``$OBS_WEBSOCKET_PASSWORD``.
- ``youtube:URL``: YouTube Live's caption ingestion URL (from YouTube Studio): HTTP POST,
  ``&seq=N`` appended, ``text/plain`` body ``YYYY-MM-DDTHH:MM:SS.mmm\\n<caption>\\n`` (UTC).
- ``webhook:URL``: HTTP POST of each final as its event JSON (docs/protocol.md).

``tracks=`` works on every spec (for HTTP sinks: ``youtube:URL#tracks=speech``; default:
the speech track for OBS and YouTube, both tracks for webhooks).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from jrsv_stream.serve.protocol import decode_server_message, stream_url
from jrsv_stream.stream.events import Final, event_to_dict

log = logging.getLogger("jrsv_stream.sinks")

TRACKS = ("speech", "lyrics")


class SinkError(RuntimeError):
    """A delivery failed (the message says why); it is retried."""


class ObsAuthError(SinkError):
    """OBS refused the password (close 4009) or wants one that was not given."""


@dataclass(frozen=True)
class RetryPolicy:
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    max_attempts: int = 6  # per caption; then it is dropped (logged)
    queue_size: int = 100  # captions waiting per sink; the oldest is dropped beyond


class Sink:
    """A caption destination: :meth:`offer` (never blocks) + :meth:`run` (delivery loop).

    Subclasses implement :meth:`deliver` (one final; raise :class:`SinkError` or OSError on failure)
    and may implement :meth:`close`.

    Attributes:
        sent, failed_attempts, dropped: counters; ``last_error``: the last failure's message.
    """

    kind = "sink"

    def __init__(self, tracks: tuple[str, ...], policy: RetryPolicy = RetryPolicy()):
        bad = [t for t in tracks if t not in TRACKS]
        if bad or not tracks:
            raise ValueError(f"{self.kind} sink: unknown track(s) {bad or tracks}; known: {', '.join(TRACKS)}")
        self.tracks, self.policy = tuple(tracks), policy
        self.queue: asyncio.Queue[Final] = asyncio.Queue(policy.queue_size)
        self.sent = self.failed_attempts = self.dropped = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:
        return self.kind

    def offer(self, final: Final) -> None:
        """Queue a final of one of this sink's tracks (empty ones are skipped); never blocks."""
        if final.track not in self.tracks or not final.text.strip():
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
            log.error("%s: queue full (%d captions), the oldest caption is dropped (%d so far)", self.describe(),
                      self.policy.queue_size, self.dropped)
        self.queue.put_nowait(final)

    async def deliver(self, final: Final) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    async def run(self) -> None:
        """Deliver queued finals forever (cancel to stop), retrying each with back-off."""
        try:
            while True:
                final = await self.queue.get()
                await self._deliver_with_retry(final)
        finally:
            await self.close()

    async def _deliver_with_retry(self, final: Final) -> None:
        p = self.policy
        for attempt in range(1, p.max_attempts + 1):
            try:
                await self.deliver(final)
                self.sent += 1
                return
            except (SinkError, OSError, ConnectionClosed, asyncio.TimeoutError, ValueError) as e:
                self.failed_attempts += 1
                self.last_error = f"{type(e).__name__}: {e}"
                wait_s = min(p.retry_max_s, p.retry_base_s * 2 ** (attempt - 1))
                if attempt == p.max_attempts:
                    self.dropped += 1
                    log.error("%s: caption %s dropped after %d attempts: %s", self.describe(), final.segment_id,
                              attempt, self.last_error)
                    return
                log.warning("%s: delivery failed (attempt %d/%d, retry in %.1f s): %s", self.describe(), attempt,
                            p.max_attempts, wait_s, self.last_error)
                await asyncio.sleep(wait_s)


# ---------------------------------------------------------------------- OBS (obs-websocket v5)
def obs_auth(password: str, salt: str, challenge: str) -> str:
    """obs-websocket v5 authentication string: base64(sha256(base64(sha256(password + salt)) + challenge))."""
    secret = base64.b64encode(hashlib.sha256((password + salt).encode()).digest()).decode()
    return base64.b64encode(hashlib.sha256((secret + challenge).encode()).digest()).decode()


class ObsSink(Sink):
    """Send finals to OBS as stream captions (``SendStreamCaption``, obs-websocket v5).

    One connection, opened on demand and reopened after a failure (the retry loop's back-off
    paces reconnects). OBS answers ``SendStreamCaption`` with an error while it is not
    streaming; that failure is logged and retried like any other.
    """

    kind = "obs"

    def __init__(self, url: str, password: str | None = None, tracks: tuple[str, ...] = ("speech",),
                 policy: RetryPolicy = RetryPolicy(), timeout_s: float = 5.0):
        super().__init__(tracks, policy)
        self.url, self.password, self.timeout_s = url, password, timeout_s
        self._ws = None
        self._ids = itertools.count(1)

    def describe(self) -> str:
        return f"obs sink {self.url}"

    async def _connect(self):
        ws = await asyncio.wait_for(connect(self.url, proxy=None, max_size=None), self.timeout_s)
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), self.timeout_s))
            if hello.get("op") != 0:
                raise SinkError(f"OBS sent op {hello.get('op')!r} instead of Hello (0)")
            identify = {"rpcVersion": 1, "eventSubscriptions": 0}
            auth = hello.get("d", {}).get("authentication")
            if auth:
                if not self.password:
                    raise ObsAuthError("OBS requires a password: give obs://:PASSWORD@HOST:PORT or $OBS_WEBSOCKET_PASSWORD")
                identify["authentication"] = obs_auth(self.password, auth["salt"], auth["challenge"])
            await ws.send(json.dumps({"op": 1, "d": identify}))
            try:
                reply = json.loads(await asyncio.wait_for(ws.recv(), self.timeout_s))
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                if code == 4009:
                    raise ObsAuthError("OBS refused the password (authentication failed, close 4009)") from e
                reason = e.rcvd.reason if e.rcvd else ""
                raise SinkError(f"OBS closed the connection during Identify (code {code}: {reason})") from e
            if reply.get("op") != 2:
                raise SinkError(f"OBS answered Identify with op {reply.get('op')!r} instead of Identified (2)")
        except BaseException:
            await ws.close()
            raise
        log.info("%s: connected (rpc version %s)", self.describe(), reply.get("d", {}).get("negotiatedRpcVersion"))
        return ws

    async def deliver(self, final: Final) -> None:
        if self._ws is None:
            self._ws = await self._connect()
        ws = self._ws
        rid = f"jrsv-{next(self._ids)}"
        try:
            await ws.send(json.dumps({"op": 6, "d": {"requestType": "SendStreamCaption", "requestId": rid,
                                                     "requestData": {"captionText": final.text}}}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), self.timeout_s))
                if m.get("op") == 7 and m.get("d", {}).get("requestId") == rid:
                    break  # other ops (events) are ignored
        except (ConnectionClosed, OSError, asyncio.TimeoutError):
            self._ws = None
            await ws.close()
            raise
        st = m["d"].get("requestStatus", {})
        if not st.get("result"):
            raise SinkError(f"OBS refused SendStreamCaption: code {st.get('code')} {st.get('comment') or ''}".rstrip())

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None


# ---------------------------------------------------------------------- HTTP sinks
def _post(url: str, body: bytes, content_type: str, timeout_s: float) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type,
                                                                          "User-Agent": "jrsv-stream"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # local URLs must not go through a proxy
    try:
        with opener.open(req, timeout=timeout_s) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        raise SinkError(f"HTTP {e.code} {e.reason} from {urlsplit(url).netloc}") from e


def youtube_timestamp(t_unix: float) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SS.mmm`` (UTC), YouTube's caption timestamp."""
    d = dt.datetime.fromtimestamp(t_unix, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}"


def caption_wall_time(final: Final) -> float:
    """Wall clock (Unix s) at which the final's first word was spoken (server clock)."""
    return final.emitted_at - max(0.0, final.audio_time_s - final.start_s)


class YouTubeSink(Sink):
    """POST finals to a YouTube Live caption ingestion URL (``seq`` counts requests, from 1)."""

    kind = "youtube"

    def __init__(self, url: str, tracks: tuple[str, ...] = ("speech",), policy: RetryPolicy = RetryPolicy(),
                 timeout_s: float = 10.0, region: str | None = None):
        super().__init__(tracks, policy)
        self.url, self.timeout_s, self.region = url, timeout_s, region
        self.seq = 1

    def describe(self) -> str:
        return f"youtube sink {urlsplit(self.url).netloc}"

    def body(self, final: Final) -> str:
        stamp = youtube_timestamp(caption_wall_time(final))
        if self.region:
            stamp += f" region:{self.region}"
        return f"{stamp}\n{' '.join(final.text.split())}\n"

    async def deliver(self, final: Final) -> None:
        url = self.url + ("&" if "?" in self.url else "?") + f"seq={self.seq}"
        await asyncio.to_thread(_post, url, self.body(final).encode("utf-8"), "text/plain; charset=utf-8", self.timeout_s)
        self.seq += 1  # a retried caption keeps its sequence number


class WebhookSink(Sink):
    """POST each final as its event JSON (``application/json``)."""

    kind = "webhook"

    def __init__(self, url: str, tracks: tuple[str, ...] = TRACKS, policy: RetryPolicy = RetryPolicy(),
                 timeout_s: float = 10.0):
        super().__init__(tracks, policy)
        self.url, self.timeout_s = url, timeout_s

    def describe(self) -> str:
        return f"webhook sink {urlsplit(self.url).netloc}"

    async def deliver(self, final: Final) -> None:
        body = json.dumps(event_to_dict(final), separators=(",", ":")).encode()
        await asyncio.to_thread(_post, self.url, body, "application/json", self.timeout_s)


# ---------------------------------------------------------------------- specs and the feeding subscriber
def _tracks(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip()) if value else default


def parse_sink(spec: str, policy: RetryPolicy = RetryPolicy()) -> Sink:
    """A sink spec (module docstring) -> a :class:`Sink`. Raises ValueError with the accepted forms."""
    if spec.startswith("obs://"):
        u = urlsplit(spec)
        if not u.hostname:
            raise ValueError(f"bad OBS sink {spec!r}: use obs://[:PASSWORD@]HOST:PORT")
        password = unquote(u.password) if u.password else os.environ.get("OBS_WEBSOCKET_PASSWORD")
        tracks = _tracks((parse_qs(u.query).get("tracks") or [None])[0], ("speech",))
        return ObsSink(f"ws://{u.hostname}:{u.port or 4455}", password, tracks, policy)
    for prefix, cls, default in (("youtube:", YouTubeSink, ("speech",)), ("webhook:", WebhookSink, TRACKS)):
        if spec.startswith(prefix):
            url, _, frag = spec[len(prefix):].partition("#")
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"bad {prefix[:-1]} sink {spec!r}: use {prefix}http(s)://...")
            tracks = _tracks(parse_qs(frag).get("tracks", [None])[0], default)
            return cls(url, tracks, policy)
    raise ValueError(f"unknown sink {spec!r}: use obs://[:PASSWORD@]HOST:PORT, youtube:URL or webhook:URL")


def read_sinks_file(path: str) -> list[str]:
    """Sink specs, one per line (blank lines and ``#`` comments ignored)."""
    with open(path, encoding="utf-8") as f:
        return [s for s in (line.strip() for line in f) if s and not s.startswith("#")]


async def feed_sinks(server_url: str, stream_id: str, sinks: list[Sink], token: str | None = None,
                     stop: asyncio.Event | None = None, reconnect_max_s: float = 5.0) -> None:
    """Subscribe to ``stream_id`` and offer every final to every sink; reconnects with back-off.

    Runs each sink's :meth:`Sink.run` as its own task; returns (cancelling them) when ``stop``
    is set or the task is cancelled.
    """
    stop = stop or asyncio.Event()
    tasks = [asyncio.ensure_future(s.run()) for s in sinks]
    url = stream_url(server_url, "subscribe", stream_id, token)
    delay = 0.2

    async def subscribe():
        nonlocal delay
        async with connect(url, proxy=None, max_size=None) as ws:
            delay = 0.2
            async for m in ws:
                msg = decode_server_message(m)
                if isinstance(msg, Final):
                    for s in sinks:
                        s.offer(msg)

    try:
        while not stop.is_set():
            sub = asyncio.ensure_future(subscribe())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait([sub, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stop.is_set():
                sub.cancel()
                await asyncio.gather(sub, return_exceptions=True)
                break
            exc = sub.exception()
            log.warning("sinks: subscription to %s ended (%s); reconnecting in %.1f s", stream_id,
                        f"{type(exc).__name__}: {exc}" if exc else "closed", delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(reconnect_max_s, delay * 2)
    finally:
        # let queued captions go out briefly before stopping
        deadline = time.monotonic() + 2.0
        while any(s.queue.qsize() for s in sinks) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
