"""Dynamic mixing for separator training, and the fixed valid/test manifests as datasets.

:class:`DynamicMixDataset` draws a fresh item for every training example from a corpus's
cached sources (``DIR/sources/<kind>.jsonl`` of one split): it plans one item with
:func:`jrsv_stream.data.compose.plan_items` (scenario, placements, music window, SNRs in
-5..+5 dB), renders it with :func:`~jrsv_stream.data.compose.render_item` (region-SNR
mixing, 16-bit grid) from :class:`jrsv_stream.data.synth.SourceStore` s, and cuts a random
fixed-length crop.

Determinism: example ``i`` uses its own generator seeded by ``(seed, split, i)``, and batch
``b`` holds examples ``b * batch_size ... (b + 1) * batch_size - 1``. Worker ``w`` of ``W``
DataLoader workers makes the batches ``b = w (mod W)``, and the DataLoader reads workers
round-robin, so the stream of batches is the same for any ``num_workers`` and can restart
at any batch (``start_batch``: how training resumes exactly). Use
``DataLoader(dataset, batch_size=None, num_workers=W)``.

Activity targets (speech, singing), one per model frame of ``hop_samples``: frame ``k``
covers crop samples ``[k * hop, (k + 1) * hop)`` and is active (1) when it overlaps a
**word span** of that source (word timings from the TTS/singing engines, kept through
rendering). Pauses between words are inactive, so the label says "a word is sounding
now", which is what caption gating needs. Sources without word timings (real corpora) fall
back to **stem energy**: a frame is active when its energy is within ``energy_db`` (-30 dB)
of the loudest frame of that stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.augment import AugmentConfig, augment_stems
from jrsv_stream.data.compose import plan_items, render_item
from jrsv_stream.data.manifest import Word, read_manifest
from jrsv_stream.data.synth import SourceStore, read_source_index

STEMS = ("speech", "singing", "music")
VOCALS = ("speech", "singing")
_SPLIT_CODES = {"train": 11, "valid": 12, "test": 13}
_STREAM_CODE = 7  # keeps these generators apart from the corpus builder's


def activity_targets(words: Sequence[Word] | None, stem: np.ndarray | None, offset_samples: int, n_frames: int,
                     hop_samples: int, energy_db: float = -30.0) -> np.ndarray:
    """Frame activity of one vocal source (see the module docstring).

    Args:
        words: word spans ``(word, start_s, end_s)`` relative to the stem's start, or None.
        stem: (T_item,) the whole stem (used only when ``words`` is None), or None if absent.
        offset_samples: where the crop starts in the stem.
        n_frames: frames in the crop; frame k covers ``[offset + k*hop, offset + (k+1)*hop)``.
        hop_samples: frame hop.

    Returns:
        (n_frames,) float32 of 0/1.
    """
    out = np.zeros(n_frames, dtype=np.float32)
    if stem is None and words is None:
        return out
    if words is not None:
        for _, s, e in words:
            a = int(round(s * SAMPLE_RATE)) - offset_samples
            b = int(round(e * SAMPLE_RATE)) - offset_samples
            if b <= 0 or a >= n_frames * hop_samples or b <= a:
                continue
            out[max(0, a // hop_samples):min(n_frames, -(-b // hop_samples))] = 1.0
        return out
    x = np.asarray(stem, dtype=np.float64)
    n_all = len(x) // hop_samples
    if n_all == 0:
        return out
    energy = (x[:n_all * hop_samples].reshape(n_all, hop_samples) ** 2).sum(1)
    top = energy.max()
    if top <= 0:
        return out
    active = energy >= top * 10.0 ** (energy_db / 10.0)
    if offset_samples % hop_samples == 0:
        k0 = offset_samples // hop_samples
        seg = active[k0:k0 + n_frames]
        out[:len(seg)] = seg
    else:  # crop not on the frame grid: frame energies of the crop itself
        seg = x[offset_samples:offset_samples + n_frames * hop_samples]
        seg = np.pad(seg, (0, n_frames * hop_samples - len(seg)))
        e = (seg.reshape(n_frames, hop_samples) ** 2).sum(1)
        out[:] = e >= top * 10.0 ** (energy_db / 10.0)
    return out


def crop_words(words, offset_s: float, dur_s: float) -> list[tuple[str, float, float]]:
    """Words (text, start, end) of an item overlapping the crop [offset, offset + dur),
    in crop time (a cut word keeps its times outside [0, dur)); [] without timings."""
    return [(w, round(s - offset_s, 4), round(e - offset_s, 4)) for w, s, e in (words or ())
            if e > offset_s and s < offset_s + dur_s]


def _active_rms(x: np.ndarray, act: np.ndarray, hop: int) -> float:
    """RMS of ``x`` over the frames where ``act`` (one value per ``hop`` samples) is set."""
    m = np.repeat(act > 0, hop)[: x.size]
    return float(np.sqrt(np.mean(np.square(x[: m.size][m], dtype=np.float64)) + 1e-12))


def _remix(stems: np.ndarray) -> np.ndarray:
    """The mixture as the sum of ``stems`` (3, T) after one was replaced: both scaled down
    together, in place, if the sum would peak over 0.99."""
    mixture = stems.sum(0)
    peak = float(np.abs(mixture).max())
    if peak > 0.99:
        stems *= 0.99 / peak
        mixture *= 0.99 / peak
    return mixture.astype(np.float32)


def _crop(x: np.ndarray, offset: int, n: int) -> np.ndarray:
    seg = x[offset:offset + n]
    return np.pad(seg, (0, n - len(seg))) if len(seg) < n else seg


class DynamicMixDataset(IterableDataset):
    """Endless (or ``num_batches``-long) stream of freshly mixed training crops.

    Each yielded batch (``batch_size`` given) is a dict:
        mixture: (B, T) float32; stems: (B, 3, T) float32 speech/singing/music, zeros
        when absent; activity: (B, 2, T // hop) float32 0/1; meta: dict of lists (``id``,
        ``scenario``, ``speech_snr_db``/``singing_snr_db`` (NaN when absent), ``offset_s``, ``speech_words`` / ``singing_words``:
        :func:`crop_words`).
    With ``batch_size=None`` single examples are yielded, with the batch axis dropped.

    Args:
        root: corpus folder (with ``sources/<kind>.jsonl``).
        split: which split's sources to mix (``train`` for training).
        crop_samples: crop length (a multiple of ``hop_samples``).
        hop_samples: model frame hop (activity frame rate).
        batch_size: examples per batch, or None.
        seed: base seed.
        start_batch: first batch index (resume).
        num_batches: stop after this many batches (None: endless).
        plan_kwargs: extra arguments for ``plan_items`` (``scenario_weights``,
            ``snr_range_db``, ``min_s``, ``max_s``).
        augment: training effects on the crop's stems (:mod:`jrsv_stream.data.augment`),
            drawn from the example's own generator after the crop; None or disabled: none.
        real_speech: a real-speech pool folder (:mod:`jrsv_stream.data.real_speech`); with
            probability ``p_real_speech`` an example's speech stem (where it has one) is
            replaced by a crop of real talk at the same level over its active frames
            (activity from the stem's energy; ``speech_words`` then empty, ``speech_real``
            True in meta), drawn from a generator of its own so the rest of the example is
            unchanged. ``real_singing`` / ``p_real_singing``: the same for the singing
            stem, from a pool of that talk sung (``build_real_singing``).
        music_pool: a music pool folder (:mod:`jrsv_stream.data.music_pool`: the corpus's
            composer through other renderers); with probability ``p_music_pool`` an
            example's music stem is replaced by a random crop of a pool piece at the
            replaced stem's level (RMS over its active frames, frames within ``energy_db``
            of its loudest), so the vocals' SNRs stay as the corpus drew them; the mixture
            becomes the stems' sum. Drawn from a generator of its own (the rest of the
            example is unchanged); ``music_pool`` in meta: the piece's id, or "" when the
            corpus's music was kept (the key is there only while a pool is in use).
        p_no_music: probability that an example has no music at all (music stem zeroed, the
            mixture its vocals alone; after the pools, before the effects), drawn from a
            generator of its own; ``no_music`` in meta. Every corpus example has music under
            its voices, so without it a separator never hears a voice with nothing to remove
            (a clean microphone): stage 4 sends ~80 % of a clean voice's energy to the music
            track (README, session 25).
    """

    def __init__(self, root: str | Path, split: str, crop_samples: int, hop_samples: int, batch_size: int | None = None,
                 seed: int = 0, start_batch: int = 0, num_batches: int | None = None, plan_kwargs: dict | None = None,
                 energy_db: float = -30.0, cache_size: int = 256, augment: AugmentConfig | None = None,
                 real_speech: str | Path | None = None, p_real_speech: float = 0.0,
                 real_singing: str | Path | None = None, p_real_singing: float = 0.0,
                 music_pool: str | Path | None = None, p_music_pool: float = 0.0, p_no_music: float = 0.0):
        super().__init__()
        if crop_samples <= 0 or crop_samples % hop_samples:
            raise ValueError(f"crop_samples={crop_samples} must be a positive multiple of hop_samples={hop_samples}")
        self.root, self.split = Path(root), split
        self.crop_samples, self.hop_samples = crop_samples, hop_samples
        self.batch_size, self.seed = batch_size, seed
        self.start_batch, self.num_batches = start_batch, num_batches
        self.plan_kwargs = dict(plan_kwargs or {})
        self.energy_db, self.cache_size = energy_db, cache_size
        self.augment = augment if augment is not None and augment.enabled else None
        self.index = {k: read_source_index(self.root, k, split) for k in STEMS}
        if not self.index["music"] or not (self.index["speech"] or self.index["singing"]):
            raise ValueError(f"{self.root}: split {split!r} has no music or no vocal sources")
        self.durs = {k: [float(m["duration_s"]) for m in v] for k, v in self.index.items()}
        self._stores: dict[str, SourceStore] | None = None
        self.p_real = (float(p_real_speech), float(p_real_singing))
        self.real_roots: list[Path | None] = [None, None]
        for j, (root, p, cmd) in enumerate(((real_speech, p_real_speech, "real-speech"),
                                            (real_singing, p_real_singing, "real-speech --sung data/real_speech"))):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"p_real_{VOCALS[j]} must be in [0, 1], got {p}")
            if root and p > 0:
                self.real_roots[j] = Path(root)
                if not (Path(root) / "pool.npy").is_file():
                    raise FileNotFoundError(f"{root}: no real-voice pool (jrsv-stream data {cmd} --out {root})")
        self._real_pools: list = [None, None]
        if not 0.0 <= p_music_pool <= 1.0:
            raise ValueError(f"p_music_pool must be in [0, 1], got {p_music_pool}")
        if p_music_pool > 0 and not music_pool:
            raise ValueError("p_music_pool > 0 needs music_pool "
                             "(build one: jrsv-stream data music-pool --out data/music_pool)")
        self.p_music_pool = float(p_music_pool)
        self.music_root = Path(music_pool) if music_pool and p_music_pool > 0 else None
        if self.music_root is not None and not (self.music_root / "manifest.jsonl").is_file():
            raise FileNotFoundError(f"{music_pool}: no music pool (jrsv-stream data music-pool --out {music_pool})")
        self._music_pool = None
        if not 0.0 <= p_no_music <= 1.0:
            raise ValueError(f"p_no_music must be in [0, 1], got {p_no_music}")
        self.p_no_music = float(p_no_music)

    def _rng(self, i: int, *stream: int) -> np.random.Generator:
        """Example ``i``'s generator (``stream``: one of its own for a pool or a variation, so
        drawing it leaves the rest of the example unchanged)."""
        return np.random.default_rng([self.seed, _STREAM_CODE, _SPLIT_CODES.get(self.split, 0), i, *stream])

    def _get_stores(self) -> dict[str, SourceStore]:
        if self._stores is None:  # made lazily, so each DataLoader worker has its own cache
            self._stores = {k: SourceStore(self.root, k, self.index[k], self.cache_size) for k in STEMS}
        return self._stores

    def example(self, i: int) -> dict:
        """Example ``i`` (deterministic): mixture (T,), stems (3, T), activity (2, F), meta."""
        rng = self._rng(i)
        plan = plan_items(rng, 1, self.split, self.durs["speech"], self.durs["singing"], self.durs["music"],
                          id_prefix=f"dyn-{self.split}-{i}-", **self.plan_kwargs)[0]
        st = self._get_stores()
        item = render_item(plan, st["speech"] if self.durs["speech"] else None,
                           st["singing"] if self.durs["singing"] else None, st["music"])
        T_item, n = len(item.mix.mixture), self.crop_samples
        offset = int(rng.integers(0, max(1, T_item - n + 1)))
        n_frames = n // self.hop_samples
        stems = np.zeros((3, n), dtype=np.float32)
        act = np.zeros((2, n_frames), dtype=np.float32)
        for j, name in enumerate(STEMS):
            s = item.mix.stems.get(name)
            if s is not None:
                stems[j] = _crop(s, offset, n)
                if name in VOCALS:
                    act[j] = activity_targets(item.words[name], s, offset, n_frames, self.hop_samples, self.energy_db)
        snr = {v: float(item.mix.snr_db[v]) if v in item.mix.snr_db else float("nan") for v in VOCALS}
        meta = {"id": plan.id, "scenario": plan.scenario, "speech_snr_db": snr["speech"],
                "singing_snr_db": snr["singing"], "offset_s": offset / SAMPLE_RATE}
        for v in VOCALS:  # the crop's timed words (crop time, s), cut ones included: the recognizer loss's targets
            meta[f"{v}_words"] = crop_words(item.words[v], offset / SAMPLE_RATE, n / SAMPLE_RATE)
        mixture = _crop(item.mix.mixture, offset, n).copy()
        for j in (0, 1):
            if self.real_roots[j] is not None:
                mixture = self._real_voice(i, j, stems, act, meta, mixture)
        if self.music_root is not None:
            mixture = self._pool_music(i, stems, meta, mixture)
        if self.p_no_music > 0:
            mixture = self._drop_music(i, stems, meta, mixture)
        if self.augment is not None:  # effects on the stems; the mixture is rebuilt as their sum
            mixture, stems = augment_stems(stems, rng, self.augment)
        return {"mixture": torch.from_numpy(mixture), "stems": torch.from_numpy(stems),
                "activity": torch.from_numpy(act), "meta": meta}

    def _real_voice(self, i: int, j: int, stems: np.ndarray, act: np.ndarray, meta: dict,
                    mixture: np.ndarray) -> np.ndarray:
        """Maybe replace the crop's vocal ``j`` (0 speech, 1 singing) by a crop of its real pool
        (see ``real_speech`` / ``real_singing``), in place; returns the mixture (the stems'
        sum when replaced)."""
        name = VOCALS[j]
        meta[f"{name}_real"] = False
        rng = self._rng(i, 1 + j)
        if not act[j].any() or rng.random() >= self.p_real[j]:
            return mixture
        if self._real_pools[j] is None:
            from jrsv_stream.data.real_speech import RealSpeechPool

            self._real_pools[j] = RealSpeechPool(self.real_roots[j])
        n, hop = stems.shape[1], self.hop_samples
        real = self._real_pools[j].crop(rng, n)
        real_act = activity_targets(None, real, 0, act.shape[1], hop, self.energy_db)
        if not real_act.any():
            return mixture
        stems[j] = real * (_active_rms(stems[j], act[j], hop) / _active_rms(real, real_act, hop))
        act[j] = real_act
        meta[f"{name}_words"], meta[f"{name}_real"] = [], True
        return _remix(stems)

    def _pool_music(self, i: int, stems: np.ndarray, meta: dict, mixture: np.ndarray) -> np.ndarray:
        """Maybe replace the crop's music stem by a crop of a music-pool piece (see
        ``music_pool``), in place; returns the mixture (the stems' sum when replaced)."""
        meta["music_pool"] = ""
        rng = self._rng(i, 3)
        if rng.random() >= self.p_music_pool:
            return mixture
        n, hop = stems.shape[1], self.hop_samples
        old_act = activity_targets(None, stems[2], 0, n // hop, hop, self.energy_db)
        if not old_act.any():  # no music in the crop: nothing to match
            return mixture
        if self._music_pool is None:
            from jrsv_stream.data.music_pool import MusicPool

            self._music_pool = MusicPool(self.music_root)
        new, piece = self._music_pool.crop(rng, n)
        new_act = activity_targets(None, new, 0, n // hop, hop, self.energy_db)
        if not new_act.any():
            return mixture
        stems[2] = new * (_active_rms(stems[2], old_act, hop) / _active_rms(new, new_act, hop))
        meta["music_pool"] = piece
        return _remix(stems)

    def _drop_music(self, i: int, stems: np.ndarray, meta: dict, mixture: np.ndarray) -> np.ndarray:
        """Maybe silence the crop's music (see ``p_no_music``), in place; returns the mixture
        (the vocals' sum when dropped)."""
        rng = self._rng(i, 4)
        meta["no_music"] = bool(rng.random() < self.p_no_music)
        if not meta["no_music"]:
            return mixture
        stems[2] = 0.0
        return _remix(stems)

    def batch(self, b: int) -> dict:
        """Batch ``b``: examples ``b * batch_size ...`` stacked (see the class docstring)."""
        if self.batch_size is None:
            raise ValueError("batch() needs a batch_size")
        exs = [self.example(b * self.batch_size + i) for i in range(self.batch_size)]
        return collate_examples(exs)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        b = self.start_batch
        while self.num_batches is None or b < self.start_batch + self.num_batches:
            if (b - self.start_batch) % nw == wid:
                yield self.batch(b) if self.batch_size is not None else self.example(b)
            b += 1


def collate_examples(exs: list[dict]) -> dict:
    """Stack tensors of same-length examples; meta becomes a dict of lists."""
    return {"mixture": torch.stack([e["mixture"] for e in exs]), "stems": torch.stack([e["stems"] for e in exs]),
            "activity": torch.stack([e["activity"] for e in exs]),
            "meta": {k: [e["meta"][k] for e in exs] for k in exs[0]["meta"]}}


class ManifestDataset(Dataset):
    """The fixed items of a manifest (valid/test), whole or truncated, for evaluation.

    Item ``i`` is a dict: mixture (T,), stems (3, T) (zeros when absent), activity (2, F),
    ``length`` (samples of real audio before padding), meta (``id``, ``scenario``,
    ``speech_snr_db``, ``singing_snr_db`` (NaN if absent), ``present`` (3 bools)). ``T`` is
    the item length (or ``max_seconds``) rounded **up** to a multiple of ``hop_samples``
    with zeros. Activity uses the manifest's word timings, or stem energy without them.
    """

    def __init__(self, manifest: str | Path, hop_samples: int, max_seconds: float | None = None,
                 max_items: int | None = None, energy_db: float = -30.0):
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        self.items = read_manifest(self.manifest)[:max_items]
        self.hop_samples, self.max_seconds, self.energy_db = hop_samples, max_seconds, energy_db

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        mix = load_audio(it.path("mixture", self.root))
        length = len(mix) if self.max_seconds is None else min(len(mix), int(self.max_seconds * SAMPLE_RATE))
        T = -(-length // self.hop_samples) * self.hop_samples
        stems = np.zeros((3, T), dtype=np.float32)
        n_frames = T // self.hop_samples
        act = np.zeros((2, n_frames), dtype=np.float32)
        present = []
        for j, name in enumerate(STEMS):
            p = it.path(name, self.root)
            present.append(p is not None)
            if p is None:
                continue
            s = load_audio(p)
            stems[j] = _crop(s, 0, T)
            if name in VOCALS:
                act[j] = activity_targets(getattr(it, f"{name}_words"), s, 0, n_frames, self.hop_samples, self.energy_db)
        snr = {v: it.extra.get(f"{v}_snr_db") for v in VOCALS}
        meta = {"id": it.id, "scenario": it.extra.get("scenario"), "present": present,
                **{f"{v}_snr_db": float("nan") if snr[v] is None else float(snr[v]) for v in VOCALS}}
        return {"mixture": torch.from_numpy(_crop(mix, 0, T).copy()), "stems": torch.from_numpy(stems),
                "activity": torch.from_numpy(act), "length": length, "meta": meta}
