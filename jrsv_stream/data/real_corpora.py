"""Loaders for the real corpora of the JRSV DTSSV benchmark, and the DTSSV builder.

DTSSV (JRSV paper) mixes AISHELL-1 speech, OpenSinger singing and MUSDB18 accompaniment.
None of them can be downloaded on the build machines, so these loaders are tested on tiny
fixture trees; a user who has the corpora points them at the official layouts:

* AISHELL-1: ``ROOT/data_aishell/wav/{train,dev,test}/SPEAKER/BAC009SxxxxWxxxx.wav`` and
  ``ROOT/data_aishell/transcript/aishell_transcript_v0.8.txt`` (ROOT may also be
  ``data_aishell`` itself). The official tarball holds one ``SPEAKER.tar.gz`` per speaker
  in ``wav/``: extract them first. Text = the transcript's words with the spaces removed
  (CER is per character). Wavs without a transcript line are skipped (logged), as in the
  Kaldi/ESPnet recipes. Voice = speaker id (``S0002``).
* OpenSinger: ``ROOT/{ManRaw,WomanRaw}/<Singer>_<Song>/<Singer>_<Song>_<n>.wav`` with
  ``<same stem>.txt`` holding the lyric line. Voice = ``man_<Singer>`` / ``woman_<Singer>``.
* MUSDB18-HQ: ``ROOT/{train,test}/<Track>/{mixture,drums,bass,other,vocals}.wav``;
  MUSDB18: ``ROOT/{train,test}/<Track>.stem.mp4`` (streams 0 mixture, 1 drums, 2 bass,
  3 other, 4 vocals, decoded with ffmpeg). Music = drums + bass + other: the vocals stem
  is never used (singing comes from OpenSinger).

Splits (``train``/``valid``/``test``):

* AISHELL-1: train / dev / test (``dev`` is accepted as an alias of ``valid``).
* OpenSinger has none: singers are held out by a stable hash of the voice name
  (:func:`opensinger_split_of`: 10 % test, 5 % valid), so test singers are unseen.
* MUSDB18: train -> train and valid, test -> test. Valid is the official sigsep
  validation list (:data:`MUSDB_VALID_TRACKS`, 14 tracks of the train subset); in a tree
  holding none of those tracks it falls back to a stable hash of the track name (10 %).

Lazy loading: the real corpora are far too large to decode up front, so the loaders
return lightweight records (:class:`VocalRef`, :class:`MusicRef`: path, text, voice,
duration from the file header) whose ``load()`` decodes one source into the
:class:`~jrsv_stream.data.compose.VocalSource` / ``MusicSource`` that ``render_item``
takes. :class:`LazyPool` wraps a list of records as the ``Callable[[int], source]`` pool
``render_item`` expects, with a small LRU cache, so building keeps about one item's
sources decoded at a time. Real corpora have no word timings: ``VocalSource.words`` is
``[]`` and the manifest's ``speech_words`` / ``singing_words`` are absent (null).

The records and loaders live in :mod:`jrsv_stream.data.corpus_readers`, real read speech
over synthetic music in :mod:`jrsv_stream.data.librivox`; this module builds DTSSV
manifests from them and re-exports their public names.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Generic, Sequence, TypeVar

import numpy as np

from jrsv_stream.data.compose import MusicSource, VocalSource, plan_items, render_item, write_item
from jrsv_stream.data.corpus_readers import (AISHELL_SPLIT_DIRS, AISHELL_TRANSCRIPT, MUSDB_HASH_VALID_PERCENT,
                                            MUSDB_MUSIC_STEMS, MUSDB_STREAMS, MUSDB_VALID_TRACKS, OPENSINGER_GENDERS,
                                            OPENSINGER_HOLDOUT_PERCENT, SPLITS, CorpusError, MusicRef, VocalRef,
                                            _check_split, load_aishell, load_musdb, load_opensinger, musdb_valid_tracks,
                                            opensinger_split_of, read_aishell_transcript)
from jrsv_stream.data.librivox import POCKETSPHINX_LIBRIVOX, build_real_speech_over_music, read_librivox_testdata
from jrsv_stream.data.manifest import ManifestItem, write_manifest

__all__ = ["AISHELL_SPLIT_DIRS", "AISHELL_TRANSCRIPT", "MUSDB_HASH_VALID_PERCENT", "MUSDB_MUSIC_STEMS", "MUSDB_STREAMS",
           "MUSDB_VALID_TRACKS", "MUSIC_MARGIN_S", "OPENSINGER_GENDERS", "OPENSINGER_HOLDOUT_PERCENT",
           "POCKETSPHINX_LIBRIVOX", "SPLITS", "CorpusError", "LazyPool", "MusicRef", "VocalRef", "build_dtssv",
           "build_real_speech_over_music", "load_aishell", "load_musdb", "load_opensinger", "musdb_valid_tracks",
           "opensinger_split_of", "read_aishell_transcript", "read_librivox_testdata"]

log = logging.getLogger(__name__)

# Music durations are under-reported to the planner by this much, so that offset + item
# length (both rounded to 0.1 ms in the plan) always fits inside the decoded track.
MUSIC_MARGIN_S = 0.05

_SOURCE_KEYS = ("speech_sources", "singing_sources", "music_source")


R = TypeVar("R", VocalRef, MusicRef)


class LazyPool(Generic[R]):
    """``render_item`` pool over records: ``pool(k)`` decodes ``refs[k]`` (LRU-cached).

    Args:
        refs: records from a loader.
        cache_size: decoded sources kept (an item uses at most 6 per vocal track and 1
            music track, so the defaults of :func:`build_dtssv` hold about one item).
    """

    def __init__(self, refs: Sequence[R], cache_size: int = 8):
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.refs, self.cache_size = list(refs), cache_size
        self._cache: OrderedDict[int, VocalSource | MusicSource] = OrderedDict()

    def __len__(self) -> int:
        return len(self.refs)

    def durations(self) -> list[float]:
        return [r.duration_s for r in self.refs]

    def __call__(self, k: int) -> VocalSource | MusicSource:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        src = self.refs[k].load()
        self._cache[k] = src
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return src


# --- DTSSV builder -----------------------------------------------------------------------------
def _item_record(plan, speech: Sequence[VocalRef], singing: Sequence[VocalRef], music: Sequence[MusicRef],
                 ext: str) -> dict:
    """What an item is made of (plan + source ids, as JSON): a finished item is reused only if equal."""
    record = {
        "plan": plan.to_json(),
        "ext": ext,
        "speech_sources": [speech[p.source].id for p in plan.speech],
        "singing_sources": [singing[p.source].id for p in plan.singing],
        "music_source": music[plan.music].id,
    }
    return json.loads(json.dumps(record))  # tuples -> lists, as read back from item.json


def build_dtssv(
    aishell_root,
    opensinger_root,
    musdb_root,
    out_dir,
    split: str,
    n_items: int,
    seed: int = 0,
    ext: str = "flac",
    *,
    scenario_weights: dict[str, float] | None = None,
    min_s: float = 4.0,
    max_s: float = 15.0,
    snr_range_db: tuple[float, float] = (-5.0, 5.0),
) -> Path:
    """Build a DTSSV-style split from AISHELL-1 + OpenSinger + MUSDB18.

    Plans ``n_items`` items with :func:`~jrsv_stream.data.compose.plan_items` over the
    three pools of ``split`` (durations from the file headers), renders each with
    ``render_item`` (sources decoded lazily, about one item's worth cached) and writes it
    with ``write_item`` to ``out_dir/mixtures/<split>/<id>/``; then writes
    ``out_dir/<split>.jsonl``. Items carry ``speech_sources`` / ``singing_sources`` /
    ``music_source`` (corpus ids) besides ``write_item``'s keys; word timings are absent.
    Deterministic for ``seed`` (and split). An interrupted build resumes: an item whose
    ``item.json`` records the same plan and sources is not rendered again.

    Returns:
        The manifest path.

    Raises:
        CorpusError: a corpus tree is missing or malformed.
        ValueError: the pools cannot fill an item (e.g. no music track >= ``max_s``).
    """
    split = _check_split(split, "DTSSV")
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    out_dir = Path(out_dir)
    speech = load_aishell(aishell_root, split)
    singing = load_opensinger(opensinger_root, split)
    music = load_musdb(musdb_root, split)
    log.info("DTSSV %s: %d AISHELL-1 utterances, %d OpenSinger lines, %d MUSDB18 tracks",
             split, len(speech), len(singing), len(music))
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    plans = plan_items(
        rng, n_items, split,
        [r.duration_s for r in speech], [r.duration_s for r in singing],
        [max(0.0, m.duration_s - MUSIC_MARGIN_S) for m in music],
        id_prefix=f"dtssv-{split}-", scenario_weights=scenario_weights, min_s=min_s, max_s=max_s,
        snr_range_db=snr_range_db,
    )
    pools = (LazyPool(speech, 8), LazyPool(singing, 8), LazyPool(music, 1))
    items = []
    for i, plan in enumerate(plans):
        rel = f"mixtures/{split}/{plan.id}"
        record = _item_record(plan, speech, singing, music, ext)
        done = out_dir / rel / "item.json"
        if done.is_file():
            try:
                d = json.loads(done.read_text(encoding="utf-8"))
                if d.get("record") == record:
                    items.append(ManifestItem.from_json(d["item"], f"{done}: "))
                    continue
            except (ValueError, KeyError, TypeError):
                pass  # stale or broken: render again
        item = write_item(render_item(plan, *pools), out_dir, rel, ext)
        item = dataclasses.replace(item, extra={**item.extra, **{k: v for k, v in record.items() if k in _SOURCE_KEYS}})
        tmp = done.with_name("item.json.part")
        tmp.write_text(json.dumps({"record": record, "item": item.to_json()}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, done)
        items.append(item)
        if (i + 1) % 100 == 0:
            log.info("DTSSV %s: %d/%d items", split, i + 1, len(plans))
    manifest = out_dir / f"{split}.jsonl"
    write_manifest(manifest, items)
    return manifest
