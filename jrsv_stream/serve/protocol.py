"""Wire protocol: paths, control messages, PCM validation, close codes (no network here).

Everything a connection may send is parsed and validated here, so the server is a thin
asyncio layer and every rule is testable without sockets. The full description with
examples is docs/protocol.md; :data:`PROTOCOL_VERSION` versions the control messages,
:data:`jrsv_stream.stream.events.SCHEMA_VERSION` the events.

Paths: ``/v1/publish/<stream_id>`` (one publisher per stream), ``/v1/subscribe/<stream_id>``
(many subscribers), ``/healthz`` (HTTP GET, JSON). Tokens: ``?token=...`` or an
``Authorization: Bearer ...`` header, one per role.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Union
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import numpy as np

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.stream.captions import FIELDS as CAPTION_FIELDS
from jrsv_stream.stream.captions import CaptionOptionError, CaptionOptions, parse_caption_options
from jrsv_stream.stream.events import EVENT_TYPES, Event, EventDecodeError, event_from_dict

PROTOCOL_VERSION = 1
HEALTH_PATH = "/healthz"
STREAM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DTYPES = {"s16le": ("<i2", 2), "f32le": ("<f4", 4)}


class CloseCode:
    """Websocket close codes used by the server (RFC 6455 + 4000-4999 application codes)."""

    NORMAL = 1000  # publisher sent "end", finals flushed
    GOING_AWAY = 1001  # server shutting down (finals flushed first)
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009  # a frame larger than the server's max message size
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # no free stream slot
    STREAM_BUSY = 4009  # the stream already has a publisher
    SLOW_CONSUMER = 4008  # a subscriber fell so far behind that finals would have to be dropped
    TOO_MANY_ERRORS = 4002  # a publisher kept sending invalid input


class ErrorCode:
    """``code`` values of error events (docs/protocol.md lists when each is sent)."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FORMAT = "bad_format"
    BAD_OPTION = "bad_option"
    NOT_STARTED = "not_started"
    ALREADY_STARTED = "already_started"
    BAD_AUDIO = "bad_audio"
    OVERLOADED = "overloaded"
    MODEL_ERROR = "model_error"
    MAX_STREAMS = "max_streams"
    STREAM_BUSY = "stream_busy"
    SLOW_CONSUMER = "slow_consumer"
    UNEXPECTED_MESSAGE = "unexpected_message"
    SOURCE_ERROR = "source_error"
    INTERNAL = "internal"


