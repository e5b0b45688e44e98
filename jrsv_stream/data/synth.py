"""Build the offline DTSSV-style corpus: ``jrsv-stream data synth --out DIR --hours H --seed S``.

Three phases, each resumable (a unit of work is skipped when its completion marker, the
JSON sidecar written last, exists) and deterministic (every random choice comes from a
generator seeded by ``(seed, kind, split, index)``, never from worker scheduling):

1. **Sources** (cached apart from mixtures, so training can mix on the fly): speech
   utterances (espeak-ng / flite / Festival voices, random speed and pitch), sung lines
   (Festival singing mode and WORLD re-pitching), music pieces (fluidsynth MIDI + real
   loops). ``DIR/sources/<kind>/<split>/<id>.flac`` + ``<id>.json`` (text, word times,
   voice, parameters), and an index ``DIR/sources/<kind>.jsonl``.
2. **Mixtures**: items planned by :func:`jrsv_stream.data.compose.plan_items` from the
   source index, rendered in parallel into ``DIR/mixtures/<split>/<id>/``.
3. **Manifests** ``DIR/{train,valid,test}.jsonl`` (shared/DESIGN.md format) and
   ``DIR/stats.json`` (hours per scenario, voices, SNR histograms, build speed, disk).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import load_audio, save_audio
from jrsv_stream.data.compose import MusicSource, VocalSource, plan_items, render_item, write_item
from jrsv_stream.data.manifest import ManifestItem, write_manifest

SPLITS = ("train", "valid", "test")
KINDS = ("speech", "singing", "music")
_CODES = {"speech": 1, "singing": 2, "music": 3, "train": 11, "valid": 12, "test": 13, "plan": 99}
FORMAT_VERSION = 1
MEAN_ITEM_S = 9.5  # items are U(4, 15) s
MUSIC_PIECE_S = 16.0  # longer than the longest item, so any item finds a window
ATTEMPTS = 8  # a source whose synthesis fails (~5 % of draws) is redrawn with new text/voice
BATCH = {"speech": 32, "singing": 16, "music": 2}


class CorpusConfigError(ValueError):
    """The output folder holds a corpus built with another configuration."""


@dataclass(frozen=True)
class SynthConfig:
    hours: float
    seed: int = 0
    ext: str = "flac"
    split_fraction: tuple[float, float, float] = (0.9, 0.05, 0.05)
    festival_singing_fraction: float = 0.5
    music_reuse: float = 3.0  # items per music piece (each item takes its own window)
    vocal_reuse: float = 2.0  # mean uses of each utterance / sung line across items

    def n_items(self) -> dict[str, int]:
        total = max(3, int(round(self.hours * 3600 / MEAN_ITEM_S)))
        valid = max(1, int(round(total * self.split_fraction[1])))
        test = max(1, int(round(total * self.split_fraction[2])))
        return {"train": max(1, total - valid - test), "valid": valid, "test": test}

    def n_sources(self) -> dict[str, dict[str, int]]:
        """Sources per kind and split. Vocals fill ~45 % of the item time per track
        (utterances ~3 s, sung lines ~4 s); each source is used ``vocal_reuse`` times on
        average, in different items at different offsets, SNRs and partners. Sources are
        the costly part of the build; training mixes them anew anyway (dynamic mixing)."""
        out = {}
        for split, n in self.n_items().items():
            out[split] = {
                "speech": max(3, math.ceil(n * MEAN_ITEM_S * 0.45 / 3.0 / self.vocal_reuse)),
                "singing": max(3, math.ceil(n * MEAN_ITEM_S * 0.45 / 4.0 / self.vocal_reuse)),
                "music": max(1, math.ceil(n / self.music_reuse)),
            }
        return out


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng([seed] + [_CODES.get(k, k) if isinstance(k, str) else k for k in keys])


def _source_id(kind: str, split: str, k: int) -> str:
    return f"{kind}-{split}-{k:06d}"


# --- phase 1: sources ----------------------------------------------------------------------
def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _mark_failed(out_dir: Path, kind: str, split: str, ks: list[int]) -> None:
    """A source that failed every attempt is left out of the pools (marker file), so one
    unlucky draw never stops a 10-hour build; the count is reported in the statistics."""
    for k in ks:
        (out_dir / f"{_source_id(kind, split, k)}.failed").write_text(f"failed {ATTEMPTS} attempts\n")


def _write_source(out_dir: Path, sid: str, audio: np.ndarray, meta: dict, ext: str) -> float:
    save_audio(out_dir / f"{sid}.{ext}", audio, SAMPLE_RATE)
    meta = {"id": sid, "audio": f"{sid}.{ext}", "duration_s": round(len(audio) / SAMPLE_RATE, 4), **meta}
    tmp = out_dir / f"{sid}.json.part"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, out_dir / f"{sid}.json")
    return len(audio) / SAMPLE_RATE


def _vocal_sources(root: str, cfg: SynthConfig, kind: str, split: str, ks: list[int], draw, run) -> float:
    """Make vocal sources ``ks``: ``draw(rng, attempt)`` gives a request, ``run(requests,
    workdir)`` synthesizes a batch (None per failure). A failed or too long source is drawn
    again with a new rng (new text/voice) up to ATTEMPTS times, then marked failed."""
    out_dir = Path(root) / "sources" / kind / split
    todo, seconds = list(ks), 0.0
    for attempt in range(ATTEMPTS):
        reqs = [draw(_rng(cfg.seed, kind, split, k, attempt), attempt) for k in todo]
        failed = []
        for k, r, u in zip(todo, reqs, run(reqs, out_dir.parent)):
            if u is None or len(u.audio) > 14 * SAMPLE_RATE:
                failed.append(k)
                continue
            seconds += _write_source(out_dir, _source_id(kind, split, k), u.audio,
                                     {"text": " ".join(r.words), "words": u.words, "voice": u.voice, "params": u.params}, cfg.ext)
        todo = failed
        if not todo:
            break
    _mark_failed(out_dir, kind, split, todo)
    return seconds


def _speech_task(root: str, cfg: SynthConfig, split: str, ks: list[int]) -> float:
    from jrsv_stream.data.text import load_sentences
    from jrsv_stream.data.tts import TtsRequest, synthesize, voices_for_split

    sents, voices = load_sentences()[split], voices_for_split(split)

    def draw(rng, attempt):
        s = sents[int(rng.integers(len(sents)))]
        v = voices[int(rng.integers(len(voices)))]
        return TtsRequest(s.spoken, s.words, v, speed=float(rng.uniform(0.8, 1.25)), pitch=float(rng.uniform(-1, 1)))

    return _vocal_sources(root, cfg, "speech", split, ks, draw, synthesize)


def _singing_task(root: str, cfg: SynthConfig, split: str, ks: list[int]) -> float:
    from jrsv_stream.data.singing import SingRequest, sing, singers_for_split
    from jrsv_stream.data.text import load_lyric_lines

    lines = load_lyric_lines()[split]
    singers = singers_for_split(split)
    fest = [s for s in singers if s.startswith("festival-sing:")]
    world = [s for s in singers if s.startswith("world:")]

    def draw(rng, attempt):
        last_resort = attempt >= ATTEMPTS - 2  # one short line by Festival: the most reliable singer
        n_lines = 1 if rng.random() < 0.6 or last_resort else 2
        words = tuple(w for _ in range(n_lines) for w in lines[int(rng.integers(len(lines)))].words)
        pool = fest if rng.random() < cfg.festival_singing_fraction or last_resort else world
        singer = pool[int(rng.integers(len(pool)))]
        return SingRequest(words, singer, tempo_bpm=float(rng.uniform(80, 150)),
                           key_midi=int(rng.integers(0, 12)), seed=int(rng.integers(2**31)))

    return _vocal_sources(root, cfg, "singing", split, ks, draw, sing)


def _music_task(root: str, cfg: SynthConfig, split: str, ks: list[int]) -> float:
    from jrsv_stream.data.music import synth_music

    out_dir = Path(root) / "sources" / "music" / split
    seconds = 0.0
    for k in ks:
        seed = int(_rng(cfg.seed, "music", split, k).integers(2**31))
        piece = synth_music(seed, MUSIC_PIECE_S, split=split, workdir=out_dir.parent)
        seconds += _write_source(out_dir, _source_id("music", split, k), piece.audio, {"meta": piece.meta}, cfg.ext)
    return seconds


_TASKS = {"speech": _speech_task, "singing": _singing_task, "music": _music_task}


# --- phase 2: mixtures ------------------------------------------------------------------------
class SourceStore:
    """Reads cached sources by pool index (one split, one kind), with a small LRU cache."""

    def __init__(self, root: Path, kind: str, index: list[dict], cache_size: int = 64):
        self.root, self.kind, self.index, self.cache_size = Path(root), kind, index, cache_size
        self._cache: dict[int, VocalSource | MusicSource] = {}

    def durations(self) -> list[float]:
        return [float(m["duration_s"]) for m in self.index]

    def __call__(self, k: int):
        if k in self._cache:
            return self._cache[k]
        m = self.index[k]
        audio = load_audio(self.root / "sources" / self.kind / m["split"] / m["audio"])
        if self.kind == "music":
            src = MusicSource(m["id"], audio, m.get("meta", {}))
        else:
            src = VocalSource(m["id"], audio, m["text"], [tuple(w) for w in m["words"]], m["voice"])
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[k] = src
        return src


def read_source_index(root: str | Path, kind: str, split: str) -> list[dict]:
    path = Path(root) / "sources" / f"{kind}.jsonl"
    with open(path, encoding="utf-8") as f:
        return [d for d in map(json.loads, f) if d["split"] == split]


def _mix_task(root: str, cfg: SynthConfig, split: str, plans: list[dict]) -> float:
    from jrsv_stream.data.compose import ItemPlan, Placement

    root_p = Path(root)
    stores = {k: SourceStore(root_p, k, read_source_index(root_p, k, split)) for k in KINDS}
    seconds = 0.0
    for d in plans:
        d = dict(d)
        d["speech"] = tuple(Placement(**p) for p in d["speech"])
        d["singing"] = tuple(Placement(**p) for p in d["singing"])
        plan = ItemPlan(**d)
        rel = f"mixtures/{split}/{plan.id}"
        item = write_item(render_item(plan, stores["speech"], stores["singing"], stores["music"]), root_p, rel, cfg.ext)
        tmp = root_p / rel / "item.json.part"
        tmp.write_text(json.dumps(item.to_json()))
        os.replace(tmp, root_p / rel / "item.json")
        seconds += plan.duration_s
    return seconds


# --- driver ------------------------------------------------------------------------------------
def _source_done(out_dir: Path, kind: str, split: str, k: int) -> bool:
    sid = _source_id(kind, split, k)
    return (out_dir / f"{sid}.json").is_file() or (out_dir / f"{sid}.failed").is_file()


def _source_jobs(root: Path, cfg: SynthConfig, kind: str, split: str, ks) -> list[tuple]:
    """``_run_parallel`` jobs (batches of ``BATCH[kind]``) for the sources ``ks`` not made yet."""
    out_dir = root / "sources" / kind / split
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [k for k in ks if not _source_done(out_dir, kind, split, k)]
    return [(_TASKS[kind], str(root), cfg, split, missing[i:i + BATCH[kind]], len(missing[i:i + BATCH[kind]]))
            for i in range(0, len(missing), BATCH[kind])]


def _write_source_index(root: Path, kind: str, ks_by_split: dict) -> tuple[list[dict], int]:
    """Write ``root/sources/<kind>.jsonl`` (atomically) from the sources ``ks_by_split``
    made; returns its rows and how many sources failed every attempt (see _mark_failed)."""
    rows, failed = [], 0
    for split, ks in ks_by_split.items():
        for k in ks:
            path = root / "sources" / kind / split / f"{_source_id(kind, split, k)}.json"
            if not path.is_file():
                failed += 1
                continue
            rows.append({**json.loads(path.read_text()), "split": split, "kind": kind})
    tmp = root / "sources" / f"{kind}.jsonl.part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, root / "sources" / f"{kind}.jsonl")
    return rows, failed


def _progress_bar(progress: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not progress)


def _check_config(root: Path, cfg: SynthConfig) -> None:
    path = root / "corpus.json"
    want = {"format_version": FORMAT_VERSION, **asdict(cfg)}
    want["split_fraction"] = list(want["split_fraction"])
    if path.is_file():
        have = json.loads(path.read_text())
        if have != want:
            raise CorpusConfigError(f"{root} holds a corpus built with {have}, not {want}: use another --out or the same settings")
    else:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(want, indent=1))


def _run_parallel(jobs: list[tuple], workers: int, progress, label: str, total_units: int) -> float:
    """Run (fn, args..., n_units) jobs in a process pool with a progress bar; returns the
    sum of what the jobs return (seconds of audio made)."""
    task = progress.add_task(label, total=total_units) if progress else None
    done = 0.0
    if not jobs:
        if progress:
            progress.update(task, completed=total_units)
        return done
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init) as ex:
        futs = {ex.submit(fn, *args): n for fn, *args, n in jobs}
        for fut in as_completed(futs):
            done += fut.result()
            if progress:
                progress.advance(task, futs[fut])
    return done


def build_corpus(out: str | Path, cfg: SynthConfig, workers: int | None = None, progress: bool = True,
                 splits: tuple[str, ...] = SPLITS) -> dict:
    """Build (or resume) the corpus in ``out``; returns the statistics written to stats.json.
    ``splits``: only these splits' sources, mixtures and manifests (e.g. ``("test",)`` for an
    evaluation machine: the same files as the whole build's, every draw being seeded by
    split and index; a later build with more splits resumes it)."""
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits must be some of {SPLITS}, got {splits}")
    root = Path(out)
    _check_config(root, cfg)
    workers = workers or max(1, os.cpu_count() or 1)
    t0 = time.time()
    n_sources = cfg.n_sources()
    bar = _progress_bar(progress)
    with bar:
        # Phase 1: sources, largest jobs first so the pool stays busy to the end.
        jobs = [j for kind in ("singing", "music", "speech") for split in splits
                for j in _source_jobs(root, cfg, kind, split, range(n_sources[split][kind]))]
        n_units = sum(j[-1] for j in jobs)
        _run_parallel(jobs, workers, bar if progress else None, "sources", n_units)
        failed_sources = {kind: _write_source_index(root, kind, {split: range(n_sources[split][kind]) for split in splits})[1]
                          for kind in KINDS}
        t_sources = time.time() - t0

        # Phase 2: plan every split in this process (deterministic), render in parallel.
        plans_by_split = {}
        jobs = []
        for split, n in cfg.n_items().items():
            if split not in splits:
                continue
            durs = {k: [float(m["duration_s"]) for m in read_source_index(root, k, split)] for k in KINDS}
            plans = plan_items(_rng(cfg.seed, "plan", split), n, split, durs["speech"], durs["singing"], durs["music"],
                               id_prefix=f"{split}-")
            plans_by_split[split] = plans
            todo = [p.to_json() for p in plans if not (root / "mixtures" / split / p.id / "item.json").is_file()]
            for i in range(0, len(todo), 16):
                jobs.append((_mix_task, str(root), cfg, split, todo[i:i + 16], len(todo[i:i + 16])))
        _run_parallel(jobs, workers, bar if progress else None, "mixtures", sum(j[-1] for j in jobs))

    # Phase 3: manifests (paths relative to the corpus root, where the manifests live).
    for split, plans in plans_by_split.items():
        items = [ManifestItem.from_json(json.loads((root / "mixtures" / split / p.id / "item.json").read_text())) for p in plans]
        write_manifest(root / f"{split}.jsonl", items)
    elapsed = time.time() - t0
    from jrsv_stream.data.stats import corpus_stats

    stats = corpus_stats(root)
    stats["failed_sources"] = failed_sources
    stats["build"] = {"seconds": round(elapsed, 1), "sources_seconds": round(t_sources, 1), "workers": workers,
                      "note": "includes time of earlier interrupted runs only for work they finished"}
    stats["build"]["mixture_hours_per_wall_hour"] = round(stats["total_hours"] / (elapsed / 3600), 2) if elapsed > 0 else None
    (root / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def clean_partial_files(root: str | Path) -> int:
    """Remove ``*.part`` files and scratch folders an interrupted build left behind;
    returns how many ``*.part`` files."""
    n = 0
    for p in Path(root).rglob("*.part"):
        p.unlink()
        n += 1
    for pattern in ("tts-*", "sing-*"):  # scratch folders of tts.synthesize / singing.sing
        for p in Path(root).rglob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    return n


# --- extra clean vocals for the recognizer ------------------------------------------------------
VOCALS_FIRST_INDEX = 1_000_000  # ids of extra vocals never collide with a corpus's own sources
MEAN_SOURCE_S = {"speech": 3.0, "singing": 4.0}


def build_vocal_sources(out: str | Path, hours: dict[str, float], seed: int = 0, ext: str = "flac",
                        workers: int | None = None, progress: bool = True) -> dict:
    """Make extra clean training vocals (train split text and voices only, no mixtures):
    ``jrsv-stream data vocals --out DIR --speech-hours H --singing-hours H``.

    The recognizer needs far more clean speech and singing than the mixtures use; these are
    drawn exactly like a corpus's sources (same texts, voices, speed/pitch ranges; test and
    valid texts and voices never appear) with indexes from ``VOCALS_FIRST_INDEX``, in the
    corpus source layout (``DIR/sources/<kind>/train/*`` + ``DIR/sources/<kind>.jsonl``), so
    an ASR config lists ``DIR`` under ``data.extra_corpora``. Resumable and deterministic like
    :func:`build_corpus`. Returns ``{"hours": {kind: h}, "failed": {kind: n}, "seconds": s}``.
    """
    root = Path(out)
    bad = {k: v for k, v in hours.items() if k not in MEAN_SOURCE_S or v < 0}
    if bad:
        raise ValueError(f"hours: expected speech/singing >= 0, got {bad}")
    cfg = SynthConfig(hours=0.0, seed=seed, ext=ext)
    want = {"format_version": FORMAT_VERSION, "kind": "vocals", "seed": seed, "ext": ext,
            "hours": {k: float(hours.get(k, 0.0)) for k in MEAN_SOURCE_S}}
    path = root / "vocals.json"
    if path.is_file():  # source k does not depend on the hours: a build may grow or shrink
        have = {k: v for k, v in json.loads(path.read_text()).items() if k != "hours"}
        if have != {k: v for k, v in want.items() if k != "hours"}:
            raise CorpusConfigError(f"{root} holds vocals built with {have}, not {want}: use another --out")
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want, indent=1))
    workers = workers or max(1, os.cpu_count() or 1)
    t0 = time.time()
    n = {k: math.ceil(want["hours"][k] * 3600 / MEAN_SOURCE_S[k]) for k in MEAN_SOURCE_S}
    ks = {k: range(VOCALS_FIRST_INDEX, VOCALS_FIRST_INDEX + n[k]) for k in MEAN_SOURCE_S}
    jobs = [j for kind in ("singing", "speech") for j in _source_jobs(root, cfg, kind, "train", ks[kind])]
    bar = _progress_bar(progress)
    with bar:
        _run_parallel(jobs, workers, bar if progress else None, "vocals", sum(j[-1] for j in jobs))
    result = {"hours": {}, "failed": {}, "seconds": 0.0}
    for kind in MEAN_SOURCE_S:
        rows, failed = _write_source_index(root, kind, {"train": ks[kind]})
        result["hours"][kind] = round(sum(float(r["duration_s"]) for r in rows) / 3600, 3)
        result["failed"][kind] = failed
    result["seconds"] = round(time.time() - t0, 1)
    (root / "stats.json").write_text(json.dumps(result, indent=1))
    return result
