"""MIDI composition of a music-stem piece: the arrangement of a song in a style (sections,
chords, drums, bass, harmony bed, arpeggios, lead), notes in seconds before rendering."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jrsv_stream.data.music_styles import (AUX_PERC, BLUES, COMP_RHYTHMS_34, COMP_RHYTHMS_44, CRASHES, DRUM_NOTES,
                                           LEAD_RANGE, MODES, PATTERNS_34, PATTERNS_44, PROGRESSIONS, STYLES, TOMS,
                                           _allowed, _pick, _weighted)

# --------------------------------------------------------------------------------------
# Arrangement (notes in seconds, before rendering)
# --------------------------------------------------------------------------------------


@dataclass
class _Song:
    bpm: float
    beats_per_bar: int
    tonic: int
    mode: str
    style: str
    chords: list  # (start_beat, dur_beats, root_pc, pcs)
    sections: list  # (start_bar, n_bars, label)
    n_bars: int
    swing: float
    parts: dict  # name -> dict(program, notes=[(t0, t1, pitch, vel)], ...)
    drum_events: list  # (time_s, gm_note, velocity)
    drum_kit: int | None

    @property
    def spb(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar_s(self) -> float:
        return self.beats_per_bar * self.spb


class _Arranger:
    """Writes the notes of one song. Times are in beats until ``_t`` converts them."""

    def __init__(self, rng: np.random.Generator, style_name: str, bpm: float | None,
                 total_s: float, meter_34: bool | None = None):
        self.rng = rng
        st = self.st = STYLES[style_name]
        self.style_name = style_name
        self.bpm = float(bpm) if bpm is not None else float(rng.uniform(*st["tempo"]))
        self.bpm = float(np.clip(self.bpm, 60.0, 180.0))
        if meter_34 is None:
            meter_34 = bool(rng.random() < st["m34"])
        self.bpb = 3 if meter_34 else 4
        self.mode = _weighted(rng, st["modes"])
        self.tonic = int(rng.integers(12))
        self.spb = 60.0 / self.bpm
        self.n_bars = int(math.ceil(total_s / (self.bpb * self.spb))) + 1
        lo, hi = st.get("swing", (0.0, 0.0))
        self.swing = float(rng.uniform(lo, hi)) if hi > 0 and rng.random() < 0.7 else 0.0
        self.jitter = float(rng.uniform(0.0, 0.012))
        self.sections = self._sections()
        self.chords = self._chords()
        self.parts: dict[str, dict] = {}
        self.drum_events: list = []
        self.drum_kit: int | None = None

    # --- time -------------------------------------------------------------------------
    def _t(self, beat: float, humanize: bool = True, jitter_scale: float = 1.0) -> float:
        """Seconds for a beat position, with swing and a little timing noise."""
        b = math.floor(beat)
        f = beat - b
        if self.swing > 0:  # delay the off-beat 8th by up to a triplet
            d = self.swing / 6.0
            f = f * (0.5 + d) / 0.5 if f < 0.5 else 0.5 + d + (f - 0.5) * (0.5 - d) / 0.5
        t = (b + f) * self.spb
        if humanize and self.jitter > 0:
            t += float(self.rng.normal(0.0, self.jitter * jitter_scale))
        return max(t, 0.0)

    def _vel(self, base: float, spread: float = 8.0) -> int:
        return int(np.clip(round(base + self.rng.normal(0, spread / 2)), 1, 127))

    # --- form and harmony -----------------------------------------------------------
    def _sections(self):
        rng, out, bar = self.rng, [], 0
        sec_len = int(_pick(rng, [4, 8, 8])) if self.bpm < 130 else int(_pick(rng, [8, 8, 16]))
        labels = _pick(rng, ["AABB", "ABAB", "AAB", "ABAC", "ABCB"])
        i = 0
        while bar < self.n_bars:
            out.append((bar, sec_len, labels[i % len(labels)]))
            bar += sec_len
            i += 1
        return out

    def _chord(self, degree: int, seventh: bool, blues: bool = False):
        scale = MODES[self.mode]
        pcs = [(self.tonic + scale[(degree + 2 * i) % 7]) % 12 for i in range(4 if seventh else 3)]
        if self.mode == "minor" and degree == 4 and self.rng.random() < 0.5:
            pcs[1] = (pcs[1] + 1) % 12  # harmonic-minor dominant
        if blues:
            r = (self.tonic + (0, 0, 0, 5, 7)[degree]) % 12
            pcs = [r, (r + 4) % 12, (r + 7) % 12, (r + 10) % 12]
        return pcs[0], pcs

    def _chords(self):
        rng, st = self.rng, self.st
        blues = (self.mode in ("major", "mixolydian") and rng.random() < 0.2
                 and self.style_name in ("rock", "jazz", "funk", "country"))
        progs = {lab: (BLUES if blues else _pick(rng, PROGRESSIONS[self.mode])) for lab in "ABC"}
        rhythm = 1.0 if blues else float(_pick(rng, [1.0, 1.0, 1.0, 0.5, 2.0]))
        chord_beats = self.bpb * rhythm
        sev = st["sev"]
        out = []
        for start_bar, n_bars, lab in self.sections:
            prog = progs[lab]
            beat, end = start_bar * self.bpb, (start_bar + n_bars) * self.bpb
            i = 0
            while beat < end - 1e-9:
                dur = min(chord_beats, end - beat)
                seventh = rng.random() < sev
                root, pcs = self._chord(prog[i % len(prog)], seventh, blues)
                out.append((beat, dur, root, pcs))
                beat += dur
                i += 1
        return out

    def _section_at(self, beat: float):
        bar = int(beat // self.bpb)
        for s in self.sections:
            if s[0] <= bar < s[0] + s[1]:
                return s
        return self.sections[-1]

    def _voicing(self, pcs, center: int, prev, n: int | None = None, power: bool = False):
        if power:
            root = pcs[0]
            lo = center - 7 + ((root - (center - 7)) % 12)
            return [lo, lo + 7, lo + 12]
        pcs = list(pcs) if n is None else list(pcs)[:n]
        best, best_score = None, None
        for inv in range(len(pcs)):
            rot = pcs[inv:] + pcs[:inv]
            for lo in range(center - 9, center + 3):
                if lo % 12 != rot[0]:
                    continue
                notes = [lo]
                for pc in rot[1:]:
                    nxt = notes[-1] + 1 + ((pc - notes[-1] - 1) % 12)
                    notes.append(nxt)
                if prev:
                    score = sum(abs(a - b) for a, b in zip(sorted(prev), notes))
                    score += abs(len(prev) - len(notes)) * 3
                else:
                    score = abs(np.mean(notes) - center)
                score += float(self.rng.random()) * 0.5
                if best_score is None or score < best_score:
                    best, best_score = notes, score
        return best

    # --- parts ------------------------------------------------------------------------
    def add_part(self, name: str, program: int, notes: list, volume: int, **cc):
        self.parts[name] = dict(program=int(program), notes=notes, volume=int(volume), **cc)

    def active(self, prob: float):
        """Per-section on/off flags (section label -> bool), at least one section on."""
        labels = sorted({s[2] for s in self.sections})
        flags = {lab: bool(self.rng.random() < prob) for lab in labels}
        if not any(flags.values()):
            flags[_pick(self.rng, labels)] = True
        return flags

    def bed_pad(self, program: int, center: int):
        notes, prev = [], None
        n_voices = 4 if self.rng.random() < 0.5 else 3
        vel = self.rng.uniform(55, 90)
        for beat, dur, root, pcs in self.chords:
            voic = self._voicing(pcs, center, prev, n=n_voices)
            prev = voic
            t0, t1 = self._t(beat, jitter_scale=0.5), self._t(beat + dur) + 0.08
            for p in voic:
                notes.append((t0, t1, p, self._vel(vel)))
        return notes

    def comp(self, program: int, center: int, flags=None, power=False):
        rng = self.rng
        rhythms = COMP_RHYTHMS_34 if self.bpb == 3 else COMP_RHYTHMS_44
        if self.st.get("skank") and self.bpb == 4:
            rhythm = "..x...x...x...x."
        else:
            rhythm = _pick(rng, rhythms)
        steps = len(rhythm)
        step_beats = self.bpb / steps
        hits = [i for i, c in enumerate(rhythm) if c != "."]
        legato = float(rng.uniform(0.5, 0.95))
        strum = program in range(24, 32) or program in (105, 106, 107)
        vel = rng.uniform(60, 95)
        notes, prev = [], None
        for beat, dur, root, pcs in self.chords:
            if flags is not None and not flags[self._section_at(beat)[2]]:
                continue
            voic = self._voicing(pcs, center, prev, power=power)
            prev = voic
            bar0 = math.floor(beat / self.bpb) * self.bpb
            for bar in np.arange(bar0, beat + dur, self.bpb):
                for k, h in enumerate(hits):
                    b = bar + h * step_beats
                    if b < beat - 1e-9 or b >= beat + dur - 1e-9:
                        continue
                    nxt = bar + (hits[k + 1] * step_beats if k + 1 < len(hits) else self.bpb)
                    length = max((min(nxt, beat + dur) - b) * legato, 0.2)
                    t0 = self._t(b)
                    t1 = t0 + length * self.spb
                    accent = 10 if h == 0 else 0
                    order = voic if (not strum or k % 2 == 0) else voic[::-1]
                    for j, p in enumerate(order):
                        d = j * float(rng.uniform(0.008, 0.02)) if strum else 0.0
                        notes.append((t0 + d, t1, p, self._vel(vel + accent)))
        return notes

    def arp(self, program: int, center: int, flags=None):
        rng = self.rng
        shape = _pick(rng, ["up", "down", "updown", "alberti", "random"])
        rate = float(_pick(rng, [0.5, 0.5, 0.25] if self.bpm < 120 else [0.5, 0.5, 1.0]))
        span = int(_pick(rng, [1, 2]))
        legato = float(rng.uniform(0.6, 1.2))
        vel = rng.uniform(55, 90)
        notes, prev = [], None
        for beat, dur, root, pcs in self.chords:
            if flags is not None and not flags[self._section_at(beat)[2]]:
                continue
            voic = self._voicing(pcs, center, prev)
            prev = voic
            tones = sorted(voic + ([p + 12 for p in voic] if span == 2 else []))
            if shape == "down":
                seq = tones[::-1]
            elif shape == "updown":
                seq = tones + tones[-2:0:-1]
            elif shape == "alberti":
                seq = [tones[0], tones[2 % len(tones)], tones[1], tones[2 % len(tones)]]
            elif shape == "random":
                seq = list(rng.permutation(tones))
            else:
                seq = tones
            n = int(round(dur / rate))
            for i in range(n):
                b = beat + i * rate
                t0 = self._t(b)
                accent = 12 if (i * rate) % 1.0 == 0 else 0
                notes.append((t0, t0 + rate * legato * self.spb, int(seq[i % len(seq)]),
                              self._vel(vel + accent)))
        return notes

    def bass(self, program: int, pattern: str, kick_steps=None):
        rng = self.rng
        vel = rng.uniform(80, 105)
        notes = []
        legato = float(rng.uniform(0.6, 0.95))
        chords = self.chords
        scale = MODES[self.mode]

        def low(pc):
            return 28 + (pc - 28) % 12  # E1..D#2

        for ci, (beat, dur, root, pcs) in enumerate(chords):
            r = low(root)
            fifth = low((root + 7) % 12)
            fifth = fifth if fifth > r else fifth + 12
            nxt_root = low(chords[ci + 1][2]) if ci + 1 < len(chords) else r
            events = []  # (beat offset, length, pitch)
            if pattern == "whole":
                events = [(0.0, dur, r)]
            elif pattern == "quarters":
                events = [(float(i), 1.0, r) for i in range(int(dur))]
            elif pattern == "eighths":
                events = [(i * 0.5, 0.5, r) for i in range(int(dur * 2))]
            elif pattern == "octave":
                events = [(i * 0.5, 0.5, r + 12 * (i % 2)) for i in range(int(dur * 2))]
            elif pattern == "root5":
                if self.bpb == 3:
                    events = [(float(i), 1.0, r if i % 3 == 0 else fifth) for i in range(int(dur))]
                else:
                    events = [(float(i), 2.0, r if i % 4 == 0 else fifth)
                              for i in range(0, int(dur), 2)]
            elif pattern == "walking":
                n = max(int(dur), 1)
                cur = r
                for i in range(n):
                    if i == 0:
                        p = r
                    elif i == n - 1:
                        p = nxt_root + int(_pick(rng, [-1, 1, -2, 2]))
                    else:
                        cand = [low(pc) for pc in pcs] + [low(pc) + 12 for pc in pcs]
                        cand += [low((self.tonic + s) % 12) for s in scale]
                        cand = [c for c in cand if abs(c - cur) <= 7] or [r]
                        p = int(_pick(rng, cand))
                    cur = p
                    events.append((float(i), 1.0, p))
            elif pattern in ("syncop", "kick"):
                steps = kick_steps if (pattern == "kick" and kick_steps) else None
                if steps is None:
                    grid = "x..x..x...x..x.." if self.bpb == 4 else "x..x..x....."
                    steps = [i for i, c in enumerate(grid) if c != "."]
                n_steps = 16 if self.bpb == 4 else 12
                sb = self.bpb / n_steps
                bar0 = math.floor(beat / self.bpb) * self.bpb
                for bar in np.arange(bar0, beat + dur, self.bpb):
                    for k, s in enumerate(steps):
                        b = bar + s * sb
                        if beat - 1e-9 <= b < beat + dur - 1e-9:
                            nxt = steps[k + 1] * sb if k + 1 < len(steps) else self.bpb
                            p = r if (k == 0 or rng.random() < 0.7) else _pick(rng, [fifth, r + 12])
                            events.append((b - beat, nxt - s * sb, p))
            for off, length, p in events:
                if off >= dur - 1e-9:
                    continue
                length = min(length, dur - off)
                t0 = self._t(beat + off)
                notes.append((t0, t0 + max(length * legato, 0.2) * self.spb, int(p),
                              self._vel(vel + (8 if off == 0 else 0))))
        return notes

    def lead(self, program: int, flags):
        rng = self.rng
        lo, hi = LEAD_RANGE.get(program, (60, 84))
        scale = MODES[self.mode]
        pitches = [p for p in range(lo, hi + 1) if (p - self.tonic) % 12 in scale]
        idx = len(pitches) // 2
        vel = rng.uniform(75, 105)
        cells = [[1.0], [0.5, 0.5], [0.75, 0.25], [1.5, 0.5], [2.0], [0.5, 1.0, 0.5],
                 [0.25, 0.25, 0.5], [1.0, 1.0], [3.0, 1.0]]
        legato = float(rng.uniform(0.75, 1.0))
        notes = []
        phrase_bars = int(_pick(rng, [2, 4]))
        chord_at = {}
        for beat, dur, root, pcs in self.chords:
            chord_at[int(beat)] = pcs
        beat = 0.0
        total = self.n_bars * self.bpb
        while beat < total:
            sec = self._section_at(beat)
            end = beat + phrase_bars * self.bpb
            if not flags[sec[2]] or rng.random() < 0.2:
                beat = end
                continue
            b = beat + float(_pick(rng, [0.0, 0.0, 0.5, 1.0]))
            stop = end - float(_pick(rng, [1.0, 2.0, 1.5]))
            while b < stop:
                for d in _pick(rng, cells):
                    if b >= stop:
                        break
                    if rng.random() < 0.1:  # short rest
                        b += d
                        continue
                    step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3, 4, -4],))
                    idx = int(np.clip(idx + step, 0, len(pitches) - 1))
                    p = pitches[idx]
                    if abs(b - round(b)) < 1e-9 and rng.random() < 0.7:  # chord tone on the beat
                        cur = None
                        for cb in sorted(chord_at):
                            if cb <= b:
                                cur = chord_at[cb]
                        if cur:
                            cands = [q for q in pitches if q % 12 in cur]
                            if cands:
                                p = min(cands, key=lambda q: abs(q - p))
                                idx = pitches.index(p)
                    dd = min(d, stop - b + 1.0)
                    t0 = self._t(b)
                    notes.append((t0, t0 + dd * legato * self.spb, int(p),
                                  self._vel(vel + (6 if b % 1 == 0 else 0))))
                    b += d
            beat = end
        return notes

    def drums(self, pattern_name: str, kit: int):
        rng = self.rng
        table = PATTERNS_34 if self.bpb == 3 else PATTERNS_44
        pat = dict(table[pattern_name])
        triplet = "T" in pat
        pat.pop("T", None)
        steps = len(next(iter(pat.values())))
        sb = self.bpb / steps
        voices = {v: int(_pick(rng, DRUM_NOTES[v])) for v in pat}
        levels = {"o": 40.0, "x": 88.0, "X": 112.0}
        hat_to_ride = rng.random() < 0.3
        aux = AUX_PERC[int(rng.integers(len(AUX_PERC)))] if rng.random() < 0.35 else None
        aux_sec = self.active(0.7) if aux else None
        fills = rng.random() < 0.7
        crash_p = 0.8
        ev = []
        kick_steps = [i for i, c in enumerate(pat.get("K", "")) if c in "xX"]
        dropped = self.active(0.9) if rng.random() < 0.3 else None  # breakdown sections
        for sec_i, (start_bar, n_bars, lab) in enumerate(self.sections):
            if dropped is not None and not dropped[lab]:
                continue
            sec_pat = dict(pat)
            if lab != "A" and hat_to_ride and "H" in sec_pat:
                sec_pat["Y"] = sec_pat.pop("H")
                voices.setdefault("Y", 51)
            # a little per-section variation: an extra kick or ghost snare
            if "K" in sec_pat and rng.random() < 0.4:
                k = list(sec_pat["K"])
                k[int(rng.integers(steps))] = "x"
                sec_pat["K"] = "".join(k)
            for bar in range(start_bar, min(start_bar + n_bars, self.n_bars)):
                bar_beat = bar * self.bpb
                is_fill = fills and bar == start_bar + n_bars - 1 and n_bars >= 4
                fill_from = steps - (steps // 4 if rng.random() < 0.6 else steps // 2)
                for v, s in sec_pat.items():
                    for i, c in enumerate(s):
                        if c == "." or (is_fill and i >= fill_from and v != "K"):
                            continue
                        vel = levels[c] + (6 if i == 0 else 0)
                        ev.append((self._t(bar_beat + i * sb, jitter_scale=0.4), voices[v],
                                   self._vel(vel, 10)))
                if is_fill:
                    tom_seq = list(TOMS) if rng.random() < 0.6 else [38]
                    fill_step = max(1, steps // 16) if not triplet else 1
                    for j, i in enumerate(range(fill_from, steps, fill_step)):
                        note = tom_seq[min(j * len(tom_seq) // max(steps - fill_from, 1),
                                           len(tom_seq) - 1)]
                        ev.append((self._t(bar_beat + i * sb, jitter_scale=0.4), note,
                                   self._vel(70 + 40 * j / max(steps - fill_from, 1), 8)))
                if bar == start_bar and rng.random() < crash_p:
                    ev.append((self._t(bar_beat, jitter_scale=0.4), int(_pick(rng, CRASHES)),
                               self._vel(100, 10)))
                if aux and aux_sec[lab]:
                    note, a = aux
                    a = a[: 12] if self.bpb == 3 else a
                    asb = self.bpb / len(a)
                    for i, c in enumerate(a):
                        if c != ".":
                            ev.append((self._t(bar_beat + i * asb, jitter_scale=0.4), note,
                                       self._vel(70, 12)))
        self.drum_events = sorted(ev)
        self.drum_kit = int(kit)
        kick_16 = None
        if not triplet and kick_steps and steps in (12, 16):
            kick_16 = kick_steps
        return kick_16

    def song(self) -> _Song:
        return _Song(bpm=self.bpm, beats_per_bar=self.bpb, tonic=self.tonic, mode=self.mode,
                     style=self.style_name, chords=self.chords, sections=self.sections,
                     n_bars=self.n_bars, swing=self.swing, parts=self.parts,
                     drum_events=self.drum_events, drum_kit=self.drum_kit)


def _arrange(rng: np.random.Generator, total_s: float, bpm: float | None = None,
             drums: bool | None = None, want_bass: bool = True) -> _Song:
    """A full arrangement for ``total_s`` seconds of music."""
    styles = list(STYLES)
    w = np.array([STYLES[s]["w"] for s in styles])
    style = styles[int(rng.choice(len(styles), p=w / w.sum()))]
    st = STYLES[style]
    ar = _Arranger(rng, style, bpm, total_s, meter_34=False if bpm is not None else None)

    # drums
    use_drums = bool(rng.random() < st["drum_p"]) if drums is None else drums
    kick_steps = None
    if use_drums:
        if ar.bpb == 3:
            name = _pick(rng, st.get("drums34", list(PATTERNS_34)))
        else:
            name = _pick(rng, st["drums"])
        kick_steps = ar.drums(name, int(_pick(rng, st["kits"])))

    # bass
    if want_bass and rng.random() < 0.92:
        prog = int(_pick(rng, _allowed(st["bass"])))
        pattern = _pick(rng, st["bass_pat"])
        ar.add_part("bass", prog, ar.bass(prog, pattern, kick_steps),
                    volume=int(rng.integers(90, 115)))

    # harmony bed: a sustained pad and/or a rhythmic comp; the bed never stops
    has_pad = rng.random() < 0.75
    has_comp = rng.random() < 0.75 or not has_pad
    center = int(rng.integers(55, 66))
    if has_pad:
        prog = int(_pick(rng, _allowed(st["pad"])))
        ar.add_part("pad", prog, ar.bed_pad(prog, center), volume=int(rng.integers(70, 105)))
    if has_comp:
        prog = int(_pick(rng, _allowed(st["comp"])))
        power = prog in (29, 30) and rng.random() < st.get("power", 0.0)
        flags = None if not has_pad else ar.active(0.75)
        ar.add_part("comp", prog, ar.comp(prog, center + int(rng.integers(-3, 6)), flags, power),
                    volume=int(rng.integers(80, 112)))
    if rng.random() < 0.45:
        prog = int(_pick(rng, _allowed(st["arp"])))
        ar.add_part("arp", prog, ar.arp(prog, int(rng.integers(62, 74)), ar.active(0.65)),
                    volume=int(rng.integers(65, 100)))
    if rng.random() < 0.4:
        prog = int(_pick(rng, _allowed(st["lead"])))
        ar.add_part("lead", prog, ar.lead(prog, ar.active(0.7)), volume=int(rng.integers(85, 115)))
    return ar.song()


def _clip_song(song: _Song, end_s: float) -> _Song:
    """Drop notes starting after ``end_s`` (sections may run past the needed length)."""
    parts = {name: {**part, "notes": [(t0, min(t1, end_s + 1.0), p, v)
                                      for t0, t1, p, v in part["notes"] if t0 < end_s]}
             for name, part in song.parts.items()}
    drums = [e for e in song.drum_events if e[0] < end_s]
    chords = [c for c in song.chords if c[0] * song.spb < end_s]
    return _Song(**{**song.__dict__, "parts": parts, "drum_events": drums, "chords": chords})