class ProtocolError(ValueError):
    """Invalid input from a client: ``code`` (an :class:`ErrorCode`) and a clear message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- paths and auth
def split_request_target(target: str) -> tuple[str, str]:
    """An HTTP request target (origin form, ``/path?query#frag``) -> (path, query), split
    by hand: ``urlsplit`` reads a target starting ``//`` as a host and raises on ``//[``."""
    rest = target.split("#", 1)[0]
    path, _, query = rest.partition("?")
    return path, query


@dataclass(frozen=True)
class Route:
    role: str  # "publish" | "subscribe" | "health"
    stream_id: str
    token: str | None


def parse_path(path: str, headers: Any = None) -> Route:
    """``/v1/publish/ID?token=T`` -> Route. Raises ProtocolError (``bad_message``) otherwise."""
    req_path, query = split_request_target(path)
    token = (parse_qs(query).get("token") or [None])[0]
    if headers is not None:
        auth = headers.get("Authorization") if hasattr(headers, "get") else None
        if auth and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
    if req_path == HEALTH_PATH:
        return Route("health", "", token)
    m = re.fullmatch(r"/v1/(publish|subscribe)/([^/]+)", req_path)
    if not m:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unknown path {req_path!r}: use /v1/publish/<stream_id> or /v1/subscribe/<stream_id>")
    if not STREAM_ID_RE.match(m.group(2)):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"bad stream id {m.group(2)!r}: 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
    return Route(m.group(1), m.group(2), token)


def stream_url(server: str, role: str, stream_id: str, token: str | None = None) -> str:
    """``ws://host:port`` (or ``host:port``) + role (``publish`` | ``subscribe``) + stream id
    -> the endpoint URL; a server URL that already has a ``/v1/...`` path is kept as is."""
    if "://" not in server:
        server = "ws://" + server
    parts = urlsplit(server)
    path = parts.path if parts.path.startswith("/v1/") else f"/v1/{role}/{quote(stream_id, safe='')}"
    query = parts.query
    if token:
        query = (query + "&" if query else "") + "token=" + quote(token, safe="")
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def token_ok(given: str | None, expected: str | None) -> bool:
    """True when no token is configured, or ``given`` equals it (constant-time compare)."""
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


# ---------------------------------------------------------------------- client messages
@dataclass(frozen=True)
class Start:
    """Publisher: the audio format of the binary frames that follow, and the stream's
    caption controls (:class:`~jrsv_stream.stream.captions.CaptionOptions`: hotwords,
    replace, mask, tracks; all optional)."""

    type: ClassVar[str] = "start"
    sample_rate: int = SAMPLE_RATE
    dtype: str = "s16le"
    channels: int = 1
    options: CaptionOptions = CaptionOptions()


@dataclass(frozen=True)
class End:
    """Publisher: no more audio; the server flushes finals, answers ``ended`` and closes."""

    type: ClassVar[str] = "end"


@dataclass(frozen=True)
class Ping:
    type: ClassVar[str] = "ping"


ClientMessage = Union[Start, End, Ping]


def parse_client_message(text: str | bytes) -> ClientMessage:
    """One text frame from a client -> message.

    Raises:
        ProtocolError: ``bad_json`` (not JSON / not an object), ``unknown_type``,
            ``bad_message`` (wrong version or fields), ``bad_format`` (unsupported audio
            format in ``start``), ``bad_option`` (a bad caption control in ``start``; the
            message names the field, e.g. ``hotwords[1].boost``).
    """
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(ErrorCode.BAD_JSON, f"message is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, f"message must be a JSON object, got {type(d).__name__}")
    if d.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unsupported protocol version {d.get('v')!r} (server speaks v{PROTOCOL_VERSION})")
    t = d.get("type")
    if t == "start":
        extra = set(d) - {"v", "type", "sample_rate", "dtype", "channels", *CAPTION_FIELDS}
        if extra:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unknown field(s) in start: {sorted(extra)}")
        sr, dt, ch = d.get("sample_rate", SAMPLE_RATE), d.get("dtype", "s16le"), d.get("channels", 1)
        if not isinstance(dt, str) or dt not in DTYPES:
            raise ProtocolError(ErrorCode.BAD_FORMAT, f"unsupported dtype {dt!r}: send {' or '.join(DTYPES)}")
        if isinstance(sr, bool) or sr != SAMPLE_RATE:
            raise ProtocolError(ErrorCode.BAD_FORMAT, f"unsupported sample_rate {sr!r}: send {SAMPLE_RATE} Hz (resample on the client)")
        if isinstance(ch, bool) or ch != 1:
            raise ProtocolError(ErrorCode.BAD_FORMAT, f"unsupported channels {ch!r}: send mono (1)")
        try:
            options = parse_caption_options(d)
        except CaptionOptionError as e:
            raise ProtocolError(ErrorCode.BAD_OPTION, f"bad start option {e}") from e
        return Start(SAMPLE_RATE, dt, 1, options)
    if t == "end":
        return End()
    if t == "ping":
        return Ping()
    if t is None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message has no 'type'")
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {t!r} (known: start, end, ping)")


def decode_pcm(data: bytes, start: Start, max_samples: int | None = None) -> np.ndarray:
    """A binary frame -> (n,) float32 in [-1, 1].

    Raises:
        ProtocolError(``bad_audio``): empty frame, byte count not a multiple of the sample
            size, NaN/Inf (f32le), more than ``max_samples`` samples.
    """
    np_dtype, width = DTYPES[start.dtype]
    if not data:
        raise ProtocolError(ErrorCode.BAD_AUDIO, "empty audio frame")
    if len(data) % width:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"audio frame of {len(data)} bytes is not a whole number of {start.dtype} samples ({width} bytes each)")
    n = len(data) // width
    if max_samples is not None and n > max_samples:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"audio frame of {n} samples exceeds {max_samples}")
    x = np.frombuffer(data, dtype=np_dtype)
    if start.dtype == "s16le":
        return x.astype(np.float32) / 32768.0
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ProtocolError(ErrorCode.BAD_AUDIO, "audio frame contains NaN or Inf samples")
    return x


def encode_pcm(x: np.ndarray, dtype: str = "s16le") -> bytes:
    """(n,) float audio -> bytes of a binary frame (clients use this)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if dtype == "s16le":
        return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()
    if dtype == "f32le":
        return x.astype("<f4").tobytes()
    raise ValueError(f"unknown dtype {dtype!r}")


# ---------------------------------------------------------------------- server messages
def message(type_: str, **fields: Any) -> str:
    """A server control message (``ready``, ``ended``, ``hello``, ``stream``, ``pong``) as JSON."""
    return json.dumps({"v": PROTOCOL_VERSION, "type": type_, **fields}, separators=(",", ":"))


CONTROL_TYPES = ("ready", "ended", "hello", "stream", "pong")


def decode_server_message(text: str | bytes) -> Event | dict:
    """What a client receives -> an Event (partial/final/activity/stats/error) or, for a
    control message, its dict (``{"v": 1, "type": "hello", ...}``).

    Raises:
        EventDecodeError: not JSON, unknown type, or an invalid event.
    """
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EventDecodeError(f"not JSON: {e}") from e
    t = d.get("type") if isinstance(d, dict) else None
    if isinstance(t, str) and t in CONTROL_TYPES:
        if d.get("v") != PROTOCOL_VERSION:
            raise EventDecodeError(f"unsupported protocol version {d.get('v')!r}")
        return d
    if isinstance(d, dict) and not (isinstance(t, str) and t in EVENT_TYPES):
        raise EventDecodeError(f"unknown message type {d.get('type')!r}")
    return event_from_dict(d)
