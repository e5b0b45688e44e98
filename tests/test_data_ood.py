"""The out-of-domain test set (jrsv_stream.data.ood): a tiny real build (real recordings of
pocketsphinx-testdata / alsa-utils, WORLD singing, fluidsynth with the TimGM6mb, csound
GM bank and OPL-3 FM soundfonts), checked for exact stems, planned SNRs, determinism, and the
soundfont argument of the music generator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jrsv_stream.data import music
from jrsv_stream.data.manifest import read_manifest
from jrsv_stream.data.mixing import PCM16, region_snr_db
from jrsv_stream.data.ood import SOUNDFONTS, build_ood, energy_word_spans
from jrsv_stream.data.real_corpora import CorpusError
from jrsv_stream.data.real_voices import POCKETSPHINX_DATA
from tests.prereq import needs

SOURCES = ["librivox", "cards", "alsa", "goforward", "tidigits"]  # small, quick to decode
FONT_FILES = tuple(sf_.paths[0] for sf_ in SOUNDFONTS)
needs_all = needs("fluidsynth", "ffmpeg", files=(music.SOUNDFONT, *FONT_FILES, POCKETSPHINX_DATA / "librivox"))


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "summary.json"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ood") / "a"
    summary = build_ood(out, seed=0, n_items=9, sources=SOURCES, stempeg=False)
    return out, summary


@needs_all
def test_items_stems_and_snrs(tiny):
    out, summary = tiny
    items = read_manifest(out / "test.jsonl")
    assert len(items) == 9 == summary["items"]
    assert [i.extra["scenario"] for i in items] == ["speech", "singing", "both"] * 3
    for it in items:
        ex = it.extra
        assert 6.0 <= ex["duration_s"] <= 20.0
        mix, sr = sf.read(str(out / it.mixture), dtype="float64")
        assert sr == 16000 and sf.info(str(out / it.mixture)).subtype == "PCM_16"
        stems = {k: sf.read(str(out / getattr(it, k)), dtype="float64")[0] for k in ("speech", "singing", "music")
                 if getattr(it, k) is not None}
        assert "music" in stems and (("speech" in stems) == (ex["scenario"] != "singing"))
        assert ("singing" in stems) == (ex["scenario"] != "speech")
        # the mixture is the exact sum of its stems (all on the 16-bit grid)
        assert np.max(np.abs(mix - sum(stems.values()))) <= 1.5 / PCM16
        for v in ("speech", "singing"):
            if v not in stems:
                assert ex[f"{v}_snr_db"] is None and ex[f"{v}_snr_bucket"] is None
                continue
            got = region_snr_db(stems[v], stems["music"])
            assert ex[f"{v}_snr_bucket"] in (-5, 0, 5)
            assert abs(got - ex[f"{v}_snr_bucket"]) < 0.5, (it.id, v, got)
            assert abs(got - ex[f"{v}_snr_db"]) < 0.01
            assert getattr(it, f"{v}_text") and getattr(it, f"{v}_words") is None
            assert all(s.split("-")[0] in SOURCES for s in ex[f"{v}_sources"])
        m = ex["music_meta"]
        assert m["soundfont"] in {s.name for s in SOUNDFONTS} and m["split"] == "test" and m["kind"] != "loop"
    # spoken and sung recordings are disjoint
    spoken = {s for it in items for s in it.extra["speech_sources"]}
    sung = {s for it in items for s in it.extra["singing_sources"]}
    assert spoken and sung and not spoken & sung
    # every soundfont used (one music piece of three items each); SNRs balanced per scenario
    assert [f["items"] for f in summary["soundfonts"].values()] == [3, 3, 3]
    for sc, v in (("speech", "speech"), ("singing", "singing"), ("both", "speech"), ("both", "singing")):
        assert sorted(it.extra[f"{v}_snr_bucket"] for it in items if it.extra["scenario"] == sc) == [-5, 0, 5]
    assert json.loads((out / "summary.json").read_text())["format"] == "jrsv-ood-1"


@needs_all
def test_deterministic_for_a_seed(tiny, tmp_path):
    out, _ = tiny
    same = tmp_path / "same"
    build_ood(same, seed=0, n_items=9, sources=SOURCES, stempeg=False)
    assert (same / "test.jsonl").read_bytes() == (out / "test.jsonl").read_bytes()
    assert _tree_digest(same) == _tree_digest(out)
    other = tmp_path / "other"
    build_ood(other, seed=1, n_items=3, sources=SOURCES, stempeg=False)
    a, b = read_manifest(out / "test.jsonl")[:3], read_manifest(other / "test.jsonl")
    assert [i.extra["music_meta"]["seed"] for i in a] != [i.extra["music_meta"]["seed"] for i in b]
    assert sf.read(str(other / b[0].mixture))[0].tobytes() != sf.read(str(out / a[0].mixture))[0].tobytes()


@needs("fluidsynth", files=(music.SOUNDFONT, *FONT_FILES))
def test_soundfont_argument():
    ref = music.synth_music(3, 4.0, split="test")
    # the default is the corpus's FluidR3, byte for byte
    explicit = music.synth_music(3, 4.0, split="test", soundfont=music.SOUNDFONT)
    assert ref.audio.tobytes() == explicit.audio.tobytes() and ref.meta == explicit.meta
    for font in FONT_FILES:
        other = music.synth_music(3, 4.0, split="test", soundfont=font)
        assert other.meta == ref.meta  # same composition, other instrument recordings
        assert other.audio.shape == ref.audio.shape
        corr = float(np.corrcoef(other.audio, ref.audio)[0, 1])
        assert corr < 0.9, (font, corr)
    with pytest.raises(music.MusicError, match="nope.sf2"):
        music.synth_music(3, 2.0, split="test", soundfont="/nonexistent/nope.sf2")


def test_missing_soundfont_names_the_package(tmp_path):
    with pytest.raises(CorpusError, match="apt-get install timgm6mb-soundfont"):
        build_ood(tmp_path / "x", n_items=3, sources=SOURCES, soundfonts={"timgm6mb": tmp_path / "TimGM6mb.sf2"})
    assert not (tmp_path / "x").exists()


def test_energy_word_spans_cut_at_pauses():
    sr = 16000
    rng = np.random.default_rng(0)
    parts = []
    for sec in (0.3, 0.6, 0.3):  # three "words" separated by 0.15 s pauses
        parts += [0.3 * rng.standard_normal(int(sec * sr)), 1e-4 * rng.standard_normal(int(0.15 * sr))]
    x = np.concatenate([np.zeros(int(0.2 * sr)), *parts])
    spans = energy_word_spans(x, ["one", "seventeen", "two"], sr)
    assert [w for w, _, _ in spans] == ["one", "seventeen", "two"]
    assert spans[0][2] == spans[1][1] and spans[1][2] == spans[2][1]  # contiguous
    assert abs(spans[0][1] - 0.2) < 0.02
    assert 0.5 <= spans[0][2] <= 0.65 and 1.25 <= spans[1][2] <= 1.4  # cuts inside the pauses


@needs("ffmpeg")
def test_stempeg_excerpt_items():
    from jrsv_stream.data.ood import _stempeg_items, _stempeg_path

    path = _stempeg_path()
    assert path is not None, "stempeg (the [data] extra) ships the MUSDB18 excerpt: pip install -e .[data]"
    items = _stempeg_items(path)
    assert [r.plan.singing_snr_db for r in items] == [-5.0, 0.0, 5.0]
    for r in items:
        assert abs(r.mix.snr_db["singing"] - r.plan.singing_snr_db) < 0.01
        assert np.array_equal(r.mix.mixture, r.mix.stems["singing"] + r.mix.stems["music"])
        assert r.texts["singing"] is None and 6.0 < r.plan.duration_s < 6.2


@needs_all
def test_segments_locate_the_vocals(tiny):
    out, _ = tiny
    for it in read_manifest(out / "test.jsonl"):
        for v in ("speech", "singing"):
            segs = it.extra[f"{v}_segments"]
            assert [s[0] for s in segs] == it.extra[f"{v}_sources"]
            if not segs:
                continue
            x = sf.read(str(out / getattr(it, v)), dtype="float64")[0]
            mask = np.zeros(len(x), bool)
            for _, a, b in segs:
                assert 0 <= a < b <= it.extra["duration_s"]
                mask[max(0, int(round(a * 16000)) - 2): int(round(b * 16000)) + 2] = True  # times rounded to 0.1 ms
            assert not np.any(x[~mask]) and np.all(np.abs(x[mask]).max() > 0)
