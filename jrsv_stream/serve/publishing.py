"""The publishing side of the caption server (:class:`jrsv_stream.serve.server.CaptionServer`
inherits it): a publisher connection or a local source feeds a stream's session; chunks
are decoded on the worker, a failing or stalled stream fails alone, and a stream's finals
are flushed when it ends."""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from jrsv_stream.audio.sources import AudioSource
from jrsv_stream.serve.fanout import _Hub
from jrsv_stream.serve.protocol import (CloseCode, End, ErrorCode, Ping, ProtocolError, Start, decode_pcm, message,
                                        parse_client_message)
from jrsv_stream.stream.captions import CaptionOptions, merge_options
from jrsv_stream.stream.events import Error, Event, encode_event
from jrsv_stream.stream.session import StreamSession
from jrsv_stream.stream.session_state import Chunk
from jrsv_stream.stream.state_pool import PoolFull
from jrsv_stream.stream.worker import QueueFull, WorkerStopped

log = logging.getLogger("jrsv_stream.serve")


class PublisherMixin:
    """Publisher connections, chunk processing and local sources of :class:`CaptionServer`
    (methods only; the state lives on the server)."""

    # ------------------------------------------------------------------ publishers
    async def _open_session(self, hub: _Hub, options: CaptionOptions = CaptionOptions()) -> None:
        # off the event loop: joining may wait for a slot freed behind the worker's current step
        options = merge_options(self.config.caption_options, options)
        hub.session = await asyncio.to_thread(StreamSession, self.worker, hub.stream_id, self.session_config,
                                              options=options)
        hub.finishing = None
        hub.finals, hub.model_errors, hub.failed, hub.stalled = 0, 0, None, None
        hub.chunks = asyncio.Queue(self.config.chunk_queue)
        hub.proc_task = asyncio.ensure_future(self._process(hub, hub.session))
        self._dispatch(hub, [message("stream", stream_id=hub.stream_id, state="live", tracks=list(hub.session.caption_tracks))])

    async def _send_error(self, ws: ServerConnection, hub: _Hub, code: str, text: str, fatal: bool = False) -> None:
        # seq 0: a message to this connection only, outside the stream's event sequence
        await self._safe_send(ws, encode_event(Error(hub.stream_id, 0, code, text, fatal, time.time())))

    async def _publisher(self, ws: ServerConnection, stream_id: str) -> None:
        hub = self._hub(stream_id)
        if hub.publisher is not None:  # raced past the handshake check
            await self._send_error(ws, hub, ErrorCode.STREAM_BUSY, f"stream {stream_id!r} already has a publisher", True)
            await ws.close(CloseCode.STREAM_BUSY, "stream already has a publisher")
            return
        hub.publisher = ws
        start: Start | None = None
        graceful = False
        errors = 0
        try:
            async for msg in ws:
                if self._stopping:
                    break
                if isinstance(msg, str):
                    try:
                        m = parse_client_message(msg)
                    except ProtocolError as e:
                        errors += 1
                        await self._send_error(ws, hub, e.code, str(e))
                    else:
                        if isinstance(m, Start):
                            if start is not None:
                                errors += 1
                                await self._send_error(ws, hub, ErrorCode.ALREADY_STARTED, "stream already started; send 'end' first")
                            else:
                                try:
                                    await self._open_session(hub, m.options)
                                except PoolFull as e:
                                    await self._send_error(ws, hub, ErrorCode.MAX_STREAMS, str(e), True)
                                    await ws.close(CloseCode.TRY_AGAIN_LATER, "no free stream slot")
                                    return
                                start = m
                                p = self.pipeline
                                s = hub.session
                                await ws.send(message("ready", stream_id=stream_id, sample_rate=p.sample_rate, dtype=m.dtype,
                                                      chunk_samples=p.chunk_samples, tracks=list(s.caption_tracks),
                                                      algorithmic_latency_ms=p.algorithmic_latency_ms,
                                                      options=s.options.to_dict()))
                        elif isinstance(m, End):
                            graceful = True
                            break
                        elif isinstance(m, Ping):
                            await ws.send(message("pong"))
                else:
                    if start is None:
                        errors += 1
                        await self._send_error(ws, hub, ErrorCode.NOT_STARTED, "send a 'start' message before audio")
                    else:
                        try:
                            x = decode_pcm(msg, start, self.session_config.max_samples_per_feed)
                        except ProtocolError as e:
                            errors += 1
                            await self._send_error(ws, hub, e.code, str(e))
                        else:
                            await self._feed(hub, x)
                if errors > self.config.max_errors_per_publisher:
                    await ws.close(CloseCode.TOO_MANY_ERRORS, "too many invalid messages")
                    break
        except ConnectionClosed:
            pass  # abrupt disconnect: the stream is still flushed below
        finally:
            await self._finish_stream(hub)
            if hub.publisher is ws:
                hub.publisher = None
            self._maybe_forget(hub)
        if graceful:
            try:
                await ws.send(message("ended", stream_id=stream_id, audio_s=round(hub.audio_s_total, 3)))
                await ws.close(CloseCode.NORMAL, "stream ended")
            except ConnectionClosed:
                pass
        elif self._stopping:  # left the loop for the shutdown (returning would close with 1000)
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")

    async def _feed(self, hub: _Hub, x) -> None:
        s = hub.session
        if s is None or hub.finishing is not None:
            return
        t0 = time.perf_counter()
        try:
            chunks = s.feed(x)
        except ValueError as e:
            if isinstance(hub.publisher, ServerConnection):
                await self._send_error(hub.publisher, hub, ErrorCode.BAD_AUDIO, str(e))
            return
        hub.audio_s_total += len(x) / s.sample_rate
        for c in chunks:
            await hub.chunks.put(c)  # bounded: backpressure to the publisher when the model lags
        hub.timings.add("receive", 1000.0 * (time.perf_counter() - t0))

    async def _run_chunk(self, hub: _Hub, s: StreamSession, c: Chunk) -> list[Event]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                fut = s.submit(c)
                break
            except QueueFull:
                await asyncio.sleep(0.005)  # the worker is saturated: wait (the stream falls behind, others go on)
            except (ValueError, WorkerStopped) as e:
                return s.on_failure(c, e)
        try:
            res = await asyncio.wrap_future(fut)
        except Exception as e:  # this stream's step failed (isolated by the worker)
            return self._chunk_failed(hub, s, c, e)
        decoding = loop.run_in_executor(self._decode_pool, s.on_result, c, res)
        try:
            events = await asyncio.wait_for(asyncio.shield(decoding), self.config.step_timeout_s)
        except TimeoutError:
            hub.stalled = decoding  # its events are dispatched when it returns (_finish_stream)
            return [self._fail_stream(hub, s, f"decoding chunk {c.index} took more than {self.config.step_timeout_s:g} s")]
        hub.model_errors = 0
        return events

    def _chunk_failed(self, hub: _Hub, s: StreamSession, c: Chunk, e: BaseException) -> list[Event]:
        events = s.on_failure(c, e)
        hub.model_errors += 1
        if hub.model_errors >= self.config.max_model_errors:
            events.append(self._fail_stream(hub, s, f"{hub.model_errors} chunks in a row failed (last: {e})"))
        return events

    def _fail_stream(self, hub: _Hub, s: StreamSession, reason: str) -> Error:
        """Mark the stream run failed: the fatal error event; its remaining audio is dropped."""
        log.error("stream %s failed: %s", hub.stream_id, reason)
        hub.failed = reason
        self.streams_failed += 1
        return s.error(ErrorCode.MODEL_ERROR, f"stream failed: {reason}", fatal=True)

    async def _close_failed_publisher(self, ws: ServerConnection, errors: list[Error]) -> None:
        try:
            for ev in errors:
                await ws.send(encode_event(ev))
            await ws.close(CloseCode.INTERNAL_ERROR, "stream failed")
        except ConnectionClosed:
            pass

    async def _next_chunk(self, hub: _Hub, s: StreamSession):
        """The stream's next chunk (None: the end). While waiting for it, what the finals
        lane finishes for the session (a segment's final, a hypothesis) is dispatched at
        once (:meth:`StreamSession.poll`), not held until the next chunk arrives."""
        loop = asyncio.get_running_loop()
        get = asyncio.ensure_future(hub.chunks.get())
        try:
            while True:
                if hub.failed is None and s.poll_ready:
                    events = await loop.run_in_executor(self._decode_pool, s.poll)
                    if events:
                        self._dispatch(hub, events)
                    continue
                futs = [] if hub.failed is not None else s.waiting_on()
                if not futs:
                    return await get
                wake = asyncio.Event()

                def done(_f, wake=wake):  # on the finals lane's thread
                    try:
                        loop.call_soon_threadsafe(wake.set)
                    except RuntimeError:  # the loop is closed (shutdown)
                        pass

                for f in futs:
                    f.add_done_callback(done)
                woke = asyncio.ensure_future(wake.wait())
                await asyncio.wait({get, woke}, return_when=asyncio.FIRST_COMPLETED)
                woke.cancel()
                if get.done():
                    return get.result()
        finally:
            if not get.done():
                get.cancel()

    async def _process(self, hub: _Hub, s: StreamSession) -> None:
        while True:
            c = await self._next_chunk(hub, s)
            if c is None:
                return
            if hub.failed is not None:
                continue  # a failed stream's remaining audio is dropped (the publisher is being closed)
            try:
                events = await self._run_chunk(hub, s, c)
            except Exception as e:  # decoding bug: report, keep the stream going
                log.exception("decoding failed on %s", hub.stream_id)
                events = [s.error(ErrorCode.INTERNAL, f"decoding failed: {type(e).__name__}: {e}")]
                hub.model_errors += 1
                if hub.model_errors >= self.config.max_model_errors:
                    events.append(self._fail_stream(hub, s, f"{hub.model_errors} chunks in a row failed (last: {e})"))
            if hub.failed is None:
                self._dispatch(hub, events)
                continue
            # the stream just failed: subscribers get the events, the publisher its errors and 1011
            self._dispatch(hub, events, to_publisher=False)
            if isinstance(hub.publisher, ServerConnection):
                self._spawn(self._close_failed_publisher(hub.publisher, [ev for ev in events if isinstance(ev, Error)]))

    async def _finish_stream(self, hub: _Hub) -> None:
        """Flush the last partial chunk and finals of the stream, close its session (idempotent)."""
        if hub.session is None:
            return
        if hub.finishing is not None:
            await asyncio.shield(hub.finishing)
            return
        loop = asyncio.get_running_loop()
        hub.finishing = loop.create_future()
        s = hub.session
        try:
            for c in s.final_chunks():
                await hub.chunks.put(c)
            await hub.chunks.put(None)
            if hub.proc_task is not None:
                await hub.proc_task
            session_usable = True
            if hub.stalled is not None:  # let the stalled decode return: its events (finals) are kept
                try:
                    self._dispatch(hub, await asyncio.wait_for(hub.stalled, self.config.step_timeout_s + 60.0), to_publisher=False)
                except TimeoutError:  # still running on a decode thread: the session must not be touched
                    log.error("stalled decode of %s did not return; its open segments are not flushed", hub.stream_id)
                    session_usable = False
                except Exception as e:
                    log.error("stalled decode of %s failed: %r", hub.stream_id, e)
            events = await loop.run_in_executor(self._decode_pool, s.end) if session_usable else []
            self._dispatch(hub, events, to_publisher=hub.failed is None)
            self._dispatch(hub, [message("stream", stream_id=hub.stream_id, state="ended", finals=hub.finals)])
        finally:
            s.close()
            hub.session = None
            hub.proc_task = None
            hub.finishing.set_result(None)

    # ------------------------------------------------------------------ local sources
    async def add_local_source(self, stream_id: str, source: AudioSource, name: str = "local") -> asyncio.Task:
        """Caption a source read by the server itself (e.g. a capture device) as ``stream_id``.

        Returns the pumping task (done when the source ends; the stream's finals are flushed).
        """
        hub = self._hub(stream_id)
        if hub.publisher is not None:
            raise ValueError(f"stream {stream_id!r} already has a publisher")
        hub.publisher = f"{name}:{type(source).__name__}"
        hub.source = source
        await self._open_session(hub)
        t = asyncio.ensure_future(self._pump(hub, source))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
        return t

    async def _pump(self, hub: _Hub, source: AudioSource) -> None:
        it = iter(source)
        try:
            while not self._stopping:
                block = await asyncio.to_thread(next, it, None)
                if block is None or hub.session is None:
                    break
                hub.session.overruns = source.overruns
                await self._feed(hub, block)
        except Exception as e:
            log.error("source of %s failed: %s", hub.stream_id, e)
            if hub.session is not None:
                self._dispatch(hub, [hub.session.error(ErrorCode.SOURCE_ERROR, f"{type(e).__name__}: {e}", True)])
        finally:
            source.close()
            await self._finish_stream(hub)
            hub.publisher = None
            hub.source = None
            self._maybe_forget(hub)
