"""Subtitle files from final captions: SRT and WebVTT per track, LRC for lyrics.

Finals become :class:`Cue` objects (a final longer than ``max_chars`` or ``max_duration_s``
is split at word boundaries using its word times), then formatted. Formats:

- SRT: ``1\\n00:00:01,000 --> 00:00:02,500\\ntext\\n\\n``
- WebVTT: ``WEBVTT\\n\\n00:00:01.000 --> 00:00:02.500\\ntext\\n\\n``
- LRC: ``[mm:ss.xx]line`` per cue; with ``word_times`` the enhanced form
  ``[00:01.00]<00:01.00>word <00:01.50>word``.

:class:`LiveSubtitleWriter` appends cues to open files as finals arrive (a live subscriber,
clients/subtitle_writer.py); :func:`write_subtitles` writes whole files atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Sequence

from jrsv_stream.export.readability import READABILITY
from jrsv_stream.stream.events import Final

FORMATS = ("srt", "vtt", "lrc")


@dataclass(frozen=True)
class Cue:
    """A timed line: ``start_s`` < ``end_s`` in audio time; ``words`` as (w, start_s, end_s)."""

    start_s: float
    end_s: float
    text: str
    words: tuple[tuple[str, float, float], ...] = ()


def _split_words(words: Sequence[tuple[str, float, float]], max_chars: int, max_duration_s: float) -> list[list]:
    groups: list[list] = [[]]
    for w in words:
        g = groups[-1]
        if g:
            chars = sum(len(x[0]) for x in g) + len(g) + len(w[0])
            if chars > max_chars or w[2] - g[0][1] > max_duration_s:
                groups.append([])
        groups[-1].append(w)
    return [g for g in groups if g]


def cues_from_finals(finals: Iterable[Final | dict], track: str | None = None,
                     max_chars: int = READABILITY.max_chars_per_line, max_duration_s: float = READABILITY.max_duration_s,
                     min_duration_s: float = READABILITY.min_duration_s, max_cps: float = READABILITY.max_cps) -> list[Cue]:
    """Finals (events or their dicts) of ``track`` (None: all) -> cues in time order.

    Empty finals are skipped. The limits default to :data:`READABILITY` (shared with the
    overlay page): a cue lasts at least ``min_duration_s`` and at least its reading time at
    ``max_cps`` characters per second, and never overlaps the next cue of the list.
    """
    cues: list[Cue] = []
    for f in finals:
        d = f if isinstance(f, dict) else {"track": f.track, "text": f.text, "words": f.words,
                                           "start_s": f.start_s, "end_s": f.end_s}
        if track is not None and d["track"] != track:
            continue
        text = " ".join(str(d["text"]).split())
        if not text:
            continue
        words = tuple((str(w[0]), float(w[1]), float(w[2])) for w in d.get("words") or ())  # [w, s, e, conf]
        if words and (len(text) > max_chars or words[-1][2] - words[0][1] > max_duration_s):
            for g in _split_words(words, max_chars, max_duration_s):
                cues.append(Cue(g[0][1], g[-1][2], " ".join(w for w, _, _ in g), tuple(g)))
        else:
            cues.append(Cue(float(d["start_s"]), float(d["end_s"]), text, words))
    cues.sort(key=lambda c: c.start_s)
    out = []
    for i, c in enumerate(cues):
        end = max(c.end_s, c.start_s + max(min_duration_s, len(c.text) / max_cps))
        if i + 1 < len(cues):
            end = min(end, max(cues[i + 1].start_s, c.end_s))
        out.append(Cue(c.start_s, max(end, c.start_s + 0.001), c.text, c.words))
    return out


def _hms(t: float, sep: str) -> str:
    ms = int(round(max(0.0, t) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _lrc_time(t: float) -> str:
    cs = int(round(max(0.0, t) * 100))
    m, cs = divmod(cs, 6000)
    s, cs = divmod(cs, 100)
    return f"{m:02d}:{s:02d}.{cs:02d}"


def srt_cue(index: int, c: Cue) -> str:
    return f"{index}\n{_hms(c.start_s, ',')} --> {_hms(c.end_s, ',')}\n{c.text}\n\n"


def vtt_cue(c: Cue) -> str:
    return f"{_hms(c.start_s, '.')} --> {_hms(c.end_s, '.')}\n{c.text}\n\n"


def lrc_line(c: Cue, word_times: bool = False) -> str:
    if word_times and c.words:
        body = " ".join(f"<{_lrc_time(s)}>{w}" for w, s, _ in c.words)
        return f"[{_lrc_time(c.start_s)}]{body}\n"
    return f"[{_lrc_time(c.start_s)}]{c.text}\n"


VTT_HEADER = "WEBVTT\n\n"


def to_srt(cues: Sequence[Cue]) -> str:
    return "".join(srt_cue(i + 1, c) for i, c in enumerate(cues))


def to_vtt(cues: Sequence[Cue]) -> str:
    return VTT_HEADER + "".join(vtt_cue(c) for c in cues)


def to_lrc(cues: Sequence[Cue], word_times: bool = False, title: str | None = None) -> str:
    head = f"[ti:{title}]\n" if title else ""
    return head + "".join(lrc_line(c, word_times) for c in cues)


def format_subtitles(fmt: str, cues: Sequence[Cue], **kw) -> str:
    if fmt == "srt":
        return to_srt(cues)
    if fmt == "vtt":
        return to_vtt(cues)
    if fmt == "lrc":
        return to_lrc(cues, **kw)
    raise ValueError(f"unknown subtitle format {fmt!r} (known: {', '.join(FORMATS)})")


def write_subtitles(path: str | os.PathLike, fmt: str, cues: Sequence[Cue], **kw) -> Path:
    """Write a whole subtitle file atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(format_subtitles(fmt, cues, **kw), encoding="utf-8")
    os.replace(tmp, path)
    return path


