"""Events: JSON round trip for every type, schema version, strict decoding, drop classes."""

from __future__ import annotations

import json
import math

import pytest

from jrsv_stream.stream.events import (SCHEMA_VERSION, Activity, Error, EventDecodeError, Final, Partial, Stats,
                                       decode_event, encode_event, event_to_dict, is_droppable)

EVENTS = [
    Partial("s1", "speech", "speech-0", 3, "hello wor", (("hello", 0.5, 0.9), ("wor", 1.0, 1.2)), 0.5, 1.2, 1.28, 1.7e9, 12.5),
    Final("s1", "lyrics", "lyrics-2", 9, "la la", (("la", 3.0, 3.2), ("la", 3.4, 3.6)), 3.0, 3.6, 3.84, 1.7e9, None, rescored=True),
    Activity("s1", 4, 1.28, 1.7e9, {"speech": 0.93, "lyrics": 0.02}, {"speech": True, "lyrics": False}),
    Stats("s1", 5, 2.0, 1.7e9, 0.031, 2, 0, 7, 6, {"model": {"p50": 1.0, "p95": 2.0, "p99": 3.0}}),
    Error("s1", 6, "bad_audio", "odd byte count", False, 1.7e9),
]


@pytest.mark.parametrize("ev", EVENTS, ids=lambda e: e.type)
def test_round_trip(ev):
    text = encode_event(ev)
    d = json.loads(text)
    assert d["v"] == SCHEMA_VERSION and d["type"] == ev.type
    assert decode_event(text, strict=True) == ev


def test_wire_format_of_a_partial():
    d = event_to_dict(EVENTS[0])
    assert d == {"v": 1, "type": "partial", "stream_id": "s1", "track": "speech", "segment_id": "speech-0", "seq": 3,
                 "text": "hello wor", "words": [["hello", 0.5, 0.9], ["wor", 1.0, 1.2]], "start_s": 0.5, "end_s": 1.2,
                 "audio_time_s": 1.28, "emitted_at": 1.7e9, "latency_ms": 12.5}


def test_decoding_errors():
    good = event_to_dict(EVENTS[0])
    with pytest.raises(EventDecodeError, match="version"):
        decode_event(json.dumps({**good, "v": 2}))
    with pytest.raises(EventDecodeError, match="unknown event type"):
        decode_event(json.dumps({**good, "type": "shout"}))
    with pytest.raises(EventDecodeError, match="lacks field 'text'"):
        decode_event(json.dumps({k: v for k, v in good.items() if k != "text"}))
    with pytest.raises(EventDecodeError, match="unknown field"):
        decode_event(json.dumps({**good, "extra": 1}), strict=True)
    assert decode_event(json.dumps({**good, "extra": 1})) == EVENTS[0]  # clients tolerate added fields
    with pytest.raises(EventDecodeError, match="not JSON"):
        decode_event("{nope")
    with pytest.raises(EventDecodeError, match="finite"):
        decode_event(json.dumps({**good, "start_s": "soon"}))
    with pytest.raises(EventDecodeError, match="integer"):
        decode_event(json.dumps({**good, "seq": 1.5}))
    with pytest.raises(ValueError):
        encode_event(Partial("s", "speech", "speech-0", 1, "x", (), math.nan, 0, 0, 0))


def test_what_may_be_dropped():
    assert [is_droppable(e) for e in EVENTS] == [True, False, True, True, False]
