"""Real read speech over synthetic music (issue 6's "real speech" report): the LibriVox
recordings that pocketsphinx ships as test data, mixed over the built corpus's test-split
music (``jrsv-stream data librivox-music``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.corpus_readers import CorpusError
from jrsv_stream.data.manifest import ManifestItem, write_manifest

POCKETSPHINX_LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def read_librivox_testdata(root: str | os.PathLike = POCKETSPHINX_LIBRIVOX) -> list[tuple[Path, str]]:
    """(wav path, lowercase transcript) of Debian ``pocketsphinx-testdata``'s LibriVox
    utterances (real read speech, Sense and Sensibility).

    Raises:
        CorpusError: the folder or its ``transcription`` file is missing or lists no wav.
    """
    root = Path(root)
    tr = root / "transcription"
    if not tr.is_file():
        raise CorpusError(f"{tr} not found (apt-get install pocketsphinx-testdata)")
    out = []
    for line in tr.read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((.*)\)", line.strip())
        if m and (root / f"{m.group(2)}.wav").is_file():
            out.append((root / f"{m.group(2)}.wav", " ".join(m.group(1).lower().split())))
    if not out:
        raise CorpusError(f"{tr} lists no utterance with a wav file beside it")
    return out


def build_real_speech_over_music(corpus_root, out_dir, snrs_db: Sequence[float] = (-5.0, 0.0, 5.0), seed: int = 0,
                                 librivox_root: str | os.PathLike = POCKETSPHINX_LIBRIVOX) -> Path:
    """Mix each LibriVox utterance with a test-split music piece of a built corpus at each
    region SNR in ``snrs_db`` (:func:`jrsv_stream.data.mixing.mix_stems`): speech-only items
    in the manifest format (``out_dir/test.jsonl``, stems beside the mixture), so
    ``jrsv-stream eval`` scores real read speech in the live path. Deterministic for
    ``seed``.

    Raises:
        CorpusError: missing LibriVox files or corpus music index.
    """
    from jrsv_stream.data.mixing import mix_stems, snr_bucket

    out_dir = Path(out_dir)
    index = Path(corpus_root) / "sources" / "music.jsonl"
    if not index.is_file():
        raise CorpusError(f"{index} not found: build the corpus first (jrsv-stream data synth)")
    music = [d for d in map(json.loads, index.read_text().splitlines()) if d["split"] == "test"]
    if not music:
        raise CorpusError(f"{index} has no test-split music")
    rng = np.random.default_rng(seed)
    items = []
    for k, (wav, text) in enumerate(read_librivox_testdata(librivox_root)):
        speech = load_audio(wav)
        for snr in snrs_db:
            m = music[int(rng.integers(len(music)))]
            piece = load_audio(Path(corpus_root) / "sources" / "music" / "test" / m["audio"])
            reps = int(np.ceil((len(speech) + SAMPLE_RATE) / len(piece)))
            bed = np.tile(piece, reps)[: len(speech) + SAMPLE_RATE]  # 0.5 s of music each side
            vocal = np.zeros_like(bed)
            vocal[SAMPLE_RATE // 2: SAMPLE_RATE // 2 + len(speech)] = speech
            mix = mix_stems({"speech": vocal}, bed, {"speech": float(snr)})
            item_id = f"librivox-{k:02d}-snr{int(snr):+d}"
            rel = Path("mixtures") / item_id
            (out_dir / rel).mkdir(parents=True, exist_ok=True)
            for name, x in (("mixture", mix.mixture), ("speech", mix.stems["speech"]), ("music", mix.stems["music"])):
                sf.write(out_dir / rel / f"{name}.flac", x, SAMPLE_RATE, subtype="PCM_16")
            items.append(ManifestItem(
                id=item_id, mixture=str(rel / "mixture.flac"), speech=str(rel / "speech.flac"), singing=None,
                music=str(rel / "music.flac"), speech_text=text, singing_text=None, sample_rate=SAMPLE_RATE,
                extra={"scenario": "speech", "speech_snr_db": round(mix.snr_db["speech"], 3),
                       "speech_snr_bucket": snr_bucket(mix.snr_db["speech"]), "singing_snr_db": None,
                       "singing_snr_bucket": None, "source": wav.name, "music_source": m["id"]}))
    path = out_dir / "test.jsonl"
    write_manifest(path, items)
    return path
