"""Compose corpus items from source pools: plan (where each utterance and line goes, which
music, which SNRs) and render (place, mix, write). Shared by the synthetic corpus, the
real-corpus loaders (AISHELL-1 / OpenSinger / MUSDB18) and dynamic mixing in training.

Scenarios, as in the papers' DTSSV-style sets: ``speech`` (talk over music), ``singing``
(a song), ``both`` (talk and singing with partial overlaps, gaps and silences, over music).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import save_audio
from jrsv_stream.data.manifest import ManifestItem, Word
from jrsv_stream.data.mixing import Mix, mix_stems, snr_bucket

SCENARIOS = ("speech", "singing", "both")
VOCALS = ("speech", "singing")


@dataclass(frozen=True)
class VocalSource:
    """One speech utterance or sung line. ``words`` are relative to the source's start."""

    id: str
    audio: np.ndarray  # (T,) float32, 16 kHz
    text: str
    words: list[Word]
    voice: str


@dataclass(frozen=True)
class MusicSource:
    id: str
    audio: np.ndarray  # (T,) float32, 16 kHz
    meta: dict


@dataclass(frozen=True)
class Placement:
    source: int  # index into the pool
    offset_s: float  # start within the item


@dataclass(frozen=True)
class ItemPlan:
    id: str
    split: str
    scenario: str
    duration_s: float
    speech: tuple[Placement, ...]
    singing: tuple[Placement, ...]
    music: int
    music_offset_s: float
    speech_snr_db: float | None
    singing_snr_db: float | None
    peak: float

    def to_json(self) -> dict:
        return asdict(self)


class SourceCycle:
    """Draws pool indices in shuffled order, reshuffling after each pass, so every source
    is used about equally often. Deterministic for the rng."""

    def __init__(self, n: int, rng: np.random.Generator):
        if n <= 0:
            raise ValueError("empty source pool")
        self.n, self.rng, self.order, self.pos = n, rng, rng.permutation(n), 0

    def peek(self) -> int:
        """The next index, without consuming it (a source that did not fit stays next)."""
        if self.pos == self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        return int(self.order[self.pos])

    def next(self) -> int:
        k = self.peek()
        self.pos += 1
        return k


def _fill(rng, cycle: SourceCycle, durs: Sequence[float], duration_s: float, start_s: float, max_count: int,
          gap_s: tuple[float, float]) -> list[Placement]:
    """Place sources one after another from ``start_s`` with random gaps while they fit."""
    out, t = [], start_s
    for _ in range(max_count):
        k = cycle.peek()
        if t + durs[k] > duration_s:
            break
        cycle.next()
        out.append(Placement(k, round(t, 4)))
        t += durs[k] + rng.uniform(*gap_s)
    return out


def plan_items(
    rng: np.random.Generator,
    n_items: int,
    split: str,
    speech_durs: Sequence[float],
    singing_durs: Sequence[float],
    music_durs: Sequence[float],
    id_prefix: str,
    scenario_weights: dict[str, float] | None = None,
    min_s: float = 4.0,
    max_s: float = 15.0,
    snr_range_db: tuple[float, float] = (-5.0, 5.0),
) -> list[ItemPlan]:
    """Plan ``n_items`` items (deterministic for the rng and pools).

    Each item draws a scenario, a length in [min_s, max_s], fills its vocal track(s) with
    sources from the pools (shuffled cycling, so sources are reused evenly), picks a music
    source at least as long as the item with a random offset, and draws each vocal's SNR
    uniformly in ``snr_range_db``. Vocal sources must be shorter than ``max_s - 0.5`` s.
    """
    weights = scenario_weights or {s: 1.0 for s in SCENARIOS}
    names = [s for s in SCENARIOS if weights.get(s, 0) > 0 and (s != "speech" or speech_durs) and (s != "singing" or singing_durs)
             and (s != "both" or (speech_durs and singing_durs))]
    if not names:
        raise ValueError("no scenario is possible with the given pools")
    p = np.array([weights[s] for s in names], dtype=np.float64)
    p /= p.sum()
    too_long = [d for d in list(speech_durs) + list(singing_durs) if d > max_s - 0.5]
    if too_long:
        raise ValueError(f"{len(too_long)} vocal sources are longer than {max_s - 0.5} s; drop them from the pools")
    cycles = {"speech": SourceCycle(len(speech_durs), rng) if speech_durs else None,
              "singing": SourceCycle(len(singing_durs), rng) if singing_durs else None}
    durs = {"speech": speech_durs, "singing": singing_durs}
    music_cycle = SourceCycle(len(music_durs), rng)
    plans = []
    for i in range(n_items):
        scenario = names[int(rng.choice(len(names), p=p))]
        duration = float(rng.uniform(min_s, max_s))
        tracks: dict[str, list[Placement]] = {"speech": [], "singing": []}
        for v in VOCALS:
            if scenario not in (v, "both"):
                continue
            for _attempt in range(20):
                if scenario == "both":  # one or two pieces each, anywhere: overlaps and gaps
                    start = float(rng.uniform(0.0, duration * 0.5))
                    placed = _fill(rng, cycles[v], durs[v], duration, start, int(rng.integers(1, 3)), (0.3, 2.5))
                else:
                    placed = _fill(rng, cycles[v], durs[v], duration, float(rng.uniform(0.0, 1.0)), 6, (0.15, 1.2))
                if placed:
                    break
                # the next source does not fit here: lengthen the item, and after a few
                # tries skip that source (it stays in the cycle for later items)
                duration = min(max_s, duration + 1.0)
                if _attempt >= 3:
                    cycles[v].next()
            if not placed:
                raise ValueError(f"no {v} source fits in {max_s} s")
            tracks[v] = placed
        for _attempt in range(len(music_durs) + 1):
            m = music_cycle.next()
            if music_durs[m] >= duration:
                break
        else:
            raise ValueError(f"no music source is at least {duration:.1f} s long")
        m_off = float(rng.uniform(0.0, music_durs[m] - duration))
        snr = {v: round(float(rng.uniform(*snr_range_db)), 3) if tracks[v] else None for v in VOCALS}
        plans.append(ItemPlan(
            id=f"{id_prefix}{i:06d}", split=split, scenario=scenario, duration_s=round(duration, 4),
            speech=tuple(tracks["speech"]), singing=tuple(tracks["singing"]), music=m,
            music_offset_s=round(m_off, 4), speech_snr_db=snr["speech"], singing_snr_db=snr["singing"],
            peak=round(float(rng.uniform(0.3, 0.9)), 3),
        ))
    return plans


