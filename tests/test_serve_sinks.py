"""Caption sinks against local servers on loopback: a fake obs-websocket v5 server (the
handshake of the obs-websocket protocol documentation), HTTP servers standing in for
YouTube's caption ingestion and a webhook; and the whole path: caption server -> sinks, with
one sink failing while the others and the subscribers go on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from jrsv_stream.serve.protocol import decode_server_message, encode_pcm
from jrsv_stream.serve.server import CaptionServer, ServerConfig
from jrsv_stream.serve.sinks import (ObsSink, RetryPolicy, WebhookSink, YouTubeSink, feed_sinks, obs_auth, parse_sink,
                                     youtube_timestamp)
from jrsv_stream.stream.events import Final
from jrsv_stream.nn.tiny import TinyPipeline

torch.set_num_threads(1)
FAST = RetryPolicy(retry_base_s=0.05, retry_max_s=0.2, max_attempts=3, queue_size=8)


def run(coro, timeout_s: float = 40.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def final(text: str = "hello there", track: str = "speech", seg: int = 0) -> Final:
    return Final("live", track, f"{track}-{seg}", seg + 1, text, (("hello", 1.0, 1.4), ("there", 1.5, 2.0)), 1.0, 2.0,
                 2.5, 1_700_000_000.25, 100.0, True)


# ---------------------------------------------------------------------- fake OBS
class FakeObs:
    """obs-websocket v5 server: Hello with an authentication challenge, Identify checked,
    Identified, SendStreamCaption answered (or refused when ``streaming`` is False)."""

    def __init__(self, password: str | None = "secret"):
        self.password, self.captions, self.streaming, self.identified = password, [], True, 0
        self.salt, self.challenge = "c2FsdHNhbHQ=", "Y2hhbGxlbmdl"

    async def handler(self, ws):
        d = {"obsWebSocketVersion": "5.5.0", "rpcVersion": 1}
        if self.password:
            d["authentication"] = {"challenge": self.challenge, "salt": self.salt}
        await ws.send(json.dumps({"op": 0, "d": d}))
        ident = json.loads(await ws.recv())
        assert ident["op"] == 1 and ident["d"]["rpcVersion"] == 1
        if self.password:  # the documented computation, written out independently of obs_auth
            secret = base64.b64encode(hashlib.sha256((self.password + self.salt).encode()).digest())
            expected = base64.b64encode(hashlib.sha256(secret + self.challenge.encode()).digest()).decode()
            if ident["d"].get("authentication") != expected:
                await ws.close(4009, "Authentication failed.")
                return
        self.identified += 1
        await ws.send(json.dumps({"op": 2, "d": {"negotiatedRpcVersion": 1}}))
        async for m in ws:
            r = json.loads(m)
            assert r["op"] == 6 and r["d"]["requestType"] == "SendStreamCaption"
            if self.streaming:
                self.captions.append(r["d"]["requestData"]["captionText"])
                status = {"result": True, "code": 100}
            else:
                status = {"result": False, "code": 501, "comment": "Output is not running."}
            await ws.send(json.dumps({"op": 5, "d": {"eventType": "Noise", "eventIntent": 1}}))  # ignored by the sink
            await ws.send(json.dumps({"op": 7, "d": {"requestType": "SendStreamCaption", "requestId": r["d"]["requestId"],
                                                     "requestStatus": status}}))


@asynccontextmanager
async def fake_obs(password="secret"):
    obs = FakeObs(password)
    async with serve(obs.handler, "127.0.0.1", 0) as srv:
        obs.url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        yield obs


def test_obs_auth_matches_the_documented_example():
    # obs-websocket docs: secret = base64(sha256(password + salt)); auth = base64(sha256(secret + challenge))
    secret = base64.b64encode(hashlib.sha256(b"pw" + b"salt").digest()).decode()
    assert obs_auth("pw", "salt", "ch") == base64.b64encode(hashlib.sha256((secret + "ch").encode()).digest()).decode()


def test_obs_sink_sends_captions_and_reconnects():
    async def main():
        async with fake_obs() as obs:
            sink = ObsSink(obs.url, "secret", policy=FAST)
            task = asyncio.ensure_future(sink.run())
            sink.offer(final("good evening"))
            sink.offer(final("la la", track="lyrics"))  # not a chosen track: skipped
            while sink.sent < 1:
                await asyncio.sleep(0.01)
            await sink._ws.close()  # OBS restarts: the next caption reconnects
            sink.offer(final("everyone", seg=1))
            while sink.sent < 2:
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return obs, sink

    obs, sink = run(main())
    assert obs.captions == ["good evening", "everyone"]
    assert obs.identified == 2
    assert sink.dropped == 0


def test_obs_refusals_are_clear_errors():
    async def main():
        async with fake_obs() as obs:
            wrong = ObsSink(obs.url, "nope", policy=FAST)
            await wrong._deliver_with_retry(final())
            missing = ObsSink(obs.url, None, policy=FAST)
            await missing._deliver_with_retry(final())
            obs.streaming = False
            idle = ObsSink(obs.url, "secret", policy=FAST)
            await idle._deliver_with_retry(final())
            await idle.close()
            return obs, wrong, missing, idle

    obs, wrong, missing, idle = run(main())
    assert obs.captions == []
    assert wrong.dropped == 1 and wrong.failed_attempts == 3
    assert "refused the password" in wrong.last_error and "4009" in wrong.last_error
    assert "requires a password" in missing.last_error
    assert "refused SendStreamCaption: code 501 Output is not running." in idle.last_error


# ---------------------------------------------------------------------- HTTP endpoints
class Recorder:
    """A local HTTP server recording POSTs; ``fail_first`` requests answer 503."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False):
        self.requests: list[tuple[str, str, bytes]] = []
        self.fail_first, self.always_fail, self.attempts = fail_first, always_fail, 0
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                rec.attempts += 1
                if rec.always_fail or rec.attempts <= rec.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                rec.requests.append((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_youtube_sink_posts_the_ingestion_format_with_seq_and_retries():
    rec = Recorder(fail_first=2)
    try:
        sink = YouTubeSink(f"{rec.url}/closedcaption?cid=abc", policy=FAST)

        async def main():
            await sink._deliver_with_retry(final("hello   there"))  # 2 x 503, then 200
            await sink._deliver_with_retry(final("general kenobi", seg=1))

        run(main())
    finally:
        rec.close()
    assert rec.attempts == 4 and sink.failed_attempts == 2 and sink.sent == 2
    assert [p for p, _, _ in rec.requests] == ["/closedcaption?cid=abc&seq=1", "/closedcaption?cid=abc&seq=2"]
    assert rec.requests[0][1].startswith("text/plain")
    # spoken at emitted_at - (audio_time_s - start_s) = 1_700_000_000.25 - 1.5
    assert rec.requests[0][2].decode() == "2023-11-14T22:13:18.750\nhello there\n"
    assert youtube_timestamp(0.0) == "1970-01-01T00:00:00.000"


def test_webhook_sink_posts_event_json():
    rec = Recorder()
    try:
        sink = WebhookSink(rec.url + "/hook", policy=FAST)
        run(sink._deliver_with_retry(final("la la land", track="lyrics")))
    finally:
        rec.close()
    path, ctype, body = rec.requests[0]
    d = json.loads(body)
    assert (path, ctype) == ("/hook", "application/json")
    assert (d["type"], d["track"], d["text"], d["words"][0]) == ("final", "lyrics", "la la land", ["hello", 1.0, 1.4])


def test_parse_sink_specs():
    s = parse_sink("obs://:p%40ss@127.0.0.1:4456?tracks=speech,lyrics")
    assert isinstance(s, ObsSink) and s.url == "ws://127.0.0.1:4456" and s.password == "p@ss" and s.tracks == ("speech", "lyrics")
    s = parse_sink("youtube:http://upload.youtube.com/closedcaption?cid=K#tracks=lyrics")
    assert isinstance(s, YouTubeSink) and s.url.endswith("cid=K") and s.tracks == ("lyrics",)
    assert parse_sink("webhook:https://example.org/x").tracks == ("speech", "lyrics")
    for bad in ("ftp://x", "youtube:notaurl", "obs://", "webhook:http://x#tracks=music"):
        with pytest.raises(ValueError):
            parse_sink(bad)


def test_queue_is_bounded_and_drops_oldest():
    async def main():
        sink = WebhookSink("http://127.0.0.1:9/x", policy=FAST)
        for i in range(FAST.queue_size + 3):
            sink.offer(final(f"caption {i}", seg=i))
        return sink

    sink = run(main())
    assert sink.queue.qsize() == FAST.queue_size and sink.dropped == 3
    assert sink.queue.get_nowait().text == "caption 3"


# ---------------------------------------------------------------------- the whole path
def _audio(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    on = lambda s: (0.2 * rng.standard_normal(int(s * 16000))).astype(np.float32)
    return np.concatenate([on(1.0), np.zeros(16000, np.float32), on(1.0), np.zeros(16000, np.float32), on(0.5)])


def test_server_feeds_several_sinks_and_a_failing_one_changes_nothing():
    hook, broken = Recorder(), Recorder(always_fail=True)

    async def main():
        srv = await CaptionServer(TinyPipeline(chunk_samples=1280), ServerConfig(port=0)).start()
        async with fake_obs() as obs:
            sinks = [WebhookSink(hook.url + "/hook", policy=FAST),
                     YouTubeSink(broken.url + "/cc?cid=x", policy=FAST),  # always 503
                     ObsSink(obs.url, "wrong", policy=FAST)]               # refused password
            stop = asyncio.Event()
            feeder = asyncio.ensure_future(feed_sinks(srv.url, "live", sinks, stop=stop))
            async with connect(f"{srv.url}/v1/subscribe/live") as sub:
                await asyncio.sleep(0.3)  # the sinks' subscription is up
                async with connect(f"{srv.url}/v1/publish/live") as pub:
                    await pub.send(json.dumps({"v": 1, "type": "start"}))
                    await pub.recv()
                    x = _audio()
                    for a in range(0, len(x), 640):
                        await pub.send(encode_pcm(x[a:a + 640]))
                    await pub.send(json.dumps({"v": 1, "type": "end"}))
                    finals = []
                    async for m in sub:
                        ev = decode_server_message(m)
                        if isinstance(ev, Final) and ev.text:
                            finals.append(ev)
                        if isinstance(ev, dict) and ev.get("state") == "ended":
                            break
            for _ in range(200):
                if len(hook.requests) >= len(finals):
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await feeder
        await srv.stop()
        return finals, sinks

    try:
        finals, sinks = run(main(), 60)
    finally:
        hook.close()
        broken.close()
    assert finals, "the tiny pipeline made no finals"
    got = [json.loads(b) for _, _, b in hook.requests]
    assert [(d["segment_id"], d["text"]) for d in got] == [(f.segment_id, f.text) for f in finals]
    assert sinks[0].sent == len(finals) and sinks[0].dropped == 0
    assert sinks[1].sent == 0 and sinks[1].failed_attempts > 0 and "HTTP 503" in sinks[1].last_error
    assert sinks[2].sent == 0 and "refused the password" in sinks[2].last_error
