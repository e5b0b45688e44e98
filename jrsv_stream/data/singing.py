"""Synthetic singing with known lyrics and word timings.

Two back ends, both driven by :func:`jrsv_stream.data.melody.make_melody` (one note per
syllable, rests between phrases):

- **Festival singing mode** with the diphone voices (score XML; those voices sing one
  octave below the written note, so notes are written +12). Syllable counts come from
  Festival's own lexicon so the score matches what it sings; word times are read from the
  sung utterance.
- **WORLD re-pitching** (:mod:`jrsv_stream.data.world_sing`) of speech from any TTS voice
  of :mod:`jrsv_stream.data.tts`: many more singer identities.

Singer voices: ``festival-sing:<voice>`` and ``world:<tts voice id>``. The test split uses
``festival-sing:ked_diphone`` and WORLD over held-out TTS voices only.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from jrsv_stream.data.melody import WordNotes, beats_to_seconds, count_syllables, make_melody
from jrsv_stream.data.tts import TtsRequest, Utterance, Voice, _finish, _scheme_str, run_festival, synthesize, voices_for_split

FESTIVAL_SINGERS = {"train": ("kal_diphone",), "valid": ("kal_diphone",), "test": ("ked_diphone",)}
_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_HIGH_VOICE_HINTS = ("+f", "annie", "belinda", "grandma", "linda", "steph", "slt")


@dataclass(frozen=True)
class SingRequest:
    """One sung line.

    Attributes:
        words: lyric words.
        singer: ``festival-sing:<diphone voice>`` or ``world:<tts voice id>``.
        tempo_bpm: tempo.
        key_midi: tonic (pitch class used).
        seed: seed of the melody (and of the TTS speed/pitch for WORLD singers).
    """

    words: tuple[str, ...]
    singer: str
    tempo_bpm: float
    key_midi: int
    seed: int


def singers_for_split(split: str) -> list[str]:
    fest = [f"festival-sing:{v}" for v in FESTIVAL_SINGERS[split]]
    return fest + [f"world:{v.id}" for v in voices_for_split(split)]


def pitch_range(singer: str) -> tuple[int, int]:
    """Sung MIDI range: higher for female-sounding voices."""
    if any(h in singer for h in _HIGH_VOICE_HINTS):
        return 57, 74  # A3..D5
    return 45, 62  # A2..D4


def _note_name(midi: int) -> str:
    return f"{_NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def score_xml(melody: list[WordNotes], tempo_bpm: float, octave_up: int = 12) -> str:
    """Festival singing-mode score (notes written ``octave_up`` semitones above sung)."""
    rows = [f'<?xml version="1.0"?>\n<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD SINGING mark up//EN" '
            f'"Singing.v0_1.dtd" []>\n<SINGING BPM="{tempo_bpm:.1f}">']
    for wn in melody:
        beats = ",".join(f"{n.beats:.3f}" for n in wn.notes)
        notes = ",".join(_note_name(n.midi + octave_up) for n in wn.notes)
        rows.append(f'<DURATION BEATS="{beats}"><PITCH NOTE="{notes}">{wn.word}</PITCH></DURATION>')
        if wn.rest_after_beats > 0:
            rows.append(f'<REST BEATS="{wn.rest_after_beats:.3f}"></REST>')
    rows.append("</SINGING>\n")
    return "\n".join(rows)


def _festival_syllables(words: set[str], voice: str, tmp: Path, cache: dict[str, int]) -> None:
    todo = sorted(w for w in words if w not in cache)
    if not todo:
        return
    body = f"(voice_{voice})\n(mapcar (lambda (w) (format t \"S %s %d\\n\" w (length (car (cdr (cdr (lex.lookup w nil))))))) '(" \
        + " ".join(_scheme_str(w) for w in todo) + "))\n"
    script = tmp / "syl.scm"
    script.write_text(body)
    import subprocess

    res = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, cwd=tmp)
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "S":
            cache[parts[1]] = max(1, int(parts[2]))
    for w in todo:  # words Festival could not look up: heuristic
        cache.setdefault(w, count_syllables(w))


_SYLLABLES: dict[str, int] = {}


def sing(requests: list[SingRequest], workdir: str | Path | None = None) -> list[Utterance | None]:
    """Sing a batch of lines; returns 16 kHz audio and word times for each (None on failure)."""
    out: list[Utterance | None] = [None] * len(requests)
    tmp = Path(tempfile.mkdtemp(prefix="sing-", dir=workdir))
    try:
        fest = [(i, r) for i, r in enumerate(requests) if r.singer.startswith("festival-sing:")]
        world = [(i, r) for i, r in enumerate(requests) if r.singer.startswith("world:")]
        if len(fest) + len(world) != len(requests):
            bad = [r.singer for r in requests if not r.singer.startswith(("festival-sing:", "world:"))]
            raise ValueError(f"unknown singers {bad}")
        if fest:
            for i, u in zip([i for i, _ in fest], _festival_sing([r for _, r in fest], tmp)):
                out[i] = u
        if world:
            for i, u in zip([i for i, _ in world], _world_sing([r for _, r in world], tmp)):
                out[i] = u
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _melody_for(r: SingRequest, syllables: list[int]) -> list[WordNotes]:
    rng = np.random.default_rng(r.seed)
    low, high = pitch_range(r.singer)
    return make_melody(rng, list(r.words), syllables, r.key_midi, low, high)


def _festival_sing(reqs: list[SingRequest], tmp: Path) -> list[Utterance | None]:
    voices = {r.singer.split(":", 1)[1] for r in reqs}
    for v in sorted(voices):
        _festival_syllables({w for r in reqs for w in r.words}, v, tmp, _SYLLABLES)
    body = ["(set! jrsv_utts nil)", "(set! tts_hooks (list utt.synth (lambda (utt) (set! jrsv_utts (cons utt jrsv_utts)))))"]
    melodies = []
    for i, r in enumerate(reqs):
        mel = _melody_for(r, [_SYLLABLES[w] for w in r.words])
        melodies.append(mel)
        (tmp / f"song{i}.xml").write_text(score_xml(mel, r.tempo_bpm))
        # unwind-protect: a song Festival chokes on must not abort the songs after it
        body += [f"(unwind-protect (begin (voice_{r.singer.split(':', 1)[1]}) (set! jrsv_utts nil) "
                 f"(tts_file \"song{i}.xml\" 'singing) "
                 f"(if (equal? (length jrsv_utts) 1) (jrsv_dump (car jrsv_utts) \"g{i}.wav\"))) nil)"]
    dumped = run_festival("\n".join(body) + "\n", tmp)
    out: list[Utterance | None] = []
    for i, r in enumerate(reqs):
        fw, wav = dumped.get(f"g{i}.wav"), tmp / f"g{i}.wav"
        if fw is None or len(fw) != len(r.words) or not wav.is_file():
            out.append(None)
            continue
        audio, sr = sf.read(str(wav), dtype="float32")
        words = [(w, s, e) for w, (_, s, e) in zip(r.words, fw)]
        req = TtsRequest(" ".join(r.words), r.words, Voice("festival", r.singer))
        u = _finish(audio, sr, words, req, {"tempo_bpm": r.tempo_bpm, "key_midi": r.key_midi,
                                            "notes": [[n.midi for n in wn.notes] for wn in melodies[i]]})
        out.append(None if u is None else Utterance(u.audio, u.words, r.singer, u.params))
    return out


def _world_sing(reqs: list[SingRequest], tmp: Path) -> list[Utterance | None]:
    from jrsv_stream.data.world_sing import sing_with_world

    tts_reqs = []
    for r in reqs:
        engine, name = r.singer.split(":", 1)[1].split(":", 1)
        rng = np.random.default_rng(r.seed + 1)
        tts_reqs.append(TtsRequest(" ".join(r.words) + ".", r.words, Voice(engine, name),
                                   speed=float(rng.uniform(0.85, 1.1)), pitch=float(rng.uniform(-0.5, 0.5))))
    speech = synthesize(tts_reqs, tmp)
    out: list[Utterance | None] = []
    for r, sp in zip(reqs, speech):
        if sp is None:
            out.append(None)
            continue
        mel = _melody_for(r, [count_syllables(w) for w in r.words])
        try:
            audio, words = sing_with_world(sp.audio, 16000, sp.words, mel, r.tempo_bpm, np.random.default_rng(r.seed + 2))
        except ValueError:
            out.append(None)
            continue
        req = TtsRequest(" ".join(r.words), r.words, Voice("world", r.singer))
        u = _finish(np.asarray(audio, dtype=np.float32), 16000, list(words), req,
                    {"tempo_bpm": r.tempo_bpm, "key_midi": r.key_midi, "tts": sp.params,
                     "notes": [[n.midi for n in wn.notes] for wn in mel]})
        out.append(None if u is None else Utterance(u.audio, u.words, r.singer, u.params))
    return out


def seconds_of(melody: list[WordNotes], tempo_bpm: float) -> float:
    return beats_to_seconds(sum(sum(n.beats for n in wn.notes) + wn.rest_after_beats for wn in melody), tempo_bpm)
