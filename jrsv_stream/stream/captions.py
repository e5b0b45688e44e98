"""Per-stream caption controls: hotwords, word replacement, word masks, caption tracks.

A publisher sets them in its ``start`` message; a server sets defaults for every stream
(``jrsv-stream serve --hotword/--replace/--mask/--tracks/--caption-config``). One schema
for both, validated here (network-free); errors name the field (``hotwords[2].boost``).

- ``hotwords``: phrases the recognizer should prefer, each a string or
  ``{"phrase": str, "boost": float}``. Partials: the CTC prefix beam search's context graph
  (:mod:`jrsv_stream.decode.context`), ``boost`` nats per matched token; finals: the phrases
  go to the final decoder (Whisper's previous-text prompt) where the pipeline has one.
- ``replace``: ``[{"from": "gonna", "to": "going to"}, ...]``: whole words (a ``from`` of
  several words matches them in a row), case-insensitive, surrounding punctuation kept.
- ``mask``: words shown masked (``"damn"`` -> ``"d***"``), whole-word, case-insensitive;
  applied after ``replace``.
- ``tracks``: the caption tracks to decode and send (``["speech"]``, ``["lyrics"]`` or both).

Both filters run on every partial and final, on ``text`` and on ``words`` alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from jrsv_stream.stream.pipeline_api import TRACKS

MAX_HOTWORDS = 100
MAX_HOTWORD_CHARS = 64
MAX_HOTWORD_WORDS = 6
MAX_BOOST = 20.0
DEFAULT_BOOST = 3.0
MAX_REPLACE = 200
MAX_REPLACE_CHARS = 64
MAX_MASK = 200
MAX_MASK_CHARS = 32
FIELDS = ("hotwords", "replace", "mask", "tracks")

_EDGE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


class CaptionOptionError(ValueError):
    """A bad caption option; ``field`` names it (``hotwords[1].boost``)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Hotword:
    phrase: str
    boost: float = DEFAULT_BOOST


