"""Websocket caption server (websockets >= 14, ``websockets.asyncio.server``).

A thin asyncio layer over the network-free core: one :class:`BatchWorker` owns the model;
each live stream has a :class:`StreamSession` fed by a publisher connection (or a local
:class:`~jrsv_stream.audio.sources.AudioSource`, e.g. server-side capture); its events go
to every subscriber of the stream through a bounded :class:`SubscriberQueue` each.

Guarantees (docs/protocol.md):

- the worker and the stream tasks never wait on a subscriber: events are put into each
  subscriber's queue without blocking; a per-subscriber task sends them;
- a slow subscriber loses superseded partials, activity and stats first (counted in its
  ``stats.dropped_partials``); finals and errors are never dropped while it is connected;
  if its queue still reaches the hard limit it is disconnected (close 4008);
- bad input (malformed JSON, unknown types, odd byte counts, wrong dtype or sample rate,
  NaN/Inf, oversized frames, abrupt disconnects) gets an ``error`` event or a close code
  and affects only that connection; an abrupt publisher disconnect still flushes finals;
- SIGTERM/SIGINT (:func:`serve_forever`): stop accepting, flush every stream's finals to
  its subscribers, close with 1001;
- a stream whose chunks keep failing (``max_model_errors`` in a row) or whose decoding of
  one chunk stalls past ``step_timeout_s`` fails alone: its publisher and subscribers get a
  fatal ``model_error``, the publisher is closed with 1011, the finals of its open segments
  are still flushed; every other stream goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import signal
import ssl
import threading
import time
from dataclasses import dataclass

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from jrsv_stream import __version__
from jrsv_stream.audio.sources import AudioSource
from jrsv_stream.serve.fanout import SubscriberQueue, _Hub
from jrsv_stream.serve.overlay import overlay_response
from jrsv_stream.serve.protocol import (PROTOCOL_VERSION, CloseCode, ErrorCode, Ping, ProtocolError, message,
                                        parse_client_message, parse_path, token_ok)
from jrsv_stream.serve.publishing import PublisherMixin
from jrsv_stream.stream.captions import CaptionOptions
from jrsv_stream.stream.events import Error, Event, Final, Partial, Stats, encode_event
from jrsv_stream.stream.faults import FaultPlan
from jrsv_stream.stream.pipeline_api import StreamingPipeline
from jrsv_stream.stream.session import SessionConfig
from jrsv_stream.stream.worker import BatchWorker

log = logging.getLogger("jrsv_stream.serve")


@dataclass(frozen=True)
class ServerConfig:
    """Server settings.

    Attributes:
        host, port: where to listen (port 0: any free port; read :attr:`CaptionServer.port`).
        publish_token, subscribe_token: required per role when set (``?token=`` or
            ``Authorization: Bearer``).
        allowed_origins: when set, browsers' ``Origin`` must be one of these (clients that
            send no Origin header, like the Python clients, are accepted).
        max_message_bytes: largest websocket message; bigger frames close with 1009.
        max_streams: concurrent live streams (worker slots).
        max_subscribers_per_stream: subscribers of one stream.
        subscriber_queue: events queued per subscriber before droppable ones are dropped.
        subscriber_hard_limit: queued non-droppable events at which a subscriber is cut off.
        chunk_queue: chunks buffered per stream between receive and model (backpressure
            to the publisher beyond this).
        max_errors_per_publisher: invalid messages tolerated before closing with 4002.
        max_batch, max_wait_ms: worker batching.
        decode_threads: threads running decoders (CPU state machines).
        drain_timeout_s: at shutdown, how long to wait for subscribers to receive finals.
        max_model_errors: consecutive failed chunks of one stream after which the stream
            fails (fatal ``model_error``, publisher closed with 1011).
        step_timeout_s: longest decoding of one chunk of one stream; a stream past it fails.
        caption_options: caption controls of every stream (hotwords, replace, mask,
            tracks), combined with each publisher's own from ``start``
            (:func:`~jrsv_stream.stream.captions.merge_options`).
        certfile, keyfile: TLS certificate chain and private key (PEM): the server speaks
            wss:// and https:// (health); ``keyfile`` None: the key is in ``certfile``.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    publish_token: str | None = None
    subscribe_token: str | None = None
    allowed_origins: tuple[str, ...] | None = None
    max_message_bytes: int = 1 << 20
    max_streams: int = 64
    max_subscribers_per_stream: int = 64
    subscriber_queue: int = 256
    subscriber_hard_limit: int = 4096
    chunk_queue: int = 32
    max_errors_per_publisher: int = 100
    max_batch: int = 32
    max_wait_ms: float = 10.0
    decode_threads: int = 2
    drain_timeout_s: float = 5.0
    max_model_errors: int = 5
    step_timeout_s: float = 5.0
    caption_options: CaptionOptions = CaptionOptions()
    certfile: str | None = None
    keyfile: str | None = None

    def __post_init__(self):
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile needs certfile (TLS)")
        for name in ("max_message_bytes", "max_streams", "max_subscribers_per_stream", "subscriber_queue", "chunk_queue",
                     "max_batch", "decode_threads", "max_model_errors"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.subscriber_hard_limit < self.subscriber_queue:
            raise ValueError("subscriber_hard_limit must be >= subscriber_queue")


class CaptionServer(PublisherMixin):
    """The caption server. Use ``await start()`` / ``await stop()`` (or :func:`serve_forever`).

    Args:
        pipeline: the :class:`StreamingPipeline` (the worker moves it to CUDA if present).
        config: :class:`ServerConfig`.
        session_config: decoding settings for every stream.
        faults: test-only :class:`~jrsv_stream.stream.faults.FaultPlan` handed to the worker
            (None, the default and what the CLI uses: no fault injection).
    """

    def __init__(self, pipeline: StreamingPipeline, config: ServerConfig = ServerConfig(),
                 session_config: SessionConfig = SessionConfig(), faults: FaultPlan | None = None):
        self.config = config
        self.session_config = session_config
        self.worker = BatchWorker(pipeline, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                  max_streams=config.max_streams, faults=faults)
        self.streams_failed = 0
        self.pipeline = self.worker.pipeline
        self._hubs: dict[str, _Hub] = {}
        self._server: Server | None = None
        self._stopping = False
        self._decode_pool = concurrent.futures.ThreadPoolExecutor(config.decode_threads, thread_name_prefix="jrsv-decode")
        self._bg: set[asyncio.Task] = set()
        self.port: int | None = None
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "CaptionServer":
        self.worker.start()
        origins = None
        if self.config.allowed_origins is not None:
            origins = [*self.config.allowed_origins, None]  # None: no Origin header (non-browser clients)
        try:
            tls = self.tls_context()
        except BaseException:
            self.worker.stop()
            raise
        self._server = await serve(self._handler, self.config.host, self.config.port, process_request=self._process_request,
                                   origins=origins, max_size=self.config.max_message_bytes, compression=None,
                                   server_header=f"jrsv-stream/{__version__}", ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self.config.port
        log.info("listening on %s (device %s)", self.url, self.worker.device)
        return self

    def tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context from ``certfile`` / ``keyfile`` (None without TLS).

        Raises:
            ValueError: the files cannot be read or do not hold a matching cert and key.
        """
        if self.config.certfile is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.config.certfile, self.config.keyfile)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load TLS certificate {self.config.certfile!r} / key {self.config.keyfile!r}: {e}") from e
        return ctx

    @property
    def tls(self) -> bool:
        return self.config.certfile is not None

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.config.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP paths (``/healthz``): https:// with TLS."""
        return f"{'https' if self.tls else 'http'}://{self.config.host}:{self.port}"

    async def stop(self) -> None:
        """Clean shutdown: stop accepting, flush finals of every stream, close (1001)."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close(close_connections=False)  # stop listening; connections stay up
        hubs = list(self._hubs.values())
        for h in hubs:
            if h.source is not None:
                h.source.close()  # wakes its reader thread
        await asyncio.gather(*(self._finish_stream(h) for h in hubs), return_exceptions=True)
        deadline = time.monotonic() + self.config.drain_timeout_s
        for h in hubs:  # let subscribers receive the flushed finals
            while any(len(q) for q in h.subscribers.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        conns = [c for h in hubs for c in h.subscribers] + [h.publisher for h in hubs if isinstance(h.publisher, ServerConnection)]
        await asyncio.gather(*(c.close(CloseCode.GOING_AWAY, "server shutting down") for c in conns), return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._bg):
            t.cancel()
        self.worker.stop()
        self._decode_pool.shutdown(wait=True)

    # ------------------------------------------------------------------ health and handshake
    def health(self) -> dict:
        p = self.pipeline
        return {"status": "stopping" if self._stopping else "ok", "version": __version__, "protocol": PROTOCOL_VERSION,
                "uptime_s": round(time.time() - self.started_at, 1),
                "streams": sum(1 for h in self._hubs.values() if h.session is not None),
                "subscribers": sum(len(h.subscribers) for h in self._hubs.values()),
                "max_streams": self.config.max_streams, "streams_failed": self.streams_failed,
                "device": str(self.worker.device),
                "queue_depth": self.worker.queue_depth,
                "pipeline": {"chunk_samples": p.chunk_samples, "sample_rate": p.sample_rate,
                             "algorithmic_latency_ms": p.algorithmic_latency_ms, "tracks": list(p.tracks)},
                "worker": self.worker.stats()}

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        page = overlay_response(connection, request.path)
        if page is not None:
            return page
        try:
            route = parse_path(request.path, request.headers)
        except ProtocolError as e:
            return connection.respond(404, f"{e}\n")
        if route.role == "health":
            r = connection.respond(200, json.dumps(self.health()) + "\n")
            r.headers["Content-Type"] = "application/json"
            return r
        expected = self.config.publish_token if route.role == "publish" else self.config.subscribe_token
        if not token_ok(route.token, expected):
            return connection.respond(401, f"unauthorized: missing or wrong {route.role} token\n")
        if self._stopping:
            return connection.respond(503, "server shutting down\n")
        hub = self._hubs.get(route.stream_id)
        if route.role == "publish":
            if hub is not None and hub.publisher is not None:
                return connection.respond(409, f"stream {route.stream_id!r} already has a publisher\n")
            if self._live_streams() >= self.config.max_streams:
                return connection.respond(503, f"maximum number of streams ({self.config.max_streams}) reached\n")
        elif hub is not None and len(hub.subscribers) >= self.config.max_subscribers_per_stream:
            return connection.respond(503, f"maximum subscribers for stream {route.stream_id!r} reached\n")
        return None

    def _live_streams(self) -> int:
        return sum(1 for h in self._hubs.values() if h.publisher is not None)

    def _hub(self, stream_id: str) -> _Hub:
        h = self._hubs.get(stream_id)
        if h is None:
            h = self._hubs[stream_id] = _Hub(stream_id, self.config.chunk_queue)
        return h

    def _maybe_forget(self, hub: _Hub) -> None:
        if hub.publisher is None and not hub.subscribers and hub.session is None and self._hubs.get(hub.stream_id) is hub:
            del self._hubs[hub.stream_id]

    async def _handler(self, ws: ServerConnection) -> None:
        route = parse_path(ws.request.path, ws.request.headers)
        try:
            if route.role == "publish":
                await self._publisher(ws, route.stream_id)
            else:
                await self._subscriber(ws, route.stream_id)
        except ConnectionClosed:
            pass
        except Exception as e:  # a bug must not take the server down; tell the client
            log.exception("connection handler failed")
            try:
                await ws.send(encode_event(Error(route.stream_id, 0, ErrorCode.INTERNAL, f"internal error: {e}", True, time.time())))
                await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
            except ConnectionClosed:
                pass

    # ------------------------------------------------------------------ events out
    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def _dispatch(self, hub: _Hub, events: list[Event | str], to_publisher: bool = True) -> None:
        """Queue events for every subscriber of the stream (and its errors for the
        publisher, unless ``to_publisher`` is False); never blocks."""
        hub.finals += sum(isinstance(ev, Final) for ev in events)
        for ws, q in list(hub.subscribers.items()):
            for ev in events:
                if not q.put(ev):
                    log.warning("subscriber of %s too slow: disconnecting", hub.stream_id)
                    self._spawn(ws.close(CloseCode.SLOW_CONSUMER, "subscriber too slow: finals would be dropped"))
                    break
        if to_publisher and isinstance(hub.publisher, ServerConnection):
            for ev in events:
                if isinstance(ev, Error):
                    self._spawn(self._safe_send(hub.publisher, encode_event(ev)))

    async def _safe_send(self, ws: ServerConnection, text: str) -> None:
        try:
            await ws.send(text)
        except ConnectionClosed:
            pass

    async def _sender(self, ws: ServerConnection, hub: _Hub, q: SubscriberQueue) -> None:
        while True:
            item = await q.get()
            if isinstance(item, str):
                text = item
            else:
                if isinstance(item, Stats):  # per subscriber: its drops; per stream: receive/send timings
                    stage = {**item.stage_ms, **{k: v for k, v in hub.timings.summary().items() if v}}
                    item = dataclasses.replace(item, dropped_partials=q.dropped_partials, stage_ms=stage)
                text = encode_event(item)
            t0 = time.perf_counter()
            try:
                await ws.send(text)
            except ConnectionClosed:
                return
            if isinstance(item, (Partial, Final)):
                hub.timings.add("send", 1000.0 * (time.perf_counter() - t0))

    # ------------------------------------------------------------------ subscribers
    async def _subscriber(self, ws: ServerConnection, stream_id: str) -> None:
        hub = self._hub(stream_id)
        q = SubscriberQueue(self.config.subscriber_queue, self.config.subscriber_hard_limit)
        hub.subscribers[ws] = q
        p = self.pipeline
        q.put(message("hello", stream_id=stream_id, live=hub.session is not None, tracks=list(p.tracks),
                      sample_rate=p.sample_rate, chunk_samples=p.chunk_samples,
                      algorithmic_latency_ms=p.algorithmic_latency_ms, server=__version__))
        sender = asyncio.ensure_future(self._sender(ws, hub, q))
        try:
            async for msg in ws:
                try:
                    m = parse_client_message(msg) if isinstance(msg, str) else None
                except ProtocolError as e:
                    q.put(Error(stream_id, 0, e.code, str(e), False, time.time()))
                    continue
                if isinstance(m, Ping):
                    q.put(message("pong"))
                else:
                    q.put(Error(stream_id, 0, ErrorCode.UNEXPECTED_MESSAGE,
                                "subscribers only receive events (they may send {\"type\": \"ping\"})", False, time.time()))
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            hub.subscribers.pop(ws, None)
            self._maybe_forget(hub)


async def serve_forever(server: CaptionServer, local_sources: dict[str, AudioSource] | None = None,
                        stop: asyncio.Event | None = None, on_ready=None) -> None:
    """Start ``server``, attach local sources, run until SIGTERM/SIGINT (or ``stop``), shut down cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: rely on ``stop``
    await server.start()
    for sid, src in (local_sources or {}).items():
        await server.add_local_source(sid, src)
    if on_ready is not None:
        on_ready(server)
    await stop.wait()
    await server.stop()


class ServerThread:
    """Run a :class:`CaptionServer` on its own event loop in a background thread (demo,
    benchmarks, tests). ``start()`` returns once it listens; ``stop()`` shuts it down cleanly."""

    def __init__(self, pipeline: StreamingPipeline, config: ServerConfig = ServerConfig(),
                 session_config: SessionConfig = SessionConfig(), local_sources: dict[str, AudioSource] | None = None):
        self.server = CaptionServer(pipeline, config, session_config)
        self._sources = local_sources
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout_s: float = 30.0) -> "ServerThread":
        def run():
            async def main():
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                await serve_forever(self.server, self._sources, self._stop, on_ready=lambda s: self._ready.set())
            try:
                asyncio.run(main())
            except BaseException as e:  # surfaced by start()/stop()
                self.error = e
                self._ready.set()

        self._thread = threading.Thread(target=run, name="jrsv-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise RuntimeError(f"server did not start: {self.error!r}")
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