class LiveSubtitleWriter:
    """Append cues of one track to a subtitle file as finals arrive (flushed per cue).

    Args:
        path: output file (truncated at open).
        fmt: ``srt`` | ``vtt`` | ``lrc``.
        track: the caption track whose finals are written.
        word_times: enhanced LRC word times.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, track: str, word_times: bool = False,
                 max_chars: int = READABILITY.max_chars_per_line):
        if fmt not in FORMATS:
            raise ValueError(f"unknown subtitle format {fmt!r} (known: {', '.join(FORMATS)})")
        self.path, self.fmt, self.track, self.word_times, self.max_chars = Path(path), fmt, track, word_times, max_chars
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(self.path, "w", encoding="utf-8")
        self.count = 0
        self._last_end = 0.0
        self._pieces: list[Final] = []  # finals of the open utterance (see add's ``more``)
        if fmt == "vtt":
            self._f.write(VTT_HEADER)
        self._f.flush()

    def add(self, final: Final, more: bool = False) -> int:
        """Write the cues of one final (other tracks and empty finals are ignored); returns cues
        written. ``more``: the final is a piece of an utterance that goes on (incremental
        finals; its ``utterance_end`` has not come): it waits, and the utterance's pieces are
        written together as one final by the next call without ``more`` or by
        :meth:`end_utterance`, so a cue is a readable line, not a word or two."""
        if final.track != self.track or not final.text:
            return 0
        self._pieces.append(final)
        return 0 if more else self.end_utterance()

    def end_utterance(self) -> int:
        """Write the waiting pieces as one final's cues; returns cues written."""
        if not self._pieces:
            return 0
        ps, self._pieces = self._pieces, []
        joined = {"track": self.track, "text": " ".join(p.text for p in ps), "words": [w for p in ps for w in p.words],
                  "start_s": ps[0].start_s, "end_s": ps[-1].end_s}
        cues = cues_from_finals([joined], self.track, max_chars=self.max_chars)
        for c in cues:
            c = Cue(max(c.start_s, self._last_end), max(c.end_s, max(c.start_s, self._last_end) + 0.001), c.text, c.words)
            self.count += 1
            if self.fmt == "srt":
                self._f.write(srt_cue(self.count, c))
            elif self.fmt == "vtt":
                self._f.write(vtt_cue(c))
            else:
                self._f.write(lrc_line(c, self.word_times))
            self._last_end = c.end_s
        self._f.flush()
        return len(cues)

    def close(self) -> None:
        if not self._f.closed:
            self.end_utterance()
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
