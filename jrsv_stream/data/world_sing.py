"""Turn TTS speech into singing by WORLD re-pitching (the recipe of ``DATA.md``).

The speech is analysed with WORLD (pyworld: DIO + StoneMask f0 and CheapTrick spectral
envelope on 5 ms frames, D4C aperiodicity on 10 ms frames interpolated to 5 ms). Each
word's frames are trimmed of edge silence and split into one segment per syllable note
(boundaries at energy minima near the even split points). Each segment is time-mapped
onto its note's length: the consonant onset (up to the first voiced frame plus 15 ms, at
least 40 ms) and a short unvoiced coda stay unstretched, the voiced nucleus between them
is stretched (or compressed) by frame-index interpolation of the envelope and
aperiodicity. Voiced output frames get the note's pitch with a short portamento from the
previous note and a vibrato that fades in; unvoiced frames stay unvoiced; rests are
silent frames. WORLD then resynthesizes the waveform.

Word timings in the sung audio come from the frame bookkeeping: a word starts at its first
syllable's first frame and ends at the end of its last note. Note boundaries are rounded
from absolute times, so durations never drift: a word lasts its notes' duration to within
one frame (5 ms).

Pure numpy + pyworld (no threads, no global state): safe in forked worker processes.
"""

from __future__ import annotations

import numpy as np
import pyworld as pw

from jrsv_stream.data.melody import WordNotes, beats_to_seconds

FRAME_PERIOD_MS = 5.0
HOP_S = FRAME_PERIOD_MS / 1000.0
LEAD_S = 0.05  # silence before the first word
TAIL_S = 0.10  # silence after the last note (plus the last word's rest)
PEAK = 0.5

_F0_FLOOR = 60.0
_F0_CEIL = 700.0
_DIO_SPEED = 2  # DIO on a 2x decimated signal: same voicing, half the cost
_ONSET_MIN_FRAMES = 8  # 40 ms
_ONSET_AFTER_VOICING = 3  # keep 15 ms of the vowel attack unstretched
_ONSET_MAX_FRAMES = 40  # longest consonant cluster kept as is (200 ms)
_CODA_MAX_FRAMES = 16  # 80 ms of unvoiced coda kept as is
_MAX_VOICING_GAP = 3  # unvoiced runs this short between voiced frames are voiced
_TRIM_DB = 45.0
_SILENT_SP = 1e-16


def _frame_energy(x: np.ndarray, n_frames: int, fs: int) -> np.ndarray:
    """Mean power of ``x`` in a 10 ms window centred on each 5 ms frame."""
    hop = HOP_S * fs
    c = np.concatenate(([0.0], np.cumsum(x * x)))
    centers = np.arange(n_frames) * hop
    lo = np.clip(np.round(centers - hop).astype(np.int64), 0, len(x))
    hi = np.clip(np.round(centers + hop).astype(np.int64), 0, len(x))
    return (c[hi] - c[lo]) / np.maximum(hi - lo, 1)


def _fill_voicing_gaps(vuv: np.ndarray, max_gap: int) -> np.ndarray:
    """Set short unvoiced runs between voiced frames to voiced."""
    v = vuv.copy()
    idx = np.flatnonzero(v)
    if idx.size < 2:
        return v
    gaps = np.diff(idx) - 1
    for k in np.flatnonzero((gaps > 0) & (gaps <= max_gap)):
        v[idx[k] + 1 : idx[k + 1]] = True
    return v


def _split_points(log_e: np.ndarray, n: int) -> list[int]:
    """Cut ``len(log_e)`` frames into ``n`` parts at energy minima near even splits."""
    m = len(log_e)
    if n <= 1:
        return [0, m]
    if m >= 3:
        sm = np.convolve(log_e, np.ones(3) / 3.0, mode="same")
        sm[0], sm[-1] = log_e[0], log_e[-1]
    else:
        sm = log_e
    cuts = [0]
    span = m / n
    for k in range(1, n):
        nominal = k * span
        lo = max(cuts[-1] + 1, int(np.ceil(nominal - 0.35 * span)))
        hi = min(m - (n - k), int(np.floor(nominal + 0.35 * span)))
        if hi < lo:
            c = int(np.clip(round(nominal), cuts[-1] + 1, m - (n - k)))
        else:
            c = lo + int(np.argmin(sm[lo : hi + 1]))
        cuts.append(c)
    cuts.append(m)
    return cuts


