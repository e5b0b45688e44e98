"""Fault injection on the real server over loopback websockets (tiny pipeline): an exception
in one stream's separator / recognizer / decoder step, a decoder step that stalls past its
budget, a publisher killed mid-message, a subscriber that never reads, a flood of
connects/disconnects at the limits, SIGTERM under load. Each time only the faulty stream
fails (fatal ``model_error`` + close 1011 to its publisher), every other stream keeps its
latency and loses no final, and shutdown flushes the finals of every open segment."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from jrsv_stream.serve.protocol import CloseCode, decode_server_message, encode_pcm
from jrsv_stream.serve.server import CaptionServer, ServerConfig
from jrsv_stream.stream.events import Error, Final, Partial
from jrsv_stream.stream.faults import Fault, FaultPlan
from tests.streaming_helpers import serve_process
from jrsv_stream.nn.tiny import TinyPipeline

REPO = Path(__file__).resolve().parents[1]
CHUNK = 1280  # 80 ms
FAULT_CHUNK = 6


def _audio(seed: int, seconds: float = 2.5) -> np.ndarray:
    """Noise bursts with pauses (endpoints): partials and finals on both tracks."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 0.6 * t) > -0.2)).astype(np.float32)


def run(coro, timeout_s: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def url(base: str, role: str, sid: str) -> str:
    return f"{base}/v1/{role}/{sid}"


async def recv(ws, timeout_s: float = 15.0):
    return decode_server_message(await asyncio.wait_for(ws.recv(), timeout_s))


async def publish(base: str, sid: str, x: np.ndarray, realtime: bool = True) -> dict:
    """Publish ``x`` (paced at real time), end; returns what the publisher saw:
    ``errors``, ``ended`` (the message or None), ``close_code``."""
    out = {"errors": [], "ended": None, "close_code": None}
    ws = await connect(url(base, "publish", sid), proxy=None)
    await ws.send('{"type": "start"}')
    assert (await recv(ws))["type"] == "ready"

    async def read():
        try:
            async for raw in ws:
                m = decode_server_message(raw)
                if isinstance(m, Error):
                    out["errors"].append(m)
                elif isinstance(m, dict) and m["type"] == "ended":
                    out["ended"] = m
        except ConnectionClosed:
            pass

    reader = asyncio.ensure_future(read())
    try:
        t0 = time.monotonic()
        for i, a in enumerate(range(0, len(x), 320)):
            await ws.send(encode_pcm(x[a:a + 320]))
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))
        await ws.send('{"type": "end"}')
    except ConnectionClosed:
        pass
    await asyncio.wait_for(reader, 30)
    out["close_code"] = ws.close_code
    return out


async def subscribe_one_run(base: str, sid: str, ready: asyncio.Event | None = None, timeout_s: float = 30.0) -> list:
    """Connect, read one stream run up to its ``stream ended`` message (inclusive)."""
    async with connect(url(base, "subscribe", sid), proxy=None) as ws:
        assert (await recv(ws))["type"] == "hello"
        if ready is not None:
            ready.set()
        msgs = []
        while True:
            m = await recv(ws, timeout_s)
            msgs.append(m)
            if isinstance(m, dict) and m.get("type") == "stream" and m.get("state") == "ended":
                return msgs


def finals_of(msgs) -> list[Final]:
    return [m for m in msgs if isinstance(m, Final)]


def assert_no_final_lost(msgs) -> None:
    """The run's ``stream ended`` counts the finals the stream emitted: all arrived, once
    each, and every segment that showed a partial got its final."""
    fin = finals_of(msgs)
    assert msgs[-1]["finals"] == len(fin)
    ids = [f.segment_id for f in fin]
    assert len(ids) == len(set(ids))
    assert {m.segment_id for m in msgs if isinstance(m, Partial)} <= set(ids)


def health(port: int) -> dict:
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5))


# ---------------------------------------------------------------------- one stream's model step fails
@pytest.mark.parametrize("stage,kind", [("separator", "raise"), ("recognizer", "raise"), ("decoder", "raise"),
                                        ("decoder", "stall")])
