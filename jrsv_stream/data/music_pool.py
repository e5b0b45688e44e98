"""A **training music pool from other renderers**:
``jrsv-stream data music-pool --out data/music_pool [--pieces 300] [--seed 0] [--workers 2]``.

The corpus's music stem is rendered only with fluidsynth + the FluidR3 GM soundfont (plus
recorded loops of sonic-pi-samples' train split), so the separator knows few instrument
timbres. The out-of-domain test set (:mod:`jrsv_stream.data.ood`) holds out TimGM6mb,
csound's GM bank and the OPL-3 FM bank: none of them is used here. This pool renders the
corpus's own composer (:func:`jrsv_stream.data.music_compose._arrange`, the arrangement
:func:`jrsv_stream.data.music.synth_music` draws for a ``"midi"`` piece: style, tempo,
chords, drums, bass, harmony bed, arpeggio, lead) with other instrument recordings:

=================== ===================================================================
renderer            what
=================== ===================================================================
timidity-freepats   every part through **TiMidity++** (Debian ``timidity``, GPL-2) with
                    the **freepats** GUS patches (Debian ``freepats``, GPL-2 with a
                    composition exception; 72 melodic programs and one drum kit). GM
                    programs freepats lacks are moved to the nearest program it has in
                    the same GM family (else the nearest one), never to a voice-like or
                    sound-effect program (``Voice Oohs``, ``Echo Voice``, the composer's
                    ``EXCLUDED_PROGRAMS``); the kit is freepats' only drum set. TiMidity's
                    own effects vary by piece: reverb off / standard / Freeverb, chorus
                    off / on (the MIDI's CC 91 / 93 set their amounts).
+avldrums-<kit>     half of the pieces with drums: the drum kit's core notes (kick,
                    snares, toms, hi-hats, cymbals) are played instead by a multi-sampled
                    acoustic kit, ``Black Pearl`` or ``Red Zeppelin`` (Debian
                    ``avldrums.lv2-soundfont``, GPL-2+; through the fluidsynth CLI), at a
                    random level (-6..+2 dB re the other parts); auxiliary percussion
                    (tambourine, congas, shakers...) stays with freepats.
=================== ===================================================================

TiMidity always reads ``/etc/timidity/timidity.cfg``, which on Debian maps *every* GM
program and kit to FluidR3. So every program and drum note the MIDI uses is first mapped
onto the ones freepats defines, the drum kit is set to 0, and each render runs verbose and
fails (:class:`MusicError`) if TiMidity loads any soundfont at all: nothing here can come
from FluidR3 (or any .sf2) by a fallback.

Pieces are MIDI only: no sonic-pi samples (the split of :func:`synth_music` chooses which
recorded samples a piece may use, and their train split is in the corpus already). Piece
``i`` is composed from a generator of its own, seeded by ``(seed, i)`` and this module's code
(not :func:`synth_music`'s, so no piece is one of the out-of-domain set's, which
:func:`synth_music` draws with ``split="test"``); it lasts 10-20 s,
starts a quarter to a whole bar into the arrangement, and is mastered as the corpus's pieces
are (:func:`jrsv_stream.data.music._master`: peak 0.5, RMS >= 0.02 in every 0.5 s window).

Not near-identical to FluidR3. Measure: the same MIDI (programs already mapped) rendered dry
(reverb and chorus off, unmastered) by this pool's renderers and by fluidsynth + FluidR3; the
largest normalized cross-correlation ``|r|`` of the two waveforms over lags within +-50 ms.
As a control, TiMidity renders with its Debian system config, which plays FluidR3's own
samples: the engine changes, the recordings do not. Measured here (Debian 12):

* one instrument alone (:func:`program_correlation`), each of the 55 freepats programs the
  composer's programs map to: this pool vs FluidR3 median **0.25** (0.08-0.71, none above
  0.8); control median 0.98 (0.66-1.00);
* whole pieces 0-39 of seed 0 (:func:`fluidr3_correlation`): this pool median **0.12**
  (0.04-0.26); control median 0.31 (0.18-0.59).

So the measure does see FluidR3's samples through another engine (0.98 for one instrument),
and the freepats / AVL recordings are other instruments (0.25); whole mixes correlate less for
both (many parts, panning, the engines' envelopes), but the pool still far less than the control.
The highest single programs (Pan Flute 0.71, Ocarina 0.65, Harp 0.62) are near-sinusoidal or
plucked tones that any recording of them resembles.

Output (``OUT/``): ``pieces/pool-<i>.flac`` (16 kHz mono, 16-bit), ``manifest.jsonl`` (one
line per piece: ``id``, ``path`` (relative to ``OUT``), ``duration_s``, ``renderer``,
``programs`` (per part: ``part``, ``program`` rendered, ``requested`` by the composer,
``name``), ``drums``, ``style``, ``tempo_bpm``, ``key``, ``effects``, ``seed``, ``index``) and
``summary.json``. Deterministic for ``(seed, pieces)``: the same bytes on a rebuild, and
piece ``i`` does not depend on how many pieces are built. Cheap: 20 pieces (5 min of
music) built in 2 s with two workers on two cores that another job kept busy, so the
default 300 (~75 min of music, ~100 MB) take well under a minute.

:class:`MusicPool` reads the pool for dynamic mixing (``music_pool`` / ``p_music_pool`` of
:class:`jrsv_stream.data.dynamic.DynamicMixDataset`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.music_render import SOUNDFONT, _render_midi, _rms, _to_midi
from jrsv_stream.data.music_samples import MusicError, _read_mono
from jrsv_stream.data.music_styles import EXCLUDED_PROGRAMS

FORMAT = "jrsv-music-pool-1"
DEFAULT_PIECES = 300
MIN_S, MAX_S = 10.0, 20.0
FREEPATS_CFG = Path("/etc/timidity/freepats.cfg")
AVLDRUMS = {"black-pearl": Path("/usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2"),
            "red-zeppelin": Path("/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2")}
#: GM kit notes the AVL kits play (kick, side stick, snares, toms, hi-hats, crash, ride);
#: 35 (acoustic kick) is played as 36
AVL_NOTES = frozenset({36, 37, 38, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 53, 57, 59})
P_AVLDRUMS = 0.5
#: freepats programs never used in place of another (voice-like or sound effects)
NOT_TARGETS = frozenset(EXCLUDED_PROGRAMS | {101, 102})
REVERBS = ("d", "n", "f")  # TiMidity -EFreverb: off, standard, Freeverb
CHORUSES = ("d", "n")
_CODE = zlib.crc32(b"music-pool")


# --- freepats -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Freepats:
    """The melodic programs (bank 0) and drum notes (drum set 0) a freepats config defines."""

    cfg: Path
    programs: frozenset[int]
    drum_notes: frozenset[int]

    def program_for(self, p: int) -> int:
        """``p`` if freepats has it, else its nearest program in the same GM family, else the
        nearest overall (never one of ``NOT_TARGETS``)."""
        if p in self.programs:
            return p
        ok = sorted(self.programs - NOT_TARGETS)
        family = [q for q in ok if q // 8 == p // 8]
        return min(family or ok, key=lambda q: (abs(q - p), q))


def load_freepats(cfg: str | os.PathLike = FREEPATS_CFG) -> Freepats:
    """Parse a TiMidity freepats config (``drumset 0`` / ``bank 0`` sections).

    Raises:
        MusicError: the config or TiMidity is missing (names the Debian packages).
    """
    cfg = Path(cfg)
    if shutil.which("timidity") is None or not cfg.is_file():
        raise MusicError(f"the music pool needs TiMidity++ and the freepats patches ({cfg}): "
                         f"apt-get install timidity freepats")
    section, programs, drums = None, set(), set()
    for line in cfg.read_text().splitlines():
        line = line.split("#")[0].strip()
        if m := re.fullmatch(r"(drumset|bank)\s+(\d+)", line):
            section = (m.group(1), int(m.group(2)))
        elif m := re.match(r"(\d+)\s+\S+\.pat\b", line):
            if section == ("bank", 0):
                programs.add(int(m.group(1)))
            elif section == ("drumset", 0):
                drums.add(int(m.group(1)))
    if not programs or not drums:
        raise MusicError(f"{cfg}: no bank 0 / drumset 0 patches found")
    return Freepats(cfg, frozenset(programs), frozenset(drums))


# --- one piece ----------------------------------------------------------------------------------
@dataclass
class PiecePlan:
    """Piece ``index`` of the pool, composed and mapped, before rendering."""

    index: int
    seed: int
    duration_s: float
    midi: pretty_midi.PrettyMIDI  # every part, programs mapped to freepats, kit 0
    offset_s: float  # where the piece starts in the render
    n_render: int  # samples to render (offset + duration)
    avl_kit: str | None  # drums' core notes go to this AVL kit (None: all freepats)
    avl_gain_db: float
    reverb: str
    chorus: str
    meta: dict
    master_seed: int


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, _CODE, int(index), stream])


def plan_piece(seed: int, index: int, fp: Freepats) -> PiecePlan:
    """Compose piece ``index`` (as :func:`synth_music` composes a ``"midi"`` piece) and draw
    its rendering (AVL kit or not, TiMidity effects)."""
    from jrsv_stream.data.music_compose import _arrange, _clip_song
    from jrsv_stream.data.music_styles import NOTE_NAMES

    rng = _rng(seed, index, 0)
    duration = round(float(rng.uniform(MIN_S, MAX_S)), 3)
    song = _arrange(rng, duration + 1.0)
    off_s = float(rng.uniform(0.25, 1.0)) * song.bar_s
    n_render = int(np.ceil((off_s + duration) * SAMPLE_RATE)) + 1
    song = _clip_song(song, off_s + duration + 0.05)
    requested = {name: part["program"] for name, part in song.parts.items()}
    parts = {name: {**part, "program": fp.program_for(part["program"])} for name, part in song.parts.items()}
    drums = [e for e in song.drum_events if e[1] in fp.drum_notes]
    song = type(song)(**{**song.__dict__, "parts": parts, "drum_events": drums, "drum_kit": 0})
    pm = _to_midi(song, rng, end_s=n_render / SAMPLE_RATE + 0.05)

    r2 = _rng(seed, index, 1)  # rendering draws: apart from the composition
    kits = [k for k, p in AVLDRUMS.items() if p.is_file()]
    has_kit = any(n == 35 or n in AVL_NOTES for _, n, _ in drums)
    avl = kits[int(r2.integers(len(kits)))] if kits and has_kit and r2.random() < P_AVLDRUMS else None
    avl_gain_db = round(float(r2.uniform(-6.0, 2.0)), 2)
    reverb, chorus = REVERBS[int(r2.integers(len(REVERBS)))], CHORUSES[int(r2.integers(len(CHORUSES)))]
    renderer = "timidity-freepats" + (f"+avldrums-{avl}" if avl else "")
    meta = {"renderer": renderer,
            "programs": [{"part": name, "program": parts[name]["program"], "requested": requested[name],
                          "name": pretty_midi.program_to_instrument_name(parts[name]["program"])} for name in parts],
            "drums": ("avldrums-" + avl if avl else "freepats") if drums else None,
            "style": song.style, "tempo_bpm": round(float(song.bpm), 3),
            "key": f"{NOTE_NAMES[song.tonic]} {song.mode}", "meter": f"{song.beats_per_bar}/4",
            "effects": {"timidity_reverb": {"d": "off", "n": "standard", "f": "freeverb"}[reverb],
                        "timidity_chorus": {"d": "off", "n": "on"}[chorus],
                        **({"avldrums_gain_db": avl_gain_db} if avl else {})}}
    return PiecePlan(index, seed, duration, pm, off_s, n_render, avl, avl_gain_db, reverb, chorus, meta,
                     int(r2.integers(2**62)))


def _split_kit(pm: pretty_midi.PrettyMIDI) -> tuple[pretty_midi.PrettyMIDI, pretty_midi.PrettyMIDI | None]:
    """(``pm`` without the kit's AVL notes, those notes on a melodic channel for the AVL
    soundfont (its kit is bank 0, preset 0) or None when there are none)."""
    rest = _copy_midi(pm)
    kit = None
    for inst in rest.instruments:
        if not inst.is_drum:
            continue
        core = [n for n in inst.notes if n.pitch == 35 or n.pitch in AVL_NOTES]
        inst.notes = [n for n in inst.notes if not (n.pitch == 35 or n.pitch in AVL_NOTES)]
        if core:
            kit = _copy_midi(pm, keep=False)
            k = pretty_midi.Instrument(program=0, is_drum=False, name="avl-kit")
            k.control_changes = [pretty_midi.ControlChange(c.number, c.value, c.time) for c in inst.control_changes]
            k.notes = [pretty_midi.Note(n.velocity, 36 if n.pitch == 35 else n.pitch, n.start, n.end) for n in core]
            kit.instruments.append(k)
    return rest, kit


def _copy_midi(pm: pretty_midi.PrettyMIDI, keep: bool = True) -> pretty_midi.PrettyMIDI:
    """A copy of ``pm`` (tempo and meter; its instruments too unless ``keep`` is False)."""
    import copy

    out = copy.deepcopy(pm)
    if not keep:
        out.instruments = []
    return out


def render_timidity(pm: pretty_midi.PrettyMIDI, n_samples: int, tmp: Path, cfg: Path, reverb: str = "d",
                    chorus: str = "d", allow_soundfonts: bool = False) -> np.ndarray:
    """``pm`` through TiMidity++ with the config ``cfg`` (and the system's, which TiMidity
    always reads); (n_samples,) float32 mono at 16 kHz, zero-padded.

    Raises:
        MusicError: TiMidity failed, or it loaded a soundfont (a program or drum note the
            config lacks fell back to the system config's .sf2) and ``allow_soundfonts`` is False.
    """
    mid, wav = tmp / "pool.mid", tmp / "pool.wav"
    pm.write(str(mid))
    cmd = ["timidity", "-c", str(cfg), "-idv", "-Ow", "--output-mono", "--output-24bit", "-s", str(SAMPLE_RATE),
           "-A", "50", f"-EFreverb={reverb}", f"-EFchorus={chorus}", "-o", str(wav), str(mid)]
    res = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    log = (res.stdout + res.stderr).decode(errors="replace")
    if res.returncode != 0 or not wav.is_file():
        raise MusicError(f"timidity failed ({res.returncode}): {log[-500:]}")
    if not allow_soundfonts and ("Init soundfonts" in log or "Loading SF" in log):
        raise MusicError(f"timidity fell back to a soundfont (a program or note {cfg} lacks): {log[-500:]}")
    x, rate = _read_mono(wav)
    if rate != SAMPLE_RATE:
        raise MusicError(f"timidity wrote {rate} Hz, asked for {SAMPLE_RATE} Hz")
    out = np.zeros(n_samples, dtype=np.float32)
    out[: min(n_samples, len(x))] = x[:n_samples]
    return out


def _mix(plan: PiecePlan, fp: Freepats, tmp: Path, reverb: str, chorus: str, dry_kit: bool = False) -> np.ndarray:
    """The unmastered render of the whole MIDI, (plan.n_render,) float32."""
    if plan.avl_kit is None:
        return render_timidity(plan.midi, plan.n_render, tmp, fp.cfg, reverb, chorus)
    rest, kit = _split_kit(plan.midi)
    mix = render_timidity(rest, plan.n_render, tmp, fp.cfg, reverb, chorus)
    if kit is None:
        return mix
    drums = _render_midi(kit, plan.n_render, SAMPLE_RATE, tmp, AVLDRUMS[plan.avl_kit], dry=dry_kit)
    a = int(plan.offset_s * SAMPLE_RATE)
    r_mix, r_drums = _rms(mix[a:]), _rms(drums[a:])
    if r_drums == 0:
        return mix
    return mix + drums * ((r_mix if r_mix > 0 else 0.1) / r_drums) * 10 ** (plan.avl_gain_db / 20)


def _window(plan: PiecePlan, x: np.ndarray) -> np.ndarray:
    """The piece's stretch of a render: ``duration_s`` from ``offset_s``, zero-padded."""
    a, n = int(round(plan.offset_s * SAMPLE_RATE)), int(round(plan.duration_s * SAMPLE_RATE))
    x = x[a: a + n]
    return np.concatenate([x, np.zeros(n - len(x), x.dtype)]) if len(x) < n else x


def render_piece(plan: PiecePlan, fp: Freepats, tmp: Path) -> np.ndarray:
    """The piece's audio: (round(duration_s * 16000),) float32, mastered (peak 0.5)."""
    from jrsv_stream.data.music import _master

    x = _window(plan, _mix(plan, fp, tmp, plan.reverb, plan.chorus))
    return _master(x, np.random.default_rng(plan.master_seed), SAMPLE_RATE)


def fluidr3_correlation(plan: PiecePlan, fp: Freepats, tmp: Path, max_lag_s: float = 0.05,
                        control: bool = False) -> float:
    """How close the pool's rendering of ``plan`` is to FluidR3's: the same MIDI (programs
    already mapped) rendered dry (reverb and chorus off, unmastered) by this pool's renderers
    and by fluidsynth + FluidR3 (:data:`jrsv_stream.data.music_render.SOUNDFONT`); the largest
    normalized cross-correlation ``|r|`` of the two waveforms over lags within ``max_lag_s``
    (1: the same waveform). ``control``: TiMidity with the system config only (Debian's maps
    every program to FluidR3) in place of the pool's renderers: the engine changes, the
    instrument recordings do not."""

    ref = _window(plan, _render_midi(plan.midi, plan.n_render, SAMPLE_RATE, tmp, SOUNDFONT, dry=True))
    if control:
        empty = tmp / "empty.cfg"
        empty.write_text("")
        x = render_timidity(plan.midi, plan.n_render, tmp, empty, allow_soundfonts=True)
    else:
        x = _mix(plan, fp, tmp, "d", "d", dry_kit=True)
    return _max_xcorr(_window(plan, x).astype(np.float64), ref.astype(np.float64), int(max_lag_s * SAMPLE_RATE))


def program_correlation(program: int, fp: Freepats, tmp: Path, control: bool = False) -> float:
    """:func:`fluidr3_correlation` for one instrument alone: a 4.5 s phrase (arpeggio and a
    held note, bass programs an octave and a half lower) of GM ``program`` (one freepats has)
    through TiMidity + freepats (``control``: TiMidity's system config, FluidR3 on Debian)
    against fluidsynth + FluidR3, both dry."""

    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=int(program))
    low = 40 if program in range(32, 40) or program in (42, 43, 58, 70) else 55
    for k, step in enumerate((0, 4, 7, 12, 7, 4, 0, 5)):
        inst.notes.append(pretty_midi.Note(90, low + step, 0.4 * k, 0.4 * k + 0.35))
    inst.notes.append(pretty_midi.Note(90, low + 12, 3.3, 4.0))
    pm.instruments.append(inst)
    n = 5 * SAMPLE_RATE
    ref = _render_midi(pm, n, SAMPLE_RATE, tmp, SOUNDFONT, dry=True)
    if control:
        (tmp / "empty.cfg").write_text("")
        x = render_timidity(pm, n, tmp, tmp / "empty.cfg", allow_soundfonts=True)
    else:
        x = render_timidity(pm, n, tmp, fp.cfg)
    return _max_xcorr(x.astype(np.float64), ref.astype(np.float64), int(0.05 * SAMPLE_RATE))


