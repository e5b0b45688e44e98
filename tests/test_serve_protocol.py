"""Wire protocol (no sockets): paths, tokens, control messages, PCM validation, and the
slow-subscriber queue policy."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from jrsv_stream.serve.protocol import (ErrorCode, ProtocolError, Start, decode_pcm, decode_server_message, encode_pcm,
                                        message, parse_client_message, parse_path, stream_url, token_ok)
from jrsv_stream.serve.server import ServerConfig, SubscriberQueue
from jrsv_stream.stream.events import Activity, Error, EventDecodeError, Final, Partial


def test_paths_and_tokens():
    r = parse_path("/v1/publish/my-stream.1?token=abc")
    assert (r.role, r.stream_id, r.token) == ("publish", "my-stream.1", "abc")
    r = parse_path("/v1/subscribe/x", {"Authorization": "Bearer tok"})
    assert (r.role, r.stream_id, r.token) == ("subscribe", "x", "tok")
    assert parse_path("/healthz").role == "health"
    for bad in ("/", "/v1/publish/", "/v2/publish/x", "/v1/publish/../x", "/v1/publish/" + "a" * 65, "/v1/watch/x",
                "//[", "//[::1/v1/publish/x"):  # a target read as a host by urlsplit: still a clean ProtocolError
        with pytest.raises(ProtocolError):
            parse_path(bad)
    assert token_ok(None, None) and token_ok("x", None)
    assert token_ok("s3cret", "s3cret") and not token_ok("nope", "s3cret") and not token_ok(None, "s3cret")
    assert stream_url("127.0.0.1:8765", "subscribe", "demo", "t t") == "ws://127.0.0.1:8765/v1/subscribe/demo?token=t%20t"
    assert stream_url("ws://h:1/v1/publish/a", "publish", "ignored") == "ws://h:1/v1/publish/a"


def test_client_messages():
    assert parse_client_message('{"v": 1, "type": "start", "sample_rate": 16000, "dtype": "f32le"}') == Start(16000, "f32le", 1)
    assert parse_client_message('{"type": "start"}') == Start()
    assert parse_client_message('{"type": "end"}').type == "end"
    cases = {
        "{oops": ErrorCode.BAD_JSON, "[1, 2]": ErrorCode.BAD_JSON, '{"type": "dance"}': ErrorCode.UNKNOWN_TYPE,
        '{"x": 1}': ErrorCode.BAD_MESSAGE, '{"v": 9, "type": "end"}': ErrorCode.BAD_MESSAGE,
        '{"type": "start", "dtype": "s24le"}': ErrorCode.BAD_FORMAT, '{"type": "start", "sample_rate": 44100}': ErrorCode.BAD_FORMAT,
        '{"type": "start", "channels": 2}': ErrorCode.BAD_FORMAT, '{"type": "start", "rate": 16000}': ErrorCode.BAD_MESSAGE,
    }
    for text, code in cases.items():
        with pytest.raises(ProtocolError) as e:
            parse_client_message(text)
        assert e.value.code == code, text


def test_pcm_round_trip_and_validation():
    x = np.array([0.0, 0.5, -0.5, 0.999], dtype=np.float32)
    np.testing.assert_allclose(decode_pcm(encode_pcm(x, "s16le"), Start(dtype="s16le")), x, atol=1 / 32768)
    np.testing.assert_array_equal(decode_pcm(encode_pcm(x, "f32le"), Start(dtype="f32le")), x)
    for data, start, msg in [(b"\x01\x02\x03", Start(dtype="s16le"), "whole number"),
                             (b"\x00" * 6, Start(dtype="f32le"), "whole number"), (b"", Start(), "empty"),
                             (np.array([np.nan], "<f4").tobytes(), Start(dtype="f32le"), "NaN"),
                             (np.array([np.inf, 0], "<f4").tobytes(), Start(dtype="f32le"), "NaN or Inf")]:
        with pytest.raises(ProtocolError, match=msg) as e:
            decode_pcm(data, start)
        assert e.value.code == ErrorCode.BAD_AUDIO
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_pcm(b"\x00" * 40, Start(), max_samples=10)


def test_server_messages_decode():
    assert decode_server_message(message("hello", stream_id="a", live=True))["type"] == "hello"
    ev = Final("a", "speech", "speech-0", 1, "x", (("x", 0.0, 0.1),), 0.0, 0.1, 0.32, 1.0)
    from jrsv_stream.stream.events import encode_event
    assert decode_server_message(encode_event(ev)) == ev
    with pytest.raises(EventDecodeError):
        decode_server_message('{"v": 1, "type": "mystery"}')


def _p(seg: str, seq: int, text: str = "x") -> Partial:
    return Partial("s", seg.split("-")[0], seg, seq, text, (), 0.0, 0.0, 0.0, 0.0)


def _f(seg: str, seq: int) -> Final:
    return Final("s", seg.split("-")[0], seg, seq, "done", (), 0.0, 0.0, 0.0, 0.0)


def test_subscriber_queue_drops_partials_first_and_never_finals():
    q = SubscriberQueue(maxsize=4, hard_limit=8)
    assert q.put(_p("speech-0", 1, "a")) and q.put(_p("speech-0", 2, "ab"))
    assert len(q) == 1 and q.dropped_partials == 1  # superseded by the newer partial of its segment
    q.put(Activity("s", 3, 0, 0, {}, {}))
    q.put(Activity("s", 4, 0, 0, {}, {}))
    assert len(q) == 2 and q.dropped_other == 1
    for i in range(5):
        assert q.put(_f(f"speech-{i}", 10 + i))
    # full: the partial went first; the newest activity stays (at most one is ever queued,
    # so a stalled subscriber still gets the latest meter and stats); all finals are queued
    items = list(q._q)
    assert [type(i).__name__ for i in items] == ["Activity"] + ["Final"] * 5
    assert items[0].seq == 4 and q.dropped_partials == 2 and q.dropped_other == 1
    assert q.put(_p("lyrics-0", 20))  # a partial newcomer with no room is dropped, not queued
    assert len(q) == 6 and q.dropped_partials == 3
    q.put(Activity("s", 21, 0, 0, {}, {}))  # supersedes the queued activity: still one
    assert len(q) == 6 and q.dropped_other == 2 and list(q._q)[-1].seq == 21
    assert q.put(Error("s", 22, "x", "y", False, 0)) and q.put(_f("a-2", 23))
    assert not q.put(_f("a-3", 24))  # hard limit: the caller must disconnect this subscriber
    assert q.closed and len(q) == 8


def test_subscriber_queue_get_waits_for_items():
    async def main():
        q = SubscriberQueue(4, 8)
        getter = asyncio.ensure_future(q.get())
        await asyncio.sleep(0.01)
        assert not getter.done()
        q.put(message("pong"))
        return await asyncio.wait_for(getter, 1)

    assert json.loads(asyncio.run(main()))["type"] == "pong"


def test_server_config_validation():
    with pytest.raises(ValueError):
        ServerConfig(max_streams=0)
    with pytest.raises(ValueError):
        ServerConfig(subscriber_queue=10, subscriber_hard_limit=5)