def test_a_faulty_stream_fails_alone(stage, kind):
    plan = FaultPlan([Fault("bad", stage, kind, from_chunk=FAULT_CHUNK, stall_s=2.5)])

    async def main():
        srv = await CaptionServer(TinyPipeline(chunk_samples=CHUNK),
                                  ServerConfig(port=0, max_model_errors=3, step_timeout_s=0.8), faults=plan).start()
        try:
            ready = {sid: asyncio.Event() for sid in ("bad", "good")}
            subs = {sid: asyncio.ensure_future(subscribe_one_run(srv.url, sid, ready[sid])) for sid in ready}
            for e in ready.values():
                await e.wait()
            pubs = await asyncio.gather(publish(srv.url, "bad", _audio(1)), publish(srv.url, "good", _audio(2)))
            got = {sid: await t for sid, t in subs.items()}
            return dict(zip(("bad", "good"), pubs)), got, await asyncio.to_thread(health, srv.port)
        finally:
            await srv.stop()

    pubs, subs, h = run(main())
    assert plan.fired.get("bad", 0) >= 1 and "good" not in plan.fired
    # the faulty stream: a fatal model_error to its publisher, closed with 1011, no "ended"
    bad = pubs["bad"]
    assert bad["close_code"] == CloseCode.INTERNAL_ERROR and bad["ended"] is None
    assert bad["errors"] and bad["errors"][-1].code == "model_error" and bad["errors"][-1].fatal
    fatal = [m for m in subs["bad"] if isinstance(m, Error) and m.fatal]
    assert len(fatal) == 1 and fatal[0].code == "model_error" and "stream failed" in fatal[0].message
    assert_no_final_lost(subs["bad"])  # its open segments were still closed by finals
    assert all(f.audio_time_s <= (FAULT_CHUNK + 4) * CHUNK / 16000 + 1e-6 for f in finals_of(subs["bad"]))
    # the healthy stream: no error, every final, and its latency untouched by the fault
    good = pubs["good"]
    assert good["close_code"] == CloseCode.NORMAL and not good["errors"] and good["ended"]["audio_s"] == pytest.approx(2.5, abs=0.01)
    assert not [m for m in subs["good"] if isinstance(m, Error)]
    assert finals_of(subs["good"])
    assert_no_final_lost(subs["good"])
    lat = [m.latency_ms for m in subs["good"] if isinstance(m, (Partial, Final)) and m.latency_ms is not None]
    assert lat and float(np.percentile(lat, 95)) < 1000.0  # a stall that leaked would be >= 2500 ms
    assert h["streams_failed"] == 1 and h["status"] == "ok"


# ---------------------------------------------------------------------- network faults
def _masked_binary_header(length: int) -> bytes:
    assert 126 <= length < 65536
    return bytes([0x82, 0x80 | 126]) + struct.pack("!H", length) + b"\x01\x02\x03\x04"


def test_publisher_killed_mid_message_and_a_subscriber_that_never_reads():
    async def main():
        srv = await CaptionServer(TinyPipeline(chunk_samples=CHUNK), ServerConfig(port=0)).start()
        try:
            ready = {sid: asyncio.Event() for sid in ("cut", "good")}
            subs = {sid: asyncio.ensure_future(subscribe_one_run(srv.url, sid, ready[sid])) for sid in ready}
            for e in ready.values():
                await e.wait()
            # a subscriber of the healthy stream that never reads, with a tiny receive window
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect(("127.0.0.1", srv.port))
            mute = await connect(url(srv.url, "subscribe", "good"), proxy=None, sock=sock, max_queue=1)
            good = asyncio.ensure_future(publish(srv.url, "good", _audio(2, 3.0)))
            cut = await connect(url(srv.url, "publish", "cut"), proxy=None)
            await cut.send('{"type": "start"}')
            await recv(cut)
            x = _audio(3, 1.0)
            for a in range(0, len(x), 320):
                await cut.send(encode_pcm(x[a:a + 320]))
                await asyncio.sleep(0.02)
            cut.transport.write(_masked_binary_header(640) + b"\x00" * 100)  # a frame cut short...
            await asyncio.sleep(0.05)
            cut.transport.abort()  # ...by a TCP reset
            got_cut = await subs["cut"]
            pub_good = await good
            got_good = await subs["good"]
            h = await asyncio.to_thread(health, srv.port)
            mute.transport.abort()
            return got_cut, pub_good, got_good, h
        finally:
            await srv.stop()

    got_cut, pub_good, got_good, h = run(main())
    assert_no_final_lost(got_cut)  # the reset stream's open segments were flushed
    assert finals_of(got_cut)[-1].audio_time_s == pytest.approx(1.0, abs=0.09)
    assert pub_good["close_code"] == CloseCode.NORMAL and not pub_good["errors"]
    assert not [m for m in got_good if isinstance(m, Error)] and finals_of(got_good)
    assert_no_final_lost(got_good)
    assert h["streams"] == 0 and h["streams_failed"] == 0 and h["subscribers"] == 1  # only the mute one is left