def _max_xcorr(x: np.ndarray, y: np.ndarray, max_lag: int) -> float:
    m = min(len(x), len(y))
    x, y = x[:m] - x[:m].mean(), y[:m] - y[:m].mean()
    den = float(np.sqrt(np.sum(x * x) * np.sum(y * y)))
    if den == 0.0:
        return 0.0
    size = 1 << int(np.ceil(np.log2(2 * m)))
    c = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    lags = np.concatenate([c[: max_lag + 1], c[-max_lag:]]) if max_lag > 0 else c[:1]
    return float(np.max(np.abs(lags)) / den)


# --- the pool -----------------------------------------------------------------------------------
def _piece_job(args: tuple[int, int, str, str]) -> dict:
    seed, index, out, cfg = args
    fp = load_freepats(cfg)
    plan = plan_piece(seed, index, fp)
    with tempfile.TemporaryDirectory(prefix="music_pool_") as tmp:
        audio = render_piece(plan, fp, Path(tmp))
    rel = f"pieces/pool-{index:05d}.flac"
    part = Path(out) / (rel + ".part")
    sf.write(str(part), audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    os.replace(part, Path(out) / rel)
    return {"id": f"pool-{index:05d}", "path": rel, "duration_s": round(len(audio) / SAMPLE_RATE, 4),
            **plan.meta, "seed": seed, "index": index}


def build_music_pool(out: str | os.PathLike, pieces: int = DEFAULT_PIECES, seed: int = 0, workers: int = 2,
                     cfg: str | os.PathLike = FREEPATS_CFG) -> dict:
    """Render ``pieces`` pieces into ``out`` (see the module doc); returns the summary.

    Raises:
        MusicError: TiMidity / freepats (or fluidsynth for the AVL kits) is missing or failed.
    """
    if pieces < 1:
        raise ValueError(f"pieces must be >= 1, got {pieces}")
    t0 = time.time()
    load_freepats(cfg)  # fail early, naming the packages
    if shutil.which("fluidsynth") is None and any(p.is_file() for p in AVLDRUMS.values()):
        raise MusicError("the AVL drum kits are played by the fluidsynth CLI: apt-get install fluidsynth")
    out = Path(out)
    (out / "pieces").mkdir(parents=True, exist_ok=True)
    jobs = [(int(seed), i, str(out), str(cfg)) for i in range(pieces)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(workers) as p:
            rows = p.map(_piece_job, jobs, chunksize=4)
    else:
        rows = [_piece_job(j) for j in jobs]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    by_renderer: dict[str, int] = {}
    for r in rows:
        by_renderer[r["renderer"]] = by_renderer.get(r["renderer"], 0) + 1
    programs = sorted({p["program"] for r in rows for p in r["programs"]})
    doc = {"format": FORMAT, "seed": int(seed), "pieces": len(rows), "sample_rate": SAMPLE_RATE,
           "seconds": round(sum(r["duration_s"] for r in rows), 1), "renderers": by_renderer,
           "programs": programs, "build_seconds": round(time.time() - t0, 1), "workers": workers}
    (out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


class MusicPool:
    """A built pool for dynamic mixing: ``crop(rng, n)`` -> (n,) float32 from a random piece
    (pieces weigh by their length) at a random offset; a piece shorter than ``n`` is
    repeated. Reads only the crop's samples (soundfile seeks in the FLAC file)."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not (root / "manifest.jsonl").is_file():
            raise FileNotFoundError(f"{root}: no music pool (jrsv-stream data music-pool --out {root})")
        self.root = root
        self.pieces = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines() if x.strip()]
        if not self.pieces:
            raise FileNotFoundError(f"{root}: the music pool is empty (jrsv-stream data music-pool --out {root})")
        self.lengths = np.array([int(round(p["duration_s"] * SAMPLE_RATE)) for p in self.pieces])
        self.ends = np.cumsum(self.lengths)

    def crop(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
        """(audio (n,) float32, the piece's id)."""
        k = int(np.searchsorted(self.ends, rng.integers(int(self.ends[-1])), side="right"))
        path, length = self.root / self.pieces[k]["path"], int(self.lengths[k])
        if length >= n:
            start = int(rng.integers(0, length - n + 1))
            x, _ = sf.read(str(path), start=start, frames=n, dtype="float32", always_2d=True)
            x = x[:, 0]
        else:
            whole, _ = sf.read(str(path), dtype="float32", always_2d=True)
            x = np.resize(whole[:, 0], n)
        if len(x) < n:
            x = np.pad(x, (0, n - len(x)))
        return np.ascontiguousarray(x, dtype=np.float32), self.pieces[k]["id"]
