"""Corpus manifests: JSON Lines, one item per line (interface fixed in shared/DESIGN.md).

Required keys: ``id, mixture, speech, singing, music, speech_text, singing_text,
sample_rate``; stems and texts are null when absent. Optional: ``speech_words`` and
``singing_words`` as ``[[word, start_s, end_s], ...]``. Any other key (scenario, SNRs,
voices, instruments, split...) is kept in :attr:`ManifestItem.extra` and written back
unchanged. Paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

REQUIRED_KEYS = ("id", "mixture", "speech", "singing", "music", "speech_text", "singing_text", "sample_rate")
WORD_KEYS = ("speech_words", "singing_words")
STEMS = ("speech", "singing", "music")

Word = tuple[str, float, float]


class ManifestError(ValueError):
    """A manifest file or line is malformed."""


@dataclass(frozen=True)
class ManifestItem:
    """One corpus item. Paths are relative to the manifest's folder."""

    id: str
    mixture: str
    speech: str | None
    singing: str | None
    music: str | None
    speech_text: str | None
    singing_text: str | None
    sample_rate: int
    speech_words: list[Word] | None = None
    singing_words: list[Word] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in REQUIRED_KEYS}
        for k in WORD_KEYS:
            words = getattr(self, k)
            if words is not None:
                d[k] = [[w, round(float(s), 4), round(float(e), 4)] for w, s, e in words]
        for k, v in self.extra.items():
            if k in d:
                raise ManifestError(f"extra key {k!r} collides with a manifest field")
            d[k] = v
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "") -> "ManifestItem":
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise ManifestError(f"{where}missing keys {missing}")
        if not isinstance(d["id"], str) or not d["id"]:
            raise ManifestError(f"{where}'id' must be a non-empty string")
        if not isinstance(d["mixture"], str):
            raise ManifestError(f"{where}'mixture' must be a path string")
        for k in STEMS + ("speech_text", "singing_text"):
            if d[k] is not None and not isinstance(d[k], str):
                raise ManifestError(f"{where}{k!r} must be a string or null")
        if not isinstance(d["sample_rate"], int) or d["sample_rate"] <= 0:
            raise ManifestError(f"{where}'sample_rate' must be a positive integer")
        words: dict[str, list[Word] | None] = {}
        for k in WORD_KEYS:
            raw = d.get(k)
            if raw is None:
                words[k] = None
                continue
            try:
                words[k] = [(str(w), float(s), float(e)) for w, s, e in raw]
            except (TypeError, ValueError) as e:
                raise ManifestError(f"{where}{k!r} must be [[word, start_s, end_s], ...]: {e}") from e
            if any(e < s for _, s, e in words[k]):
                raise ManifestError(f"{where}{k!r} has a word ending before it starts")
        extra = {k: v for k, v in d.items() if k not in REQUIRED_KEYS and k not in WORD_KEYS}
        return cls(**{k: d[k] for k in REQUIRED_KEYS}, **words, extra=extra)

    def path(self, key: str, root: str | os.PathLike) -> Path | None:
        """Absolute path of ``mixture`` or a stem, or None when the stem is absent."""
        rel = getattr(self, key)
        return None if rel is None else Path(root) / rel


def read_manifest(path: str | os.PathLike) -> list[ManifestItem]:
    """Read and validate a manifest. Raises ManifestError naming the bad line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    items = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}: "
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}invalid JSON: {e}") from e
            if not isinstance(d, dict):
                raise ManifestError(f"{where}each line must be a JSON object")
            item = ManifestItem.from_json(d, where)
            if item.id in seen:
                raise ManifestError(f"{where}duplicate id {item.id!r}")
            seen.add(item.id)
            items.append(item)
    return items


def write_manifest(path: str | os.PathLike, items: Iterable[ManifestItem]) -> None:
    """Write items as JSON Lines (atomically: temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
