"""Caption events: frozen dataclasses and their versioned JSON codec.

Clients import this module (never the models). Every event of a stream carries ``seq``,
increasing by one per event the session emits (a gap at a subscriber means events were
dropped for it: only partials, activity and stats are ever dropped). Times named ``*_s``
ending in ``audio`` are stream audio time (0 = first sample the server received for the
stream); ``emitted_at`` is the server's wall clock (Unix seconds).

Caption semantics: a :class:`Partial` replaces the previous partial of the same
``segment_id``; a :class:`Final` closes its segment and never changes; the next segment
of the track gets a new ``segment_id``. The wire format is documented in docs/protocol.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Union

SCHEMA_VERSION = 1

# (word, start_s, end_s, conf): times in audio time, conf in [0, 1] (docs/protocol.md); events
# decoded from a server that sends no confidence have 3-tuples
Word = tuple


class EventDecodeError(ValueError):
    """A message is not a valid event of this schema version."""


@dataclass(frozen=True)
class _Caption:
    stream_id: str
    track: str  # "speech" | "lyrics"
    segment_id: str  # stable for the segment, e.g. "speech-3"
    seq: int
    text: str
    words: tuple[Word, ...]  # (word, start_s, end_s, conf) per word
    start_s: float  # audio time the segment starts (its first word)
    end_s: float  # audio time of its last word end
    audio_time_s: float  # audio decoded so far when emitted
    emitted_at: float  # server wall clock, Unix seconds
    latency_ms: float | None = None  # server side: emission - arrival of the audio at audio_time_s


@dataclass(frozen=True)
class Partial(_Caption):
    """Current hypothesis of an open segment; replaces the previous partial of the segment."""

    type: ClassVar[str] = "partial"


@dataclass(frozen=True)
class Final(_Caption):
    """The committed text of a segment; never changes. ``rescored``: attention rescoring ran."""

    type: ClassVar[str] = "final"
    rescored: bool = False


@dataclass(frozen=True)
class UtteranceEnd:
    """A track's segment was closed by an endpoint, after its :class:`Final`.

    ``reason``: ``silence`` (trailing non-speech), ``activity`` (the track's source went
    quiet: the separator's activity), ``max_length`` (the segment reached its longest
    length) or ``end_of_stream``. ``end_s``: audio time of the final's last word."""

    type: ClassVar[str] = "utterance_end"
    stream_id: str
    track: str
    segment_id: str
    seq: int
    reason: str
    end_s: float
    audio_time_s: float
    emitted_at: float


UTTERANCE_END_REASONS = ("silence", "activity", "max_length", "end_of_stream")


@dataclass(frozen=True)
class Activity:
    """Per-track source activity over the last chunk (mean probability) and the gate state."""

    type: ClassVar[str] = "activity"
    stream_id: str
    seq: int
    audio_time_s: float
    emitted_at: float
    activity: dict[str, float]
    active: dict[str, bool]


@dataclass(frozen=True)
class Stats:
    """Health of a stream. ``rtf``: model+decode compute time / audio time (recent window).
    ``dropped_partials``: events dropped for *this* subscriber (the server fills it in).
    ``stage_ms``: stage -> {"p50", "p95", "p99"} compute per chunk."""

    type: ClassVar[str] = "stats"
    stream_id: str
    seq: int
    audio_time_s: float
    emitted_at: float
    rtf: float
    queue_depth: int
    overruns: int
    dropped_partials: int
    chunks: int
    stage_ms: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Error:
    """Something went wrong. ``fatal``: the connection or stream is closing because of it.

    ``code`` is one of the names in docs/protocol.md (e.g. ``bad_json``, ``bad_audio``)."""

    type: ClassVar[str] = "error"
    stream_id: str
    seq: int
    code: str
    message: str
    fatal: bool
    emitted_at: float


