"""Singable melodies for synthetic singing: one note per syllable, rests between phrases.

A melody is a list of :class:`WordNotes`, one per lyric word, each holding exactly one
:class:`Note` per syllable of the word and the rest that follows the word. Both singing
back ends of the synthetic corpus consume it: Festival's singing mode (score XML) and
WORLD re-pitching of TTS speech (:mod:`jrsv_stream.data.world_sing`).

Melodies are built from the key's scale (major or natural minor), move mostly by step
with occasional leaps, stay inside a given pitch range, lengthen phrase-final notes and
close each phrase on a chord tone (the last phrase on the tonic). Everything random is
drawn from the caller's ``numpy.random.Generator``, so a seeded generator gives the same
melody every time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)

_PHRASE_END_PUNCT = ",.;:!?"
_VOWELS = "aeiouy"


@dataclass(frozen=True)
class Note:
    """One sung note.

    Attributes:
        midi: sung MIDI pitch (60 = C4).
        beats: duration in beats (> 0).
    """

    midi: int
    beats: float


@dataclass(frozen=True)
class WordNotes:
    """The notes of one lyric word.

    Attributes:
        word: the word as given (punctuation kept).
        notes: exactly one note per syllable of the word.
        rest_after_beats: rest after the word in beats, 0 for legato.
    """

    word: str
    notes: tuple[Note, ...]
    rest_after_beats: float


def count_syllables(word: str) -> int:
    """Estimate the number of syllables of an English word (always >= 1).

    Heuristic: count vowel groups (``y`` counts as a vowel except word-initially), then
    correct for a silent final ``e`` (but not consonant + ``le`` as in "little"), silent
    ``-ed``/``-es`` endings ("loved", "stones", but not "wanted", "places"), and split
    vowel pairs that are usually two syllables ("lion", "piano", "being").
    """
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return 1
    groups = re.findall(r"[aeiouy]+", w[1:] if w[0] == "y" else w)
    n = len(groups)
    if n == 0:
        return 1

    def is_cons(c: str) -> bool:
        return c.isalpha() and c not in _VOWELS

    # silent final e ("fire", "stone"), but "little", "table" keep their -le syllable
    if w.endswith("e") and not w.endswith(("ee", "ye")) and n > 1:
        if not (w.endswith("le") and len(w) >= 3 and is_cons(w[-3])):
            n -= 1
    # silent -ed ("loved") but not after t/d ("wanted") or a vowel ("freed")
    elif w.endswith("ed") and len(w) >= 4 and n > 1 and is_cons(w[-3]) and w[-3] not in "td":
        n -= 1
    # silent -es ("stones") but not after sibilants ("places", "boxes", "wishes")
    elif w.endswith("es") and len(w) >= 4 and n > 1 and is_cons(w[-3]) and w[-3] not in "sxzcg" \
            and not w.endswith(("ches", "shes")):
        n -= 1
    # vowel pairs usually sung as two syllables
    n += len(re.findall(r"(?<![tscxgq])i[ao]", w))  # lion, piano, violin; not nation, special, region
    n += len(re.findall(r"(?<=[aeiou])ing$", w))  # being, going, seeing
    n += len(re.findall(r"(?<![gq])ua", w))  # usual, actual; not guard, quality
    n += len(re.findall(r"iet", w))  # quiet, diet, society
    return max(1, n)


def beats_to_seconds(beats: float, tempo_bpm: float) -> float:
    """Duration of ``beats`` beats at ``tempo_bpm`` beats per minute, in seconds."""
    if tempo_bpm <= 0:
        raise ValueError(f"tempo must be positive, got {tempo_bpm}")
    return float(beats) * 60.0 / float(tempo_bpm)


def _ends_phrase(word: str) -> bool:
    w = word.rstrip("\"')]}»”’")
    return bool(w) and w[-1] in _PHRASE_END_PUNCT


def make_melody(
    rng: np.random.Generator,
    words: list[str],
    syllables: list[int],
    key_midi: int,
    low_midi: int,
    high_midi: int,
) -> list[WordNotes]:
    """Compose a singable line for ``words``, one note per syllable.

    Args:
        rng: source of all randomness (mode, contour, rhythm, phrase lengths).
        words: lyric words (punctuation kept; a trailing ``,.;:!?`` ends a phrase).
        syllables: number of syllables (notes) of each word, each >= 1.
        key_midi: tonic of the key (any octave; only its pitch class matters).
        low_midi, high_midi: inclusive pitch range of every note.

    Returns:
        One :class:`WordNotes` per word. Notes are mostly on the key's scale (major or
        natural minor, chosen by ``rng``), move by step with occasional leaps, typical
        syllables last 0.5-1 beat, the last note of a phrase 1-3 beats and closes on a
        chord tone; a rest of 0.5-2 beats follows each phrase (after punctuation or every
        4-8 words) except the last word, whose rest is 0.

    Raises:
        ValueError: lengths differ, a syllable count is < 1, or the range is empty.
    """
    if len(words) != len(syllables):
        raise ValueError(f"{len(words)} words but {len(syllables)} syllable counts")
    if any(int(s) < 1 for s in syllables):
        raise ValueError("every word needs at least one syllable")
    if high_midi < low_midi:
        raise ValueError(f"empty pitch range [{low_midi}, {high_midi}]")
    if not words:
        return []

    minor = bool(rng.random() < 0.4)
    scale = MINOR_SCALE if minor else MAJOR_SCALE
    chord = {0, 3 if minor else 4, 7}
    pitches = [p for p in range(low_midi, high_midi + 1) if (p - key_midi) % 12 in scale]
    if len(pitches) < 2:  # range too narrow for the scale: fall back to chromatic
        pitches = list(range(low_midi, high_midi + 1))
    n_p = len(pitches)
    chord_idx = [i for i, p in enumerate(pitches) if (p - key_midi) % 12 in chord] or list(range(n_p))
    tonic_idx = [i for i, p in enumerate(pitches) if (p - key_midi) % 12 == 0] or chord_idx
    center = (n_p - 1) / 2.0

    def nearest(cands: list[int], i: int) -> int:
        d = np.array([abs(c - i) for c in cands], dtype=np.float64)
        best = np.flatnonzero(d == d.min())
        return cands[int(best[rng.integers(len(best))])] if len(best) > 1 else cands[int(best[0])]

    # start on a chord tone in the middle part of the range
    w = np.array([1.0 / (1.0 + abs(c - center)) for c in chord_idx])
    idx = chord_idx[int(rng.choice(len(chord_idx), p=w / w.sum()))]

    steps = np.array([0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5])
    step_p = np.array([0.12, 0.24, 0.24, 0.12, 0.12, 0.05, 0.05, 0.025, 0.025, 0.005, 0.005])
    step_p = step_p / step_p.sum()
    dur_choices = np.array([0.5, 1.0, 1.5])
    dur_p = np.array([0.45, 0.45, 0.10])
    final_choices = np.array([1.0, 1.5, 2.0, 3.0])
    final_p = np.array([0.3, 0.2, 0.35, 0.15])
    rest_choices = np.array([0.5, 1.0, 1.5, 2.0])
    rest_p = np.array([0.3, 0.35, 0.15, 0.2])

    out: list[WordNotes] = []
    phrase_len = int(rng.integers(4, 9))
    in_phrase = 0
    n_words = len(words)
    for wi, (word, n_syl) in enumerate(zip(words, syllables)):
        in_phrase += 1
        last_word = wi == n_words - 1
        phrase_final = last_word or _ends_phrase(word) or in_phrase >= phrase_len
        notes: list[Note] = []
        for si in range(int(n_syl)):
            final_note = phrase_final and si == int(n_syl) - 1
            step = int(rng.choice(steps, p=step_p))
            # lean back toward the middle of the range when far from it
            if abs(idx - center) > n_p / 3.0 and np.sign(step) == np.sign(idx - center) and rng.random() < 0.6:
                step = -step
            new = idx + step
            if new < 0 or new > n_p - 1:
                new = idx - step
            idx = int(np.clip(new, 0, n_p - 1))
            if final_note:
                idx = nearest(tonic_idx if last_word else chord_idx, idx)
                beats = float(rng.choice(final_choices, p=final_p))
            else:
                beats = float(rng.choice(dur_choices, p=dur_p))
            notes.append(Note(midi=int(pitches[idx]), beats=beats))
        rest = 0.0
        if phrase_final and not last_word:
            rest = float(rng.choice(rest_choices, p=rest_p))
        out.append(WordNotes(word=word, notes=tuple(notes), rest_after_beats=rest))
        if phrase_final:
            in_phrase = 0
            phrase_len = int(rng.integers(4, 9))
    return out
