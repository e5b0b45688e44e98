"""Real-corpus loaders (AISHELL-1, OpenSinger, MUSDB18/-HQ) and the DTSSV builder, on tiny
fixture trees in the official layouts, built here from generated tones and noise."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.compose import VocalSource, MusicSource, plan_items, render_item
from jrsv_stream.data.manifest import read_manifest
from jrsv_stream.data.mixing import region_snr_db
from tests.prereq import needs, require_tools
from jrsv_stream.data.real_corpora import (
    MUSDB_VALID_TRACKS,
    CorpusError,
    LazyPool,
    build_dtssv,
    load_aishell,
    load_musdb,
    load_opensinger,
    opensinger_split_of,
)

HANZI = "而对楼市成交抑制作用最大的限购我们今天唱歌后来小幸运月亮代表心"
VOCAL_TONE_HZ = 3000.0  # the MUSDB vocals stem: must never reach the music
BASS_HZ = 110.0
MUSIC_S = 6.5
VALID_TRACK = "Actions - One Minute Smile"
assert VALID_TRACK in MUSDB_VALID_TRACKS


def _voice(rng, seconds: float, rate: int, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 2.1 * f0 * t)
    x = x + 0.02 * rng.standard_normal(t.size)
    return (x * np.hanning(t.size) ** 0.2).astype(np.float32)


def _text(rng, n: int) -> list[str]:
    return [HANZI[i] for i in rng.integers(0, len(HANZI), n)]


def _amp_at(x: np.ndarray, hz: float, rate: int = SAMPLE_RATE) -> float:
    """Amplitude of the ``hz`` sinusoid in ``x`` (single-bin DFT)."""
    t = np.arange(len(x)) / rate
    return float(2 * np.abs(np.sum(x * np.exp(-2j * np.pi * hz * t))) / len(x))


def _make_aishell(root: Path, rng) -> dict[str, str]:
    """Speakers: train S0002 S0003, dev S0724, test S0764 S0765. Returns id -> transcript line."""
    base = root / "data_aishell"
    lines = {}
    for split, spks in {"train": ["S0002", "S0003"], "dev": ["S0724"], "test": ["S0764", "S0765"]}.items():
        for spk in spks:
            for w in range(3):
                uid = f"BAC009{spk}W{121 + w:04d}"
                path = base / "wav" / split / spk / f"{uid}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, _voice(rng, rng.uniform(1.0, 1.8), 16000, rng.uniform(120, 250)), 16000, subtype="PCM_16")
                lines[uid] = " ".join(_text(rng, int(rng.integers(4, 9))))
    # a wav with no transcript line (skipped) and a transcript line with no wav (ignored)
    sf.write(base / "wav" / "train" / "S0002" / "BAC009S0002W0999.wav", _voice(rng, 1.0, 16000, 200), 16000)
    (base / "transcript").mkdir(parents=True)
    body = [f"{k} {v}" for k, v in lines.items()] + ["BAC009S0900W0001 没 有 音 频"]
    (base / "transcript" / "aishell_transcript_v0.8.txt").write_text("\n".join(body) + "\n", encoding="utf-8")
    return lines


def _singers_by_split(gender: str, want: dict[str, int]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in want}
    for i in range(10000):
        s = opensinger_split_of(f"{gender}_{i}")
        if len(out[s]) < want[s]:
            out[s].append(str(i))
        if all(len(out[s]) == want[s] for s in want):
            return out
    raise AssertionError("hash never hit every split")


def _make_opensinger(root: Path, rng) -> dict[str, dict[str, str]]:
    """24 kHz mono lines; returns split -> {line id: lyric}."""
    texts: dict[str, dict[str, str]] = {"train": {}, "valid": {}, "test": {}}
    plan = {"ManRaw": _singers_by_split("man", {"train": 2, "valid": 1, "test": 1}),
            "WomanRaw": _singers_by_split("woman", {"train": 2, "valid": 0, "test": 1})}
    for g, by_split in plan.items():
        for split, singers in by_split.items():
            for sid in singers:
                song = f"{sid}_小幸运"
                for n in range(2):
                    stem = root / g / song / f"{song}_{n}"
                    stem.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(stem.with_suffix(".wav"), _voice(rng, rng.uniform(1.0, 1.6), 24000, rng.uniform(200, 400)),
                             24000, subtype="PCM_16")
                    lyric = "".join(_text(rng, int(rng.integers(4, 8))))
                    stem.with_suffix(".txt").write_text(lyric + "\n", encoding="utf-8")
                    texts[split][f"{g}/{song}_{n}"] = lyric
    return texts


def _musdb_stems(rng, seconds: float = MUSIC_S, rate: int = 44100) -> dict[str, np.ndarray]:
    t = np.arange(int(seconds * rate)) / rate
    noise = lambda a: a * rng.standard_normal((t.size, 2))  # noqa: E731
    drums = noise(0.05) * (1 + (np.sin(2 * np.pi * 2 * t) > 0))[:, None]
    bass = 0.2 * np.sin(2 * np.pi * BASS_HZ * t)[:, None] * np.ones((1, 2)) + noise(0.01)
    other = 0.1 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], 1) + noise(0.01)
    vocals = 0.6 * np.sin(2 * np.pi * VOCAL_TONE_HZ * t)[:, None] * np.ones((1, 2))
    stems = {"drums": drums, "bass": bass, "other": other, "vocals": vocals}
    stems = {k: v.astype(np.float32) for k, v in stems.items()}
    stems["mixture"] = np.clip(sum(stems.values()), -1, 1).astype(np.float32)
    return stems


def _make_musdb(root: Path, rng) -> None:
    for subset, names in {"train": [VALID_TRACK, "Alpha - First", "Beta - Second"], "test": ["Gamma - Third"]}.items():
        for name in names:
            for stem, x in _musdb_stems(rng).items():
                (root / subset / name).mkdir(parents=True, exist_ok=True)
                sf.write(root / subset / name / f"{stem}.wav", x, 44100, subtype="PCM_16")
    require_tools("ffmpeg", "ffprobe")
    _make_stem_mp4(root / "test" / "Delta - Fourth.stem.mp4", _musdb_stems(rng), root.parent / "mp4src")


def _make_stem_mp4(path: Path, stems: dict[str, np.ndarray], tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    order = ["mixture", "drums", "bass", "other", "vocals"]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for k in order:
        x = stems[k] if k != "bass" else stems[k][:, 0]  # one mono input among the stereo ones
        sf.write(tmp / f"{k}.wav", x, 44100, subtype="PCM_16")
        cmd += ["-i", str(tmp / f"{k}.wav")]
    for i in range(len(order)):
        cmd += ["-map", f"{i}:a"]
    cmd += ["-c:a", "aac", "-b:a", "128k", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    rng = np.random.default_rng(1234)
    aishell_lines = _make_aishell(root / "aishell", rng)
    singer_texts = _make_opensinger(root / "opensinger", rng)
    _make_musdb(root / "musdb", rng)
    return {"root": root, "aishell": root / "aishell", "opensinger": root / "opensinger", "musdb": root / "musdb",
            "aishell_lines": aishell_lines, "singer_texts": singer_texts}


# --- AISHELL-1 ---------------------------------------------------------------------------------
def test_aishell_splits_texts_and_root_forms(corpora):
    lines = corpora["aishell_lines"]
    train = load_aishell(corpora["aishell"], "train")
    valid = load_aishell(corpora["aishell"], "valid")
    test = load_aishell(corpora["aishell"] / "data_aishell", "test")  # ROOT = data_aishell itself
    assert {r.voice for r in train} == {"S0002", "S0003"}
    assert {r.voice for r in valid} == {"S0724"}
    assert {r.voice for r in test} == {"S0764", "S0765"}
    assert "BAC009S0002W0999" not in {r.id for r in train}  # no transcript line: skipped
    assert len(train) == 6 and len(valid) == 3 and len(test) == 6
    for r in train + valid + test:
        assert r.text == lines[r.id].replace(" ", "")
        assert r.duration_s == pytest.approx(sf.info(str(r.path)).duration)
    known = next(r for r in train if r.id == "BAC009S0002W0122")
    assert known.text == lines["BAC009S0002W0122"].replace(" ", "") and " " not in known.text
    src = known.load()
    assert isinstance(src, VocalSource) and src.words == [] and src.audio.dtype == np.float32
    assert len(src.audio) == sf.info(str(known.path)).frames  # already 16 kHz
    assert [r.id for r in load_aishell(corpora["aishell"], "dev")] == [r.id for r in valid]


def test_aishell_errors(tmp_path, corpora):
    with pytest.raises(CorpusError, match="not found.*nope"):
        load_aishell(tmp_path / "nope", "train")
    # tree without transcript
    no_tr = tmp_path / "no_transcript" / "data_aishell"
    shutil.copytree(corpora["aishell"] / "data_aishell" / "wav", no_tr / "wav")
    with pytest.raises(CorpusError, match=r"transcript.*aishell_transcript_v0\.8\.txt"):
        load_aishell(no_tr.parent, "train")
    # official tarball form, not extracted
    tgz = tmp_path / "tgz" / "data_aishell"
    (tgz / "wav").mkdir(parents=True)
    (tgz / "wav" / "S0002.tar.gz").write_bytes(b"\x1f\x8b")
    shutil.copytree(corpora["aishell"] / "data_aishell" / "transcript", tgz / "transcript")
    with pytest.raises(CorpusError, match="extract"):
        load_aishell(tgz.parent, "train")
    with pytest.raises(CorpusError, match="split"):
        load_aishell(corpora["aishell"], "eval")
    with pytest.raises(CorpusError, match="data_aishell"):
        load_aishell(tmp_path, "train")  # exists, wrong layout


# --- OpenSinger --------------------------------------------------------------------------------
def test_opensinger_splits_hold_out_singers(corpora):
    by = {s: load_opensinger(corpora["opensinger"], s) for s in ("train", "valid", "test")}
    voices = {s: {r.voice for r in refs} for s, refs in by.items()}
    assert voices["train"] and voices["valid"] and voices["test"]
    assert not voices["test"] & voices["train"] and not voices["valid"] & voices["train"]
    assert not voices["test"] & voices["valid"]
    assert any(v.startswith("man_") for v in voices["test"]) and any(v.startswith("woman_") for v in voices["test"])
    for s, refs in by.items():
        assert {r.id: r.text for r in refs} == corpora["singer_texts"][s]
        assert all(opensinger_split_of(r.voice) == s for r in refs)
    r = by["test"][0]
    src = r.load()  # 24 kHz file -> 16 kHz
    assert abs(len(src.audio) - r.duration_s * SAMPLE_RATE) <= 1 and src.words == []


def test_opensinger_errors(tmp_path):
    with pytest.raises(CorpusError, match="not found.*nope"):
        load_opensinger(tmp_path / "nope", "train")
    with pytest.raises(CorpusError, match="ManRaw"):
        load_opensinger(tmp_path, "train")
    sid = _singers_by_split("man", {"train": 1, "valid": 0, "test": 0})["train"][0]
    song = tmp_path / "ManRaw" / f"{sid}_后来"
    song.mkdir(parents=True)
    sf.write(song / f"{sid}_后来_0.wav", np.zeros(2400, np.float32) + 0.1, 24000)
    with pytest.raises(CorpusError, match=rf"lyric file missing.*{sid}_后来_0\.txt"):
        load_opensinger(tmp_path, "train")


# --- MUSDB18 -----------------------------------------------------------------------------------
def test_musdb_hq_splits_and_music_excludes_vocals(corpora):
    train = load_musdb(corpora["musdb"], "train")
    valid = load_musdb(corpora["musdb"], "valid")
    test = load_musdb(corpora["musdb"], "test")
    assert [m.meta["track"] for m in valid] == [VALID_TRACK]
    assert [m.meta["track"] for m in train] == ["Alpha - First", "Beta - Second"]
    assert "Gamma - Third" in [m.meta["track"] for m in test]
    m = train[0]
    assert m.duration_s == pytest.approx(MUSIC_S) and m.meta["corpus"] == "musdb18hq"
    src = m.load()
    assert isinstance(src, MusicSource) and len(src.audio) == round(m.duration_s * SAMPLE_RATE)
    expected = sum(load_audio(m.path / f"{s}.wav") for s in ("drums", "bass", "other"))
    assert np.max(np.abs(src.audio - expected[: len(src.audio)])) < 1e-4
    vocals = load_audio(m.path / "vocals.wav")
    assert _amp_at(vocals, VOCAL_TONE_HZ) > 0.5  # the tone is there in the stem...
    assert _amp_at(src.audio, VOCAL_TONE_HZ) < 0.01  # ...and not in the music
    assert _amp_at(src.audio, BASS_HZ) == pytest.approx(0.2, rel=0.1)


@needs("ffmpeg", "ffprobe")
def test_musdb_stem_mp4(corpora):
    m = next(m for m in load_musdb(corpora["musdb"], "test") if m.meta["track"] == "Delta - Fourth")
    assert m.meta["corpus"] == "musdb18" and m.path.name.endswith(".stem.mp4")
    assert m.duration_s == pytest.approx(MUSIC_S, abs=0.05)
    src = m.load()
    assert len(src.audio) == round(m.duration_s * SAMPLE_RATE)
    # stream 4 (vocals) and stream 0 (mixture, which holds the vocals) are never used
    assert _amp_at(src.audio, VOCAL_TONE_HZ) < 0.01
    assert _amp_at(src.audio, BASS_HZ) == pytest.approx(0.2, rel=0.1)  # mono bass stream
    assert _amp_at(src.audio, 440.0) == pytest.approx(0.05, rel=0.1)  # stereo: channel mean


def test_musdb_errors(tmp_path, corpora):
    with pytest.raises(CorpusError, match="not found.*nope"):
        load_musdb(tmp_path / "nope", "train")
    with pytest.raises(CorpusError, match="subset folder not found"):
        load_musdb(tmp_path, "train")  # empty root
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(CorpusError, match="no track in"):
        load_musdb(tmp_path, "test")
    shutil.copytree(corpora["musdb"] / "train" / "Alpha - First", tmp_path / "train" / "Alpha - First")
    (tmp_path / "train" / "Alpha - First" / "bass.wav").unlink()
    with pytest.raises(CorpusError, match="bass.wav"):
        load_musdb(tmp_path, "train")


# --- pools and the compose change ----------------------------------------------------------------
def test_lazy_pool_caches_at_most_n(corpora):
    refs = load_aishell(corpora["aishell"], "train")
    pool = LazyPool(refs, cache_size=2)
    a = pool(0)
    assert pool(0) is a and len(pool) == len(refs) and pool.durations() == [r.duration_s for r in refs]
    pool(1), pool(2)
    assert len(pool._cache) == 2 and pool(0) is not a


def test_render_item_words_none_only_without_timings():
    rng = np.random.default_rng(0)
    tone = _voice(rng, 1.0, SAMPLE_RATE, 200.0)
    music = MusicSource("m", 0.1 * rng.standard_normal(SAMPLE_RATE * 6).astype(np.float32), {})
    timed = VocalSource("t", tone, "a b", [("a", 0.1, 0.4), ("b", 0.5, 0.9)], "v")
    untimed = VocalSource("u", tone, "ab", [], "v")
    plans = plan_items(np.random.default_rng(1), 3, "test", [1.0], [1.0], [6.0], "x-", min_s=3.0, max_s=5.0)
    for p in plans:
        with_words = render_item(p, lambda k: timed, lambda k: timed, lambda k: music)
        without = render_item(p, lambda k: untimed, lambda k: untimed, lambda k: music)
        for v in ("speech", "singing"):
            if getattr(p, v):
                assert with_words.words[v] and without.words[v] is None
            else:
                assert with_words.words[v] is None and without.words[v] is None


# --- DTSSV -----------------------------------------------------------------------------------------
def _build(corpora, out: Path, seed: int) -> Path:
    return build_dtssv(corpora["aishell"], corpora["opensinger"], corpora["musdb"], out, "test", n_items=5,
                       seed=seed, min_s=3.0, max_s=5.0)


def test_build_dtssv(corpora, tmp_path):
    path = _build(corpora, tmp_path / "a", seed=7)
    assert path == tmp_path / "a" / "test.jsonl"
    items = read_manifest(path)
    assert len(items) == 5 and {it.extra["scenario"] for it in items} <= {"speech", "singing", "both"}
    aishell_texts = {r.text for r in load_aishell(corpora["aishell"], "test")}
    singer_texts = set(corpora["singer_texts"]["test"].values())
    test_singers = {r.voice for r in load_opensinger(corpora["opensinger"], "test")}
    musics = set()
    for it in items:
        root = path.parent
        mix, sr = sf.read(str(it.path("mixture", root)), dtype="float32")
        assert sr == SAMPLE_RATE == it.sample_rate
        stems = {k: sf.read(str(it.path(k, root)), dtype="float32")[0] for k in ("speech", "singing", "music")
                 if getattr(it, k) is not None}
        assert np.max(np.abs(sum(stems.values()) - mix)) < 1e-4
        assert it.speech_words is None and it.singing_words is None
        for v in ("speech", "singing"):
            if v in stems:
                assert abs(region_snr_db(stems[v], stems["music"]) - it.extra[f"{v}_snr_db"]) < 0.1
            else:
                assert getattr(it, f"{v}_text") is None
        if it.speech_text is not None:
            assert set(it.speech_text.split(" ")) <= aishell_texts
            assert len(it.extra["speech_sources"]) == len(it.speech_text.split(" "))
        if it.singing_text is not None:
            assert set(it.singing_text.split(" ")) <= singer_texts
            assert set(it.extra["singing_voices"]) <= test_singers
        assert it.extra["music_source"].startswith("musdb/test/")
        musics.add(it.extra["music_meta"]["corpus"])
    assert musics == {"musdb18hq", "musdb18"}
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all("speech_words" not in d for d in raw)


def test_build_dtssv_deterministic_and_resumes(corpora, tmp_path):
    a = _build(corpora, tmp_path / "a", seed=3).read_text(encoding="utf-8")
    b_path = _build(corpora, tmp_path / "b", seed=3)
    assert b_path.read_text(encoding="utf-8") == a
    first = read_manifest(b_path)[0]
    mix_a = sf.read(str(first.path("mixture", tmp_path / "a")))[0]
    assert np.array_equal(mix_a, sf.read(str(first.path("mixture", b_path.parent)))[0])
    # rebuilding over a finished build reuses its items and gives the same manifest
    stamp = (b_path.parent / first.mixture).stat().st_mtime_ns
    assert _build(corpora, tmp_path / "b", seed=3).read_text(encoding="utf-8") == a
    assert (b_path.parent / first.mixture).stat().st_mtime_ns == stamp
    # another seed: another corpus, written over the old one
    assert _build(corpora, tmp_path / "b", seed=4).read_text(encoding="utf-8") != a


def test_build_dtssv_missing_root(corpora, tmp_path):
    with pytest.raises(CorpusError, match="MUSDB18 root not found"):
        build_dtssv(corpora["aishell"], corpora["opensinger"], tmp_path / "nope", tmp_path / "out", "test", 2)


def test_real_speech_over_music_items_are_exact_mixes_at_the_asked_snr(tmp_path):
    from jrsv_stream.cli import main as cli_main
    from jrsv_stream.data.real_corpora import POCKETSPHINX_LIBRIVOX, read_librivox_testdata

    if not (POCKETSPHINX_LIBRIVOX / "transcription").is_file():
        pytest.fail("pocketsphinx-testdata is an install step of .ci/setup.sh")
    # a corpus with one test music piece (a chord with noise)
    corpus = tmp_path / "corpus"
    (corpus / "sources" / "music" / "test").mkdir(parents=True)
    t = np.arange(16000 * 3) / 16000
    piece = (0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    sf.write(corpus / "sources" / "music" / "test" / "m.flac", piece, 16000)
    (corpus / "sources" / "music.jsonl").write_text(json.dumps({"id": "m", "audio": "m.flac", "split": "test"}) + "\n")
    assert cli_main(["data", "librivox-music", "--corpus", str(corpus), "--out", str(tmp_path / "o"), "--snr", "-5", "5"]) == 0
    items = read_manifest(tmp_path / "o" / "test.jsonl")
    utts = read_librivox_testdata()
    assert len(items) == 2 * len(utts) and {i.speech_text for i in items} == {u[1] for u in utts}
    for it in items:
        mix, sp, mu = (sf.read(tmp_path / "o" / getattr(it, k), dtype="float32")[0] for k in ("mixture", "speech", "music"))
        assert np.abs(mix - sp - mu).max() < 1e-4
        want = -5.0 if it.id.endswith("-5") else 5.0
        assert region_snr_db(sp, mu) == pytest.approx(want, abs=0.05)
        assert it.singing is None and it.extra["scenario"] == "speech"