@dataclass(frozen=True)
class CaptionOptions:
    """Validated caption controls (see the module doc). ``tracks`` None: all tracks."""

    hotwords: tuple[Hotword, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    mask: tuple[str, ...] = ()
    tracks: tuple[str, ...] | None = None
    _rules: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        rules = [(tuple(_key(w) for w in f.split()), tuple(t.split())) for f, t in self.replace]
        object.__setattr__(self, "_rules", tuple(sorted(rules, key=lambda r: -len(r[0]))))  # longest match first

    @property
    def empty(self) -> bool:
        return not (self.hotwords or self.replace or self.mask or self.tracks is not None)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {}
        if self.hotwords:
            d["hotwords"] = [{"phrase": h.phrase, "boost": h.boost} for h in self.hotwords]
        if self.replace:
            d["replace"] = [{"from": f, "to": t} for f, t in self.replace]
        if self.mask:
            d["mask"] = list(self.mask)
        if self.tracks is not None:
            d["tracks"] = list(self.tracks)
        return d

    # ------------------------------------------------------------------ filters
    def filter_words(self, words: Sequence[tuple]) -> tuple[tuple, ...]:
        """Apply ``replace`` then ``mask`` to word tuples ``(word, start_s, end_s, *rest)``.

        A replaced run of words becomes the ``to`` words, sharing the run's span (spread
        evenly) and its lowest confidence; ``to`` empty removes the words."""
        if not self.replace and not self.mask:
            return tuple(words)
        out: list[tuple] = []
        keys = [_key(w[0]) for w in words]
        i = 0
        while i < len(words):
            for src, dst in self._rules:
                n = len(src)
                if n and tuple(keys[i:i + n]) == src:
                    run = words[i:i + n]
                    pre = _EDGE.match(run[0][0]).group(1)
                    post = _EDGE.match(run[-1][0]).group(3)
                    a, b = run[0][1], run[-1][2]
                    rest = tuple(min(vals) for vals in zip(*(w[3:] for w in run)))
                    for k, d in enumerate(dst):
                        t0 = a + (b - a) * k / len(dst)
                        t1 = a + (b - a) * (k + 1) / len(dst)
                        text = (pre if k == 0 else "") + d + (post if k == len(dst) - 1 else "")
                        out.append((text, round(t0, 3), round(t1, 3), *rest))
                    i += n
                    break
            else:
                out.append(tuple(words[i]))
                i += 1
        if self.mask:
            masked = {_key(m) for m in self.mask}
            out = [(_mask_word(w[0]) if _key(w[0]) in masked else w[0], *w[1:]) for w in out]
        return tuple(out)

    def filter_text(self, text: str) -> str:
        """The same filters over a caption text (whitespace words)."""
        if not self.replace and not self.mask:
            return text
        return " ".join(w[0] for w in self.filter_words([(w, 0.0, 0.0) for w in text.split()]))


def _key(word: str) -> str:
    """Matching form of a word: lowercase, surrounding punctuation stripped."""
    return _EDGE.match(word).group(2).lower()


def _mask_word(word: str) -> str:
    pre, core, post = _EDGE.match(word).groups()
    return pre + (core[:1] + "*" * max(1, len(core) - 1)) + post


# ---------------------------------------------------------------------- validation
def _string(v: Any, name: str, max_chars: int, single_word: bool = False, allow_empty: bool = False) -> str:
    if not isinstance(v, str):
        raise CaptionOptionError(name, f"must be a string, got {type(v).__name__}")
    s = " ".join(v.split())
    if not s and not allow_empty:
        raise CaptionOptionError(name, "must not be empty")
    if len(s) > max_chars:
        raise CaptionOptionError(name, f"is {len(s)} characters long, at most {max_chars}")
    if single_word and len(s.split()) > 1:
        raise CaptionOptionError(name, f"must be one word, got {s!r}")
    if s and not any(ch.isalnum() for ch in s):
        raise CaptionOptionError(name, f"needs a letter or digit, got {s!r}")
    return s


def _list(v: Any, name: str, max_items: int) -> list:
    if not isinstance(v, list):
        raise CaptionOptionError(name, f"must be a list, got {type(v).__name__}")
    if len(v) > max_items:
        raise CaptionOptionError(name, f"has {len(v)} entries, at most {max_items}")
    return v


def _hotword(v: Any, name: str) -> Hotword:
    boost: Any = DEFAULT_BOOST
    if isinstance(v, dict):
        extra = set(v) - {"phrase", "boost"}
        if extra:
            raise CaptionOptionError(name, f"unknown key(s) {sorted(extra)} (use phrase, boost)")
        if "phrase" not in v:
            raise CaptionOptionError(name, "needs a 'phrase'")
        phrase, boost = v["phrase"], v.get("boost", DEFAULT_BOOST)
        pname = f"{name}.phrase"
    else:
        phrase, pname = v, name
    p = _string(phrase, pname, MAX_HOTWORD_CHARS)
    if len(p.split()) > MAX_HOTWORD_WORDS:
        raise CaptionOptionError(pname, f"has {len(p.split())} words, at most {MAX_HOTWORD_WORDS}")
    if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not 0.0 < float(boost) <= MAX_BOOST:
        raise CaptionOptionError(f"{name}.boost", f"must be a number in (0, {MAX_BOOST:g}], got {boost!r}")
    return Hotword(p, float(boost))


def parse_caption_options(d: dict, where: str = "") -> CaptionOptions:
    """The caption fields of ``d`` (others are ignored) -> :class:`CaptionOptions`.

    Raises:
        CaptionOptionError: a bad value; its ``field`` names it, prefixed with ``where``.
    """
    pre = f"{where}." if where else ""
    hw = tuple(_hotword(x, f"{pre}hotwords[{i}]") for i, x in enumerate(_list(d.get("hotwords", []), f"{pre}hotwords", MAX_HOTWORDS)))
    rep = []
    for i, x in enumerate(_list(d.get("replace", []), f"{pre}replace", MAX_REPLACE)):
        n = f"{pre}replace[{i}]"
        if not isinstance(x, dict):
            raise CaptionOptionError(n, f"must be an object {{\"from\": ..., \"to\": ...}}, got {type(x).__name__}")
        extra = set(x) - {"from", "to"}
        if extra:
            raise CaptionOptionError(n, f"unknown key(s) {sorted(extra)} (use from, to)")
        if "from" not in x or "to" not in x:
            raise CaptionOptionError(n, "needs 'from' and 'to'")
        rep.append((_string(x["from"], f"{n}.from", MAX_REPLACE_CHARS),
                    _string(x["to"], f"{n}.to", MAX_REPLACE_CHARS, allow_empty=True)))
    mask = tuple(_string(x, f"{pre}mask[{i}]", MAX_MASK_CHARS, single_word=True)
                 for i, x in enumerate(_list(d.get("mask", []), f"{pre}mask", MAX_MASK)))
    tracks = None
    if "tracks" in d:
        t = _list(d["tracks"], f"{pre}tracks", len(TRACKS))
        for i, x in enumerate(t):
            if x not in TRACKS:
                raise CaptionOptionError(f"{pre}tracks[{i}]", f"unknown track {x!r} (known: {', '.join(TRACKS)})")
        if not t:
            raise CaptionOptionError(f"{pre}tracks", f"must name at least one of {', '.join(TRACKS)}")
        if len(set(t)) != len(t):
            raise CaptionOptionError(f"{pre}tracks", f"names a track twice: {t}")
        tracks = tuple(x for x in TRACKS if x in t)
    return CaptionOptions(tuple(dict.fromkeys(hw)), tuple(rep), tuple(dict.fromkeys(mask)), tracks)


def merge_options(server: CaptionOptions, stream: CaptionOptions) -> CaptionOptions:
    """Server-wide defaults + a stream's own: hotwords and masks combined (the stream's
    boost wins for a phrase both name), replace rules combined (the stream's rule wins for
    the same ``from``), the stream's ``tracks`` if it names them."""
    hw = {h.phrase.lower(): h for h in server.hotwords}
    hw.update({h.phrase.lower(): h for h in stream.hotwords})
    rep = {f.lower(): (f, t) for f, t in server.replace}
    rep.update({f.lower(): (f, t) for f, t in stream.replace})
    return CaptionOptions(tuple(hw.values()), tuple(rep.values()), tuple(dict.fromkeys(server.mask + stream.mask)),
                          stream.tracks if stream.tracks is not None else server.tracks)


def load_caption_config(path: str | Path) -> CaptionOptions:
    """A caption config file (YAML or JSON object with ``hotwords``, ``replace``, ``mask``,
    ``tracks``; the schema of ``start``).

    Raises:
        CaptionOptionError: unknown keys or bad values (the field is named); OSError.
    """
    import yaml

    p = Path(path)
    text = p.read_text()
    try:
        d = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise CaptionOptionError(str(p), f"cannot parse: {e}") from e
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise CaptionOptionError(str(p), f"must hold a mapping of {', '.join(FIELDS)}")
    extra = set(d) - set(FIELDS)
    if extra:
        raise CaptionOptionError(str(p), f"unknown key(s) {sorted(extra)} (known: {', '.join(FIELDS)})")
    return parse_caption_options(d, p.name)


def options_from_flags(hotword: list[str], replace: list[str], mask: list[str], tracks: str | None) -> dict:
    """The ``start`` schema (a dict, unvalidated) from command-line flags: ``--hotword
    PHRASE[:BOOST]``, ``--replace FROM=TO``, ``--mask WORD`` (each repeated) and ``--tracks
    speech,lyrics``; absent flags give absent fields.

    Raises:
        CaptionOptionError: a ``--replace`` without ``=``.
    """
    d: dict = {}
    hot = []
    for h in hotword:
        phrase, sep, boost = h.rpartition(":")
        try:
            hot.append({"phrase": phrase, "boost": float(boost)} if sep and phrase else h)
        except ValueError:
            hot.append(h)  # a colon inside the phrase
    if hot:
        d["hotwords"] = hot
    rep = []
    for r in replace:
        src, sep, dst = r.partition("=")
        if not sep:
            raise CaptionOptionError("--replace", f"expected FROM=TO, got {r!r}")
        rep.append({"from": src, "to": dst})
    if rep:
        d["replace"] = rep
    if mask:
        d["mask"] = list(mask)
    if tracks is not None:
        d["tracks"] = [t.strip() for t in tracks.split(",") if t.strip()]
    return d
