"""The caption server over real websockets on 127.0.0.1: the full path, health, auth,
limits, every kind of bad input (one test each), abrupt disconnects, isolation of streams,
slow subscribers and clean shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from jrsv_stream.serve.protocol import CloseCode, decode_server_message, encode_pcm
from jrsv_stream.serve.server import CaptionServer, ServerConfig
from jrsv_stream.stream.events import Error, Final, Partial, Stats
from jrsv_stream.nn.tiny import TinyPipeline
from tests.streaming_helpers import serve_process

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
CHUNK = 1280


def _audio(seconds_on: float = 1.0, seconds_off: float = 1.0, seed: int = 0) -> np.ndarray:
    """Noise, silence (an endpoint), noise: gives partials and finals on both tracks."""
    rng = np.random.default_rng(seed)
    on = lambda s: (0.2 * rng.standard_normal(int(s * 16000))).astype(np.float32)
    return np.concatenate([on(seconds_on), np.zeros(int(seconds_off * 16000), np.float32), on(0.5)])


def run(coro, timeout_s: float = 40.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


@asynccontextmanager
async def serving(pipeline=None, **cfg):
    srv = await CaptionServer(pipeline or TinyPipeline(chunk_samples=CHUNK), ServerConfig(port=0, **cfg)).start()
    try:
        yield srv
    finally:
        await srv.stop()


def url(srv, role, sid, token=None):
    return f"{srv.url}/v1/{role}/{sid}" + (f"?token={token}" if token else "")


async def recv_msg(ws, timeout_s: float = 10.0):
    return decode_server_message(await asyncio.wait_for(ws.recv(), timeout_s))


async def start_publisher(srv, sid, dtype="s16le", **kw):
    ws = await connect(url(srv, "publish", sid, kw.pop("token", None)), proxy=None, **kw)
    await ws.send(json.dumps({"v": 1, "type": "start", "sample_rate": 16000, "dtype": dtype}))
    ready = await recv_msg(ws)
    assert ready["type"] == "ready" and ready["chunk_samples"] == CHUNK
    return ws


async def send_audio(ws, x, dtype="s16le", frame=640):
    for a in range(0, len(x), frame):
        await ws.send(encode_pcm(x[a:a + frame], dtype))


async def end_stream(ws) -> dict:
    """Send end; return the 'ended' message (errors before it are collected in it)."""
    await ws.send(json.dumps({"type": "end"}))
    errors = []
    while True:
        m = await recv_msg(ws)
        if isinstance(m, Error):
            errors.append(m)
        elif isinstance(m, dict) and m["type"] == "ended":
            m["errors"] = errors
            await ws.wait_closed()
            assert ws.close_code == CloseCode.NORMAL
            return m


async def collect_until_ended(ws, timeout_s: float = 20.0) -> list:
    out = []
    while True:
        m = await recv_msg(ws, timeout_s)
        out.append(m)
        if isinstance(m, dict) and m.get("type") == "stream" and m.get("state") == "ended":
            return out


def _captions(msgs):
    return [m for m in msgs if isinstance(m, (Partial, Final))]


# ---------------------------------------------------------------------- the full path
def test_publish_to_two_subscribers_end_to_end():
    async def main():
        async with serving() as srv:
            subs = [await connect(url(srv, "subscribe", "show"), proxy=None) for _ in range(2)]
            hellos = [await recv_msg(s) for s in subs]
            assert all(h["type"] == "hello" and h["live"] is False and h["tracks"] == ["speech", "lyrics"] for h in hellos)
            pub = await start_publisher(srv, "show")
            x = _audio()
            await send_audio(pub, x)
            ended = await end_stream(pub)
            got = [await collect_until_ended(s) for s in subs]
            for s in subs:
                await s.close()
            return ended, got, len(x) / 16000

    ended, got, dur = run(main())
    assert ended["audio_s"] == pytest.approx(dur, abs=1e-3) and not ended["errors"]
    a, b = got
    assert a[0] == {"v": 1, "type": "stream", "stream_id": "show", "state": "live", "tracks": ["speech", "lyrics"]}
    finals_a = [m for m in a if isinstance(m, Final)]
    assert finals_a and [f.text for f in finals_a] == [f.text for f in b if isinstance(f, Final)]
    assert {f.track for f in finals_a if f.text} == {"speech", "lyrics"}
    seqs = [m.seq for m in a if hasattr(m, "seq")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # every partial's segment is closed by a final later; finals arrive once per segment
    caps = _captions(a)
    closed = [f.segment_id for f in caps if isinstance(f, Final)]
    assert len(closed) == len(set(closed))
    assert {p.segment_id for p in caps if isinstance(p, Partial)} <= set(closed)
    for f in finals_a:
        assert all(0 <= w[1] <= w[2] <= dur + 1e-6 and 0.0 <= w[3] <= 1.0 for w in f.words)
    assert any(isinstance(m, Stats) for m in a)


def test_health_endpoint():
    async def main():
        async with serving(max_streams=3) as srv:
            h0 = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=5)))
            pub = await start_publisher(srv, "a")
            h1 = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=5)))
            await end_stream(pub)
            return h0, h1

    h0, h1 = run(main())
    assert h0["status"] == "ok" and h0["streams"] == 0 and h0["max_streams"] == 3 and h0["device"] in ("cpu", "cuda")
    assert h0["pipeline"]["chunk_samples"] == CHUNK
    assert h1["streams"] == 1


# ---------------------------------------------------------------------- access control and limits
def test_tokens_per_role():
    async def main():
        async with serving(publish_token="pub", subscribe_token="sub") as srv:
            codes = []
            for u, headers in [(url(srv, "publish", "a"), None), (url(srv, "publish", "a", "sub"), None),
                               (url(srv, "subscribe", "a", "pub"), None), (url(srv, "subscribe", "a"), None)]:
                with pytest.raises(InvalidStatus) as e:
                    await connect(u, proxy=None)
                codes.append(e.value.response.status_code)
            ok = await connect(url(srv, "subscribe", "a", "sub"), proxy=None)
            assert (await recv_msg(ok))["type"] == "hello"
            ok2 = await connect(url(srv, "subscribe", "a"), proxy=None, additional_headers={"Authorization": "Bearer sub"})
            assert (await recv_msg(ok2))["type"] == "hello"
            pub = await start_publisher(srv, "a", token="pub")
            await end_stream(pub)
            await ok.close()
            await ok2.close()
            return codes

    assert run(main()) == [401, 401, 401, 401]


def test_origin_check():
    async def main():
        async with serving(allowed_origins=("https://studio.example",)) as srv:
            with pytest.raises(InvalidStatus) as e:
                await connect(url(srv, "subscribe", "a"), proxy=None, origin="https://evil.example")
            good = await connect(url(srv, "subscribe", "a"), proxy=None, origin="https://studio.example")
            plain = await connect(url(srv, "subscribe", "a"), proxy=None)  # non-browser: no Origin header
            await good.close()
            await plain.close()
            return e.value.response.status_code

    assert run(main()) == 403


def test_unknown_path_and_max_streams_and_busy_stream():
    async def main():
        async with serving(max_streams=1) as srv:
            with pytest.raises(InvalidStatus) as e404:
                await connect(f"{srv.url}/v1/watch/a", proxy=None)
            pub = await start_publisher(srv, "a")
            with pytest.raises(InvalidStatus) as e409:
                await connect(url(srv, "publish", "a"), proxy=None)
            with pytest.raises(InvalidStatus) as e503:
                await connect(url(srv, "publish", "b"), proxy=None)
            await end_stream(pub)
            pub2 = await start_publisher(srv, "b")  # the slot is free again
            await end_stream(pub2)
            return e404.value.response.status_code, e409.value.response.status_code, e503.value.response.status_code

    assert run(main()) == (404, 409, 503)


# ---------------------------------------------------------------------- bad input: one test each
async def _bad_input_case(send_bad, expect_code: str, dtype: str = "s16le", start: bool = True):
    """A publisher sends something bad between good audio: it gets an error event with the
    code, its stream goes on, and a second stream is unaffected."""
    async with serving() as srv:
        other = await start_publisher(srv, "other")
        sub_other = await connect(url(srv, "subscribe", "other"), proxy=None)
        await recv_msg(sub_other)
        if start:
            pub = await start_publisher(srv, "bad", dtype=dtype)
        else:
            pub = await connect(url(srv, "publish", "bad"), proxy=None)
        x = _audio(0.5, 0.2)
        await send_bad(pub)
        err = await recv_msg(pub)
        if not start:
            await pub.send(json.dumps({"type": "start"}))
            assert (await recv_msg(pub))["type"] == "ready"
        await send_audio(pub, x, dtype)
        await send_audio(other, x)
        ended_bad = await end_stream(pub)
        ended_other = await end_stream(other)
        other_msgs = await collect_until_ended(sub_other)
        await sub_other.close()
        return err, ended_bad, ended_other, other_msgs


def _check_bad(result, code):
    err, ended_bad, ended_other, other_msgs = result
    assert isinstance(err, Error) and err.code == code and not err.fatal and err.message
    assert ended_bad["audio_s"] > 0.9 and not ended_bad["errors"]  # the bad stream still got its audio through
    assert not ended_other["errors"] and not [m for m in other_msgs if isinstance(m, Error)]
    assert [m for m in other_msgs if isinstance(m, Final)]


def test_malformed_json():
    _check_bad(run(_bad_input_case(lambda ws: ws.send("{not json"), "bad_json")), "bad_json")


def test_unknown_message_type():
    _check_bad(run(_bad_input_case(lambda ws: ws.send('{"v": 1, "type": "dance"}'), "unknown_type")), "unknown_type")


def test_odd_byte_count():
    _check_bad(run(_bad_input_case(lambda ws: ws.send(b"\x00\x01\x02"), "bad_audio")), "bad_audio")


def test_nan_and_inf_samples():
    bad = np.array([0.1, np.nan, np.inf, 0.2], dtype="<f4").tobytes()
    _check_bad(run(_bad_input_case(lambda ws: ws.send(bad), "bad_audio", dtype="f32le")), "bad_audio")


def test_wrong_dtype_in_start():
    async def bad(ws):
        await ws.send('{"type": "start", "dtype": "s24le"}')
    _check_bad(run(_bad_input_case(bad, "bad_format", start=False)), "bad_format")


def test_wrong_sample_rate_in_start():
    async def bad(ws):
        await ws.send('{"type": "start", "sample_rate": 44100}')
    _check_bad(run(_bad_input_case(bad, "bad_format", start=False)), "bad_format")


def test_audio_before_start():
    _check_bad(run(_bad_input_case(lambda ws: ws.send(b"\x00\x00" * 100), "not_started", start=False)), "not_started")


def test_second_start():
    _check_bad(run(_bad_input_case(lambda ws: ws.send('{"type": "start"}'), "already_started")), "already_started")


def test_oversized_frame_closes_1009_and_others_go_on():
    async def main():
        async with serving(max_message_bytes=64 * 1024) as srv:
            other = await start_publisher(srv, "other")
            pub = await start_publisher(srv, "big")
            await pub.send(b"\x00" * (64 * 1024 + 2))
            with pytest.raises(ConnectionClosed):
                for _ in range(10):
                    await recv_msg(pub)
            await send_audio(other, _audio(0.5, 0.2))
            ended = await end_stream(other)
            return pub.close_code, ended

    code, ended = run(main())
    assert code == CloseCode.MESSAGE_TOO_BIG
    assert ended["audio_s"] > 0.9 and not ended["errors"]


def test_abrupt_publisher_disconnect_still_flushes_finals():
    async def main():
        async with serving() as srv:
            sub = await connect(url(srv, "subscribe", "a"), proxy=None)
            await recv_msg(sub)
            other = await start_publisher(srv, "b")
            pub = await start_publisher(srv, "a")
            x = 0.2 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)  # no pause: no endpoint yet
            await send_audio(pub, x)
            await asyncio.sleep(0.5)
            pub.transport.abort()  # TCP reset, no close frame
            msgs = await collect_until_ended(sub)
            await send_audio(other, _audio(0.5, 0.2))
            ended = await end_stream(other)
            await sub.close()
            return msgs, ended

    msgs, ended = run(main())
    finals = [m for m in msgs if isinstance(m, Final)]
    assert finals and finals[-1].audio_time_s == pytest.approx(1.0, abs=0.05)
    parts = {m.segment_id for m in msgs if isinstance(m, Partial)}
    assert parts <= {f.segment_id for f in finals}  # every shown partial got its final
    assert not ended["errors"] and ended["audio_s"] > 0.9


class FlakyPipeline(TinyPipeline):
    """The model raises on chunks that contain the sample value 0.75 (a stream's bad luck)."""

    def step(self, audio, state):
        if bool((audio == 0.75).any()):
            raise RuntimeError("kaboom")
        return super().step(audio, state)


def test_model_exception_on_one_stream_does_not_affect_another():
    async def main():
        async with serving(FlakyPipeline(chunk_samples=CHUNK), max_wait_ms=30) as srv:
            subs = {}
            for sid in ("bad", "good"):
                subs[sid] = await connect(url(srv, "subscribe", sid), proxy=None)
                await recv_msg(subs[sid])
            pubs = {sid: await start_publisher(srv, sid, dtype="f32le") for sid in ("bad", "good")}
            xb = _audio(seed=3)
            xb[5000] = 0.75
            await asyncio.gather(send_audio(pubs["bad"], xb, "f32le"), send_audio(pubs["good"], _audio(seed=4), "f32le"))
            await asyncio.gather(*(end_stream(p) for p in pubs.values()))
            out = {sid: await collect_until_ended(s) for sid, s in subs.items()}
            for s in subs.values():
                await s.close()
            return out

    out = run(main())
    errs = [m for m in out["bad"] if isinstance(m, Error)]
    assert len(errs) == 1 and errs[0].code == "model_error" and "kaboom" in errs[0].message
    assert [m for m in out["bad"] if isinstance(m, Final)]  # the bad stream itself recovers
    assert not [m for m in out["good"] if isinstance(m, Error)] and [m for m in out["good"] if isinstance(m, Final)]


def test_subscriber_messages():
    async def main():
        async with serving() as srv:
            sub = await connect(url(srv, "subscribe", "a"), proxy=None)
            await recv_msg(sub)
            await sub.send('{"type": "ping"}')
            pong = await recv_msg(sub)
            await sub.send("garbage")
            e1 = await recv_msg(sub)
            await sub.send('{"type": "start"}')
            e2 = await recv_msg(sub)
            await sub.close()
            return pong, e1, e2

    pong, e1, e2 = run(main())
    assert pong["type"] == "pong" and e1.code == "bad_json" and e2.code == "unexpected_message"


def test_slow_subscriber_loses_partials_not_finals_and_blocks_nobody():
    async def main():
        async with serving(subscriber_queue=6, subscriber_hard_limit=10_000) as srv:
            slow = await connect(url(srv, "subscribe", "a"), proxy=None)
            await recv_msg(slow)
            (server_side,) = srv._hubs["a"].subscribers  # its network stalls until the fast one is done
            real_send = server_side.send
            gate = asyncio.Event()

            async def stalled_send(msg, *a, **kw):
                await gate.wait()
                await real_send(msg, *a, **kw)

            server_side.send = stalled_send
            fast = await connect(url(srv, "subscribe", "a"), proxy=None)
            await recv_msg(fast)
            pub = await start_publisher(srv, "a")
            t0 = time.monotonic()
            await send_audio(pub, _audio(2.0, 1.0))
            await end_stream(pub)
            fast_msgs = await collect_until_ended(fast)
            fast_took = time.monotonic() - t0
            gate.set()
            slow_msgs = await collect_until_ended(slow, 30)
            stalled = await connect(url(srv, "subscribe", "a"), proxy=None, max_queue=1)  # never reads
            stalled.transport.abort()  # and vanishes
            await fast.close()
            await slow.close()
            return fast_msgs, slow_msgs, fast_took

    fast, slow, fast_took = run(main())
    key = lambda ms: [(m.segment_id, m.text) for m in ms if isinstance(m, Final)]
    assert key(slow) == key(fast) and key(fast)  # every final reached the stalled subscriber
    n_part = lambda ms: sum(isinstance(m, Partial) for m in ms)
    assert n_part(slow) < n_part(fast)  # superseded partials were dropped for it
    stats = [m for m in slow if isinstance(m, Stats)]
    assert stats and stats[-1].dropped_partials > 0
    assert fast_took < 5.0  # the fast subscriber (and the stream) did not wait for the stalled one


# ---------------------------------------------------------------------- shutdown
def test_stop_flushes_finals_and_closes_1001():
    async def main():
        srv = await CaptionServer(TinyPipeline(chunk_samples=CHUNK), ServerConfig(port=0)).start()
        sub = await connect(url(srv, "subscribe", "a"), proxy=None)
        await recv_msg(sub)
        pub = await start_publisher(srv, "a")
        await send_audio(pub, 0.2 * np.random.default_rng(2).standard_normal(12000).astype(np.float32))
        await asyncio.sleep(0.3)
        msgs = []

        async def read():
            try:
                while True:
                    msgs.append(await recv_msg(sub))
            except ConnectionClosed:
                pass

        reader = asyncio.ensure_future(read())
        await srv.stop()
        await reader
        await pub.wait_closed()
        return msgs, sub.close_code, pub.close_code

    msgs, sub_code, pub_code = run(main())
    assert [m for m in msgs if isinstance(m, Final)]
    finals = [m for m in msgs if isinstance(m, Final)]
    assert msgs[-1] == {"v": 1, "type": "stream", "stream_id": "a", "state": "ended", "finals": len(finals)}
    assert sub_code == CloseCode.GOING_AWAY and pub_code == CloseCode.GOING_AWAY


def test_sigterm_on_the_serve_command_flushes_finals():
    with serve_process("--port", "0", "--chunk-ms", "80", "--threads", "1", "--pipeline", "tiny") as (proc, server_url):
        async def main():
            sub = await connect(f"{server_url}/v1/subscribe/a", proxy=None)
            await recv_msg(sub)
            pub = await connect(f"{server_url}/v1/publish/a", proxy=None)
            await pub.send('{"type": "start"}')
            await recv_msg(pub)
            await send_audio(pub, 0.2 * np.random.default_rng(5).standard_normal(16000).astype(np.float32))
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            msgs = []
            try:
                while True:
                    msgs.append(await recv_msg(sub, 20))
            except ConnectionClosed:
                pass
            await asyncio.wait_for(pub.wait_closed(), 10)
            return msgs, sub.close_code

        msgs, code = run(main(), 60)
        assert proc.wait(30) == 0
    assert [m for m in msgs if isinstance(m, Final)] and code == CloseCode.GOING_AWAY