@dataclass(frozen=True)
class RenderedItem:
    plan: ItemPlan
    mix: Mix
    texts: dict[str, str | None]
    words: dict[str, list[Word] | None]
    voices: dict[str, list[str]]
    music_meta: dict


def render_item(
    plan: ItemPlan,
    speech_pool: Callable[[int], VocalSource] | None,
    singing_pool: Callable[[int], VocalSource] | None,
    music_pool: Callable[[int], MusicSource],
) -> RenderedItem:
    """Place the planned sources, mix at the planned SNRs (in memory)."""
    T = int(round(plan.duration_s * SAMPLE_RATE))
    pools = {"speech": speech_pool, "singing": singing_pool}
    vocals, texts, words, voices = {}, {}, {}, {}
    for v in VOCALS:
        placements = getattr(plan, v)
        if not placements:
            texts[v], words[v], voices[v] = None, None, []
            continue
        if pools[v] is None:
            raise ValueError(f"plan {plan.id} needs a {v} pool")
        stem = np.zeros(T, dtype=np.float32)
        ws, ts, vs = [], [], []
        timed = False  # any source with word timings (real corpora have none: words stay None)
        for pl in placements:
            src = pools[v](pl.source)
            timed = timed or bool(src.words)
            a = int(round(pl.offset_s * SAMPLE_RATE))
            n = min(len(src.audio), T - a)
            stem[a:a + n] += src.audio[:n]
            ws += [(w, round(s + pl.offset_s, 4), round(e + pl.offset_s, 4)) for w, s, e in src.words
                   if s + pl.offset_s < plan.duration_s]
            ts.append(src.text)
            vs.append(src.voice)
        vocals[v], texts[v], words[v], voices[v] = stem, " ".join(ts), (ws if timed else None), vs
    music = music_pool(plan.music)
    a = int(round(plan.music_offset_s * SAMPLE_RATE))
    m = music.audio[a:a + T]
    if len(m) < T:
        raise ValueError(f"music source {music.id} is shorter than item {plan.id}")
    snrs = {v: getattr(plan, f"{v}_snr_db") for v in vocals}
    mix = mix_stems(vocals, m, snrs, peak=plan.peak)
    return RenderedItem(plan=plan, mix=mix, texts=texts, words=words, voices=voices,
                        music_meta={"id": music.id, **music.meta})


def write_item(item: RenderedItem, root: str | Path, rel_dir: str, ext: str = "flac") -> ManifestItem:
    """Write mixture and stems under ``root/rel_dir/`` and return the manifest entry."""
    root = Path(root)
    paths: dict[str, str | None] = {}
    for name in ("mixture", "speech", "singing", "music"):
        audio = item.mix.mixture if name == "mixture" else item.mix.stems.get(name)
        if audio is None:
            paths[name] = None
            continue
        rel = f"{rel_dir}/{name}.{ext}"
        save_audio(root / rel, audio, SAMPLE_RATE)
        paths[name] = rel
    p = item.plan
    extra = {
        "split": p.split, "scenario": p.scenario, "duration_s": p.duration_s,
        "speech_snr_db": _r(item.mix.snr_db.get("speech")), "singing_snr_db": _r(item.mix.snr_db.get("singing")),
        "speech_snr_bucket": _bucket(item.mix.snr_db.get("speech")),
        "singing_snr_bucket": _bucket(item.mix.snr_db.get("singing")),
        "speech_voices": item.voices["speech"], "singing_voices": item.voices["singing"], "music_meta": item.music_meta,
    }
    return ManifestItem(
        id=p.id, mixture=paths["mixture"], speech=paths["speech"], singing=paths["singing"], music=paths["music"],
        speech_text=item.texts["speech"], singing_text=item.texts["singing"], sample_rate=SAMPLE_RATE,
        speech_words=item.words["speech"], singing_words=item.words["singing"], extra=extra,
    )


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _bucket(x: float | None) -> int | None:
    return None if x is None else snr_bucket(x)
