"""Readability rules of subtitle practice, in one place for every caption display.

The SRT/VTT/LRC writers (:mod:`jrsv_stream.export.subtitles`) and the overlay page
(``clients/overlay.html``, which the caption server serves with :func:`rules_json` filled
in) read the same :data:`READABILITY`:

- at most ``max_lines`` lines per track on screen, each at most ``max_chars_per_line``
  characters (broken at word boundaries; a longer word is cut);
- a final stays at least as long as reading it takes at ``max_cps`` characters per second
  (never shorter than ``min_duration_s``, never longer than ``max_duration_s``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Readability:
    """Subtitle readability limits (common broadcast practice: 2 lines of <= 42 characters, ~17 cps)."""

    max_lines: int = 2
    max_chars_per_line: int = 42
    max_cps: float = 17.0
    min_duration_s: float = 0.5
    max_duration_s: float = 7.0

    def __post_init__(self):
        if self.max_lines < 1 or self.max_chars_per_line < 1 or self.max_cps <= 0:
            raise ValueError(f"readability limits must be positive: {self}")
        if not 0 <= self.min_duration_s <= self.max_duration_s:
            raise ValueError(f"need 0 <= min_duration_s <= max_duration_s: {self}")

    def wrap(self, text: str) -> list[str]:
        """Greedy word wrap into lines of at most ``max_chars_per_line`` (all lines, no line limit)."""
        lines: list[str] = []
        cur = ""
        for w in text.split():
            while len(w) > self.max_chars_per_line:  # a word longer than a line is cut
                if cur:
                    lines.append(cur)
                    cur = ""
                lines.append(w[:self.max_chars_per_line])
                w = w[self.max_chars_per_line:]
            if not w:
                continue
            if cur and len(cur) + 1 + len(w) > self.max_chars_per_line:
                lines.append(cur)
                cur = w
            else:
                cur = f"{cur} {w}" if cur else w
        if cur:
            lines.append(cur)
        return lines

    def visible_lines(self, text: str) -> list[str]:
        """The last ``max_lines`` wrapped lines: what a live display shows of a growing caption."""
        return self.wrap(text)[-self.max_lines:]

    def display_s(self, text: str) -> float:
        """How long a final of ``text`` must stay on screen to be read at ``max_cps``."""
        n = len(" ".join(text.split()))
        return min(self.max_duration_s, max(self.min_duration_s, n / self.max_cps))


READABILITY = Readability()


def rules_json(r: Readability = READABILITY) -> str:
    """The rules as the JSON object the overlay page reads (``window.JRSV_RULES``)."""
    return json.dumps(asdict(r), separators=(",", ":"))