def test_flood_of_connects_and_disconnects_at_the_limits():
    async def attempt(base: str, role: str, sid: str, abort: bool) -> int:
        try:
            ws = await connect(url(base, role, sid), proxy=None, open_timeout=20)
        except InvalidStatus as e:
            return e.response.status_code
        if abort:
            ws.transport.abort()
        else:
            await ws.close()
        return 101

    async def main():
        srv = await CaptionServer(TinyPipeline(chunk_samples=CHUNK),
                                  ServerConfig(port=0, max_streams=2, max_subscribers_per_stream=3)).start()
        try:
            ready = asyncio.Event()
            sub = asyncio.ensure_future(subscribe_one_run(srv.url, "good", ready))
            await ready.wait()
            good = asyncio.ensure_future(publish(srv.url, "good", _audio(4, 3.0)))
            await asyncio.sleep(0.3)
            codes = []
            for wave in range(4):
                jobs = [attempt(srv.url, "publish" if i % 3 == 0 else "subscribe", f"s{i % 5}" if i % 3 == 0 else "good",
                                abort=bool(i % 2)) for i in range(40)]
                codes += await asyncio.gather(*jobs)
            pub = await good
            got = await sub
            await asyncio.sleep(0.3)
            return codes, pub, got, await asyncio.to_thread(health, srv.port)
        finally:
            await srv.stop()

    codes, pub, got, h = run(main())
    assert set(codes) <= {101, 503, 409} and codes.count(101) > 10 and 503 in codes
    assert pub["close_code"] == CloseCode.NORMAL and not pub["errors"]
    assert not [m for m in got if isinstance(m, Error)] and finals_of(got)
    assert_no_final_lost(got)
    assert h["streams"] == 0 and h["subscribers"] == 0 and h["status"] == "ok"  # nothing leaked


# ---------------------------------------------------------------------- SIGTERM under load
def test_sigterm_under_load_flushes_every_open_segment_and_exits_0():
    with serve_process("--port", "0", "--chunk-ms", "80", "--threads", "1", "--pipeline", "tiny") as (proc, base):
        async def feed(sid: str, stop: asyncio.Event):
            ws = await connect(url(base, "publish", sid), proxy=None)
            await ws.send('{"type": "start"}')
            await recv(ws)
            x = 0.2 * np.random.default_rng(hash(sid) % 100).standard_normal(16000 * 30).astype(np.float32)  # no pause
            try:
                for a in range(0, len(x), 320):
                    if stop.is_set():
                        break
                    await ws.send(encode_pcm(x[a:a + 320]))
                    await asyncio.sleep(0.02)
                await ws.wait_closed()
            except ConnectionClosed:
                pass
            return ws.close_code

        async def read_all(ws) -> list:
            msgs = []
            try:
                while True:
                    msgs.append(await recv(ws, 20))
            except ConnectionClosed:
                pass
            return msgs

        async def main():
            subs = {}
            for sid in ("a", "b"):
                for k in range(2):
                    ws = await connect(url(base, "subscribe", sid), proxy=None)
                    await recv(ws)
                    subs[(sid, k)] = ws
            stop = asyncio.Event()
            feeders = [asyncio.ensure_future(feed(sid, stop)) for sid in ("a", "b")]
            readers = {key: asyncio.ensure_future(read_all(ws)) for key, ws in subs.items()}
            await asyncio.sleep(1.5)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            got = {key: await r for key, r in readers.items()}
            stop.set()
            pub_codes = await asyncio.gather(*feeders)
            return got, {key: ws.close_code for key, ws in subs.items()}, pub_codes, t0

        got, codes, pub_codes, t0 = run(main(), 60)
        assert proc.wait(20) == 0
        took = time.monotonic() - t0
    assert took < 15.0
    assert set(codes.values()) == {CloseCode.GOING_AWAY} and set(pub_codes) == {CloseCode.GOING_AWAY}
    for (sid, _), msgs in got.items():
        assert msgs[-1]["type"] == "stream" and msgs[-1]["state"] == "ended"
        assert_no_final_lost(msgs)
        assert {f.track for f in finals_of(msgs)} and finals_of(msgs)[-1].audio_time_s > 1.0
    for sid in ("a", "b"):  # both subscribers of a stream got the same finals
        key = lambda ms: [(f.segment_id, f.text) for f in finals_of(ms)]
        assert key(got[(sid, 0)]) == key(got[(sid, 1)])