Event = Union[Partial, Final, UtteranceEnd, Activity, Stats, Error]
EVENT_TYPES: dict[str, type] = {c.type: c for c in (Partial, Final, UtteranceEnd, Activity, Stats, Error)}


def is_droppable(ev: Event) -> bool:
    """Events a slow subscriber may lose (newer ones supersede them); finals and errors never."""
    return isinstance(ev, (Partial, Activity, Stats))


def event_to_dict(ev: Event) -> dict[str, Any]:
    d = {"v": SCHEMA_VERSION, "type": ev.type, **asdict(ev)}
    if "words" in d:
        d["words"] = [[w[0], round(w[1], 3), round(w[2], 3), *([round(w[3], 3)] if len(w) > 3 else [])] for w in d["words"]]
    return d


def encode_event(ev: Event) -> str:
    """Event -> one JSON text message."""
    return json.dumps(event_to_dict(ev), separators=(",", ":"), allow_nan=False)


def _finite(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise EventDecodeError(f"field {name!r} must be a finite number, got {x!r}")
    return float(x)


def _word(w: Any) -> Word:
    """``[word, start_s, end_s]`` or ``[word, start_s, end_s, conf]`` -> a tuple."""
    if not isinstance(w, (list, tuple)) or len(w) not in (3, 4):
        raise EventDecodeError(f"a word is [word, start_s, end_s, conf], got {w!r}")
    out = (str(w[0]), _finite(w[1], "words"), _finite(w[2], "words"))
    if len(w) == 4:
        c = _finite(w[3], "words")
        if not 0.0 <= c <= 1.0:
            raise EventDecodeError(f"word confidence must be in [0, 1], got {c!r}")
        out += (c,)
    return out


def event_from_dict(d: dict[str, Any], strict: bool = False) -> Event:
    """Inverse of :func:`event_to_dict`.

    Args:
        strict: unknown keys are errors (tests, server side); clients keep the default
            (unknown keys ignored, so servers may add fields within a schema version).

    Raises:
        EventDecodeError: wrong version, unknown type, missing or ill-typed fields.
    """
    if not isinstance(d, dict):
        raise EventDecodeError(f"an event is a JSON object, got {type(d).__name__}")
    if d.get("v") != SCHEMA_VERSION:
        raise EventDecodeError(f"unsupported event schema version {d.get('v')!r} (this client reads v{SCHEMA_VERSION})")
    t = d.get("type")
    cls = EVENT_TYPES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event type {d.get('type')!r}")
    names = {f.name: f for f in fields(cls)}
    extra = set(d) - set(names) - {"v", "type"}
    if strict and extra:
        raise EventDecodeError(f"unknown field(s) {sorted(extra)} in {cls.type} event")
    kw = {}
    for name, f in names.items():
        if name not in d:
            if f.default is MISSING and f.default_factory is MISSING:
                raise EventDecodeError(f"{cls.type} event lacks field {name!r}")
            continue
        kw[name] = d[name]
    try:
        if "words" in kw:
            kw["words"] = tuple(_word(w) for w in kw["words"])
        for name in ("start_s", "end_s", "audio_time_s", "emitted_at", "rtf"):
            if name in kw:
                kw[name] = _finite(kw[name], name)
        for name in ("seq", "queue_depth", "overruns", "dropped_partials", "chunks"):
            if name in kw and (isinstance(kw[name], bool) or not isinstance(kw[name], int)):
                raise EventDecodeError(f"field {name!r} must be an integer, got {kw[name]!r}")
        return cls(**kw)
    except (TypeError, ValueError) as e:
        if isinstance(e, EventDecodeError):
            raise
        raise EventDecodeError(f"bad {cls.type} event: {e}") from e


def decode_event(text: str | bytes, strict: bool = False) -> Event:
    """One JSON text message -> Event (see :func:`event_from_dict`)."""
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EventDecodeError(f"not JSON: {e}") from e
    return event_from_dict(d, strict=strict)
