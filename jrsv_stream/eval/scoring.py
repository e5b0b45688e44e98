"""Scoring of caption tracks (shared by the system evaluation, the joint trainer and the
benches): the text normalization, word/character error counts per track, SNR buckets, and
the separation summary by scenario."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

TRACK_SOURCE = {"speech": "speech", "lyrics": "singing"}  # caption track -> manifest source
SNR_BUCKETS = ("-5", "0", "5")
_NON_WORD = re.compile(r"[^a-z0-9' ]+")


# --- text and counts ----------------------------------------------------------------------------
def normalize_text(text: str | None) -> str:
    """Lowercase, punctuation removed (apostrophes inside words kept), numbers in words
    (Whisper's finals write "Press 1", references say "press one"), single spaces.

    ``None`` (track absent) gives ``""``.
    """
    if not text:
        return ""
    from jrsv_stream.decode.numbers import spell_digits

    t = spell_digits(_NON_WORD.sub(" ", text.lower().replace("\u2019", "'")))
    return " ".join(w.strip("'") for w in t.split() if w.strip("'"))


@dataclass
class ErrorCounts:
    """Edit counts of a group of items on one track (corpus-level WER/CER = errors / refs).

    ``word_errors`` / ``char_errors`` include the hallucinated words / characters of items
    whose reference is absent.
    """

    word_errors: int = 0
    ref_words: int = 0
    char_errors: int = 0
    ref_chars: int = 0
    hallucinated_words: int = 0
    items: int = 0
    ref_items: int = 0

    def __iadd__(self, o: "ErrorCounts") -> "ErrorCounts":
        for k, v in asdict(o).items():
            setattr(self, k, getattr(self, k) + v)
        return self

    def to_json(self) -> dict:
        return {"wer": round(100.0 * self.word_errors / self.ref_words, 3) if self.ref_words else None,
                "cer": round(100.0 * self.char_errors / self.ref_chars, 3) if self.ref_chars else None,
                "n_ref_words": self.ref_words, "n_ref_chars": self.ref_chars,
                "word_errors": self.word_errors, "char_errors": self.char_errors,
                "hallucinated_words": self.hallucinated_words, "n_items": self.items, "n_ref_items": self.ref_items}


def count_errors(ref: str | None, hyp: str | None) -> ErrorCounts:
    """Edits of one item's hypothesis against its reference (both normalized here).

    An absent or empty reference: every hypothesis word is an insertion (and hallucinated);
    jiwer is only called on non-empty references (it rejects or misreads empty ones).
    """
    import jiwer

    r, h = normalize_text(ref), normalize_text(hyp)
    if not r:
        n = len(h.split())
        return ErrorCounts(word_errors=n, char_errors=len(h), hallucinated_words=n, items=1)
    n_words, n_chars = len(r.split()), len(r)
    if not h:
        return ErrorCounts(word_errors=n_words, ref_words=n_words, char_errors=n_chars, ref_chars=n_chars, items=1, ref_items=1)
    w = jiwer.process_words(r, h)
    c = jiwer.process_characters(r, h)
    return ErrorCounts(word_errors=w.substitutions + w.deletions + w.insertions, ref_words=n_words,
                       char_errors=c.substitutions + c.deletions + c.insertions, ref_chars=n_chars, items=1, ref_items=1)


def track_bucket(extra: dict, source: str) -> str | None:
    """SNR bucket ("-5" / "0" / "5") of ``source`` in a manifest item's extra fields: the
    manifest's ``<source>_snr_bucket``, else the nearest bucket of ``<source>_snr_db``."""
    from jrsv_stream.data.mixing import snr_bucket

    b = extra.get(f"{source}_snr_bucket")
    if b is None:
        snr = extra.get(f"{source}_snr_db")
        if snr is None or not math.isfinite(float(snr)):
            return None
        b = snr_bucket(float(snr))
    return str(int(b))


def score_tracks(records: list[dict]) -> dict:
    """WER/CER per track, overall, per SNR bucket and per scenario.

    Args:
        records: one per item: ``{"scenario": str | None, "speech": {"ref", "hyp",
            "snr_bucket"}, "lyrics": {...}}`` (``ref`` None when the track is absent,
            ``snr_bucket`` None when its source is absent).

    Returns:
        ``{track: {**ErrorCounts.to_json(), "last_partial_wer", "by_snr": {bucket: {...}},
        "by_scenario": {scenario: {...}}}}`` with only the buckets / scenarios that occur;
        ``last_partial_wer``: WER of the last partial before each final (records with
        ``last_partial``), the caption a viewer read before the final replaced it.
    """
    out = {}
    for track in TRACK_SOURCE:
        total, partial = ErrorCounts(), ErrorCounts()
        by_snr: dict[str, ErrorCounts] = {}
        by_scen: dict[str, ErrorCounts] = {}
        for rec in records:
            t = rec[track]
            c = count_errors(t["ref"], t["hyp"])
            total += c
            if "last_partial" in t:
                partial += count_errors(t["ref"], t["last_partial"])
            if t.get("snr_bucket") is not None:
                by_snr.setdefault(str(t["snr_bucket"]), ErrorCounts()).__iadd__(c)
            by_scen.setdefault(str(rec.get("scenario")), ErrorCounts()).__iadd__(c)
        out[track] = {**total.to_json(),
                      "last_partial_wer": partial.to_json()["wer"] if partial.items else None,
                      "by_snr": {b: by_snr[b].to_json() for b in sorted(by_snr, key=float)},
                      "by_scenario": {s: v.to_json() for s, v in sorted(by_scen.items())}}
    return out


def summarize_separation_by_scenario(scores: list[dict]) -> dict:
    """:func:`jrsv_stream.eval.separation.summarize_separation` overall, plus
    ``by_scenario``: {scenario: {"si_sdri": {source: dB}, "items": n}}."""
    from jrsv_stream.eval.separation import summarize_separation

    res = summarize_separation(scores)
    groups: dict[str, list[dict]] = {}
    for s in scores:
        groups.setdefault(str(s["scenario"]), []).append(s)
    res["by_scenario"] = {k: {"si_sdri": {src: v for src, v in summarize_separation(g)["si_sdri"].items()
                                          if any(src in x["si_sdri"] for x in g)}, "items": len(g)}
                          for k, g in sorted(groups.items())}
    return res