def _interp_map(length_in: int, length_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map ``length_out`` output frames evenly onto ``length_in`` input frames."""
    pos = (np.arange(length_out) + 0.5) * (length_in / length_out) - 0.5
    pos = np.clip(pos, 0.0, length_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, length_in - 1)
    return i0, i1, pos - i0


def _time_map(vuv_seg: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (i0, i1, weight) in a syllable segment for each of ``n_out`` frames.

    The onset and the unvoiced coda are copied frame by frame; the part between them is
    stretched or compressed to fill the rest. When the note is too short for that, the
    whole segment is mapped uniformly.
    """
    m = len(vuv_seg)
    voiced = np.flatnonzero(vuv_seg)
    if voiced.size:
        head = int(voiced[0]) + _ONSET_AFTER_VOICING
        if head > _ONSET_MAX_FRAMES:
            head = _ONSET_MIN_FRAMES
        head = max(head, _ONSET_MIN_FRAMES)
        tail = m - 1 - int(voiced[-1])
    else:
        head, tail = _ONSET_MIN_FRAMES, 0
    head = min(head, m // 2)
    tail = min(tail, _CODA_MAX_FRAMES, max(0, (m - head) // 2))
    mid_in = m - head - tail
    mid_out = n_out - head - tail
    if mid_in < 1 or mid_out < 2:
        return _interp_map(m, n_out)
    mi0, mi1, mw = _interp_map(mid_in, mid_out)
    h = np.arange(head)
    t = np.arange(m - tail, m)
    i0 = np.concatenate([h, head + mi0, t])
    i1 = np.concatenate([h, head + mi1, t])
    w = np.concatenate([np.zeros(head), mw, np.zeros(tail)])
    return i0, i1, w


def sing_with_world(
    speech: np.ndarray,
    sample_rate: int,
    words: list[tuple[str, float, float]],
    melody: list[WordNotes],
    tempo_bpm: float,
    rng: np.random.Generator,
    vibrato_hz: float = 5.5,
    vibrato_cents: float = 40.0,
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Re-pitch and re-time TTS speech to sing ``melody``.

    Args:
        speech: (T,) float mono TTS speech of the lyric words.
        sample_rate: its rate in Hz (the output has the same rate).
        words: ``[(word, start_s, end_s)]`` timings of the words in ``speech``, in the
            same order and count as ``melody``.
        melody: one :class:`WordNotes` per word (one note per syllable).
        tempo_bpm: tempo for converting beats to seconds.
        rng: randomness for vibrato rate/phase/onset and glide lengths.
        vibrato_hz: vibrato rate (jittered by up to +-8 % per song).
        vibrato_cents: vibrato depth (peak deviation, in cents) once faded in.

    Returns:
        ``(audio, timings)``: sung float32 audio at ``sample_rate`` normalized to peak
        0.5, and ``[(word, start_s, end_s)]`` of each word in it.

    Raises:
        ValueError: counts differ, the melody is empty, or the speech is empty.
    """
    if len(words) != len(melody):
        raise ValueError(f"{len(words)} word timings but {len(melody)} melody words")
    if not melody:
        raise ValueError("empty melody")
    if any(len(wn.notes) < 1 for wn in melody):
        raise ValueError("every melody word needs at least one note")
    x = np.asarray(speech, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("empty speech")
    fs = int(sample_rate)
    dur_s = x.size / fs

    # --- analysis of the span that holds the words --------------------------------------
    first = min(min(max(0.0, float(s)) for _, s, _ in words), dur_s)
    last = max(min(dur_s, float(e)) for _, _, e in words)
    f_lo = max(0, int(np.floor(first / HOP_S)) - 4)
    off = int(round(f_lo * HOP_S * fs))
    f_hi = int(np.ceil(last / HOP_S)) + 4
    seg = np.ascontiguousarray(x[off : min(x.size, int(round(f_hi * HOP_S * fs)) + 1)])
    if seg.size < int(8 * HOP_S * fs):  # degenerate timings: analyse everything
        f_lo, seg = 0, x
    f0, t = pw.dio(seg, fs, f0_floor=_F0_FLOOR, f0_ceil=_F0_CEIL, frame_period=FRAME_PERIOD_MS,
                   speed=_DIO_SPEED)
    f0 = pw.stonemask(seg, f0, t, fs)
    fft_size = pw.get_cheaptrick_fft_size(fs)
    sp = pw.cheaptrick(seg, f0, t, fs, fft_size=fft_size)
    n_src = len(f0)
    # aperiodicity varies slowly: D4C on every other frame, linear interpolation between
    ap_half = pw.d4c(seg, np.ascontiguousarray(f0[::2]), np.ascontiguousarray(t[::2]), fs, fft_size=fft_size)
    h0 = np.arange(n_src) // 2
    h1 = np.minimum(h0 + 1, len(ap_half) - 1)
    hw = (np.arange(n_src) % 2 * 0.5)[:, None]
    ap = (1.0 - hw) * ap_half[h0] + hw * ap_half[h1]
    vuv = _fill_voicing_gaps(f0 > 0, _MAX_VOICING_GAP)
    energy = _frame_energy(seg, n_src, fs)

    # --- frame plan: source frame positions and target pitch for every output frame -----
    vib_rate = vibrato_hz * (1.0 + rng.uniform(-0.08, 0.08))
    src_i0: list[np.ndarray] = []
    src_i1: list[np.ndarray] = []
    src_w: list[np.ndarray] = []
    out_f0: list[np.ndarray] = []
    timings: list[tuple[str, float, float]] = []
    cursor_s = LEAD_S
    n_written = 0

    def emit_silence(n: int) -> None:
        nonlocal n_written
        if n <= 0:
            return
        src_i0.append(np.full(n, -1, dtype=np.int64))
        src_i1.append(np.full(n, -1, dtype=np.int64))
        src_w.append(np.zeros(n))
        out_f0.append(np.zeros(n))
        n_written += n

    emit_silence(int(round(cursor_s / HOP_S)))
    prev_midi: int | None = None
    for (name, ws, we), wn in zip(words, melody):
        n_notes = len(wn.notes)
        a = int(np.clip(int(round(float(ws) / HOP_S)) - f_lo, 0, n_src - 1))
        b = int(np.clip(int(round(float(we) / HOP_S)) - f_lo, a + 1, n_src))
        e = energy[a:b]
        if e.max() > 0:
            keep = np.flatnonzero(e > e.max() * 10.0 ** (-_TRIM_DB / 10.0))
            a, b = a + int(keep[0]), a + int(keep[-1]) + 1
        frames = np.arange(a, b)
        if frames.size < 2 * n_notes:  # too short a word: repeat frames
            frames = frames[np.floor(np.linspace(0, frames.size, 2 * n_notes, endpoint=False)).astype(np.int64)]
        cuts = _split_points(np.log(energy[frames] + 1e-12), n_notes)

        word_start_frame = None
        for k, note in enumerate(wn.notes):
            syl = frames[cuts[k] : cuts[k + 1]]
            start_f = max(int(round(cursor_s / HOP_S)), n_written)
            cursor_s += beats_to_seconds(note.beats, tempo_bpm)
            end_f = max(int(round(cursor_s / HOP_S)), start_f + 1)
            emit_silence(start_f - n_written)  # only if rounding left a gap
            n_out = end_f - start_f
            if word_start_frame is None:
                word_start_frame = start_f
            i0, i1, w = _time_map(vuv[syl], n_out)
            src_i0.append(syl[i0])
            src_i1.append(syl[i1])
            src_w.append(w)
            v = np.where(w < 0.5, vuv[syl[i0]], vuv[syl[i1]])

            # pitch curve in cents around the note: portamento + fading vibrato
            tau = np.arange(n_out) * HOP_S
            cents = np.zeros(n_out)
            vf = np.flatnonzero(v)
            if prev_midi is not None and prev_midi != note.midi and vf.size:
                g = int(rng.integers(6, 13))  # 30-60 ms
                k0 = int(vf[0])
                ramp = np.clip((np.arange(n_out) - k0 + 1) / g, 0.0, 1.0)
                smooth = ramp * ramp * (3.0 - 2.0 * ramp)
                cents += (prev_midi - note.midi) * 100.0 * (1.0 - smooth) * (np.arange(n_out) >= k0)
            delay = rng.uniform(0.12, 0.25)
            fade = rng.uniform(0.2, 0.35)
            phase = rng.uniform(0.0, 2.0 * np.pi)
            depth = vibrato_cents * np.clip((tau - delay) / fade, 0.0, 1.0)
            cents += depth * np.sin(2.0 * np.pi * vib_rate * tau + phase)
            hz = 440.0 * 2.0 ** ((note.midi - 69 + cents / 100.0) / 12.0)
            out_f0.append(np.where(v, hz, 0.0))
            n_written += n_out
            prev_midi = note.midi
        timings.append((name, word_start_frame * HOP_S, n_written * HOP_S))
        if wn.rest_after_beats > 0:
            cursor_s += beats_to_seconds(wn.rest_after_beats, tempo_bpm)
            emit_silence(int(round(cursor_s / HOP_S)) - n_written)
            prev_midi = None
    cursor_s += TAIL_S
    emit_silence(int(round(cursor_s / HOP_S)) - n_written + 1)

    # --- assemble WORLD parameters and synthesize ----------------------------------------
    i0 = np.concatenate(src_i0)
    i1 = np.concatenate(src_i1)
    w = np.concatenate(src_w)[:, None]
    sil = i0 < 0
    j0 = np.where(sil, 0, i0)
    j1 = np.where(sil, 0, i1)
    sp_out = (1.0 - w) * sp[j0] + w * sp[j1]
    ap_out = (1.0 - w) * ap[j0] + w * ap[j1]
    sp_out[sil] = _SILENT_SP
    ap_out[sil] = 1.0
    f0_out = np.concatenate(out_f0)
    y = pw.synthesize(
        np.ascontiguousarray(f0_out),
        np.ascontiguousarray(sp_out),
        np.ascontiguousarray(ap_out),
        fs,
        FRAME_PERIOD_MS,
    )
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if not np.any(seg):  # silent input: WORLD's noise floor is no singing
        y = np.zeros_like(y)
    elif peak > 0:
        y = y * (PEAK / peak)
    return y.astype(np.float32), timings
