"""The real-voice evaluation set (jrsv_stream.data.real_voices): transcript parsing and
normalization, source discovery, and the builder on fixture source trees and a fixture
corpus (generated tones and noise), plus the installed pocketsphinx-testdata."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.manifest import read_manifest
from jrsv_stream.data.mixing import region_snr_db
from jrsv_stream.data.real_corpora import CorpusError
from jrsv_stream.data.real_voices import (
    ASTERISK_SKIP,
    ASTERISK_TRANSCRIPT,
    POCKETSPHINX_DATA,
    build_real_voices,
    condition_name,
    decode_voice,
    normalize_transcript,
    number_words,
    read_asterisk_transcripts,
    real_voice_items,
    tidigits_text,
)

HAVE_FFMPEG = shutil.which("ffmpeg") is not None


def _voice(rng, seconds: float, f0: float) -> np.ndarray:
    """A voice-like test signal: a buzzy tone with syllable-rate amplitude modulation."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.2 * x / np.max(np.abs(x)) + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def _pcm16_bytes(x: np.ndarray) -> bytes:
    return (np.round(np.clip(x, -1, 1 - 1 / 32768) * 32768).astype("<i2")).tobytes()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Fixture trees in the installed layouts: librivox/, cards/, tidigits/, asterisk/."""
    root = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(0)
    lv = root / "librivox"
    lv.mkdir()
    (lv / "transcription").write_text("<s> he was not an ill disposed young man </s> (utt-a)\n"
                                      "<s> he might even have been made amiable himself </s> (utt-b)\n"
                                      "<s> no wav for this one </s> (utt-missing)\n")
    sf.write(lv / "utt-a.wav", _voice(rng, 1.6, 140), SAMPLE_RATE, subtype="PCM_16")
    sf.write(lv / "utt-b.wav", _voice(rng, 1.2, 210), SAMPLE_RATE, subtype="PCM_16")
    cards = root / "cards"
    cards.mkdir()
    (cards / "cards.transcription").write_text("<s> ten of clubs  </s> (001)\n<s> five  </s> (002)\n")
    sf.write(cards / "001.wav", _voice(rng, 0.9, 120), SAMPLE_RATE, subtype="PCM_16")
    sf.write(cards / "002.wav", _voice(rng, 0.5, 120), SAMPLE_RATE, subtype="PCM_16")  # one word: left out
    td = root / "tidigits"
    td.mkdir()
    (td / "dhd.2934z.raw").write_bytes(_pcm16_bytes(_voice(rng, 1.0, 100)))
    ast = root / "asterisk"
    (ast / "digits").mkdir(parents=True)
    (ast / "silence").mkdir()
    (ast / "core-sounds-en.txt").write_text(
        "; Core Asterisk Sounds in English\n\n"
        "vm-next: Press 6 to play the next message.\n"
        "beep: [this is a simple beep tone]\n"
        "digits/5: five\n"
        "silence/1: (1 second of silence)\n"
        "vm-intro: Please leave your message after the tone. (simple tone sound plays)\n"
        "not-on-disk: Nothing here.\n")
    sf.write(ast / "vm-next.wav", _voice(rng, 1.0, 180)[::2], 8000, subtype="PCM_16")  # 8 kHz like the -wav package
    sf.write(ast / "beep.wav", _voice(rng, 0.3, 1000), 8000, subtype="PCM_16")
    sf.write(ast / "digits" / "5.wav", _voice(rng, 0.4, 180), 8000, subtype="PCM_16")
    sf.write(ast / "silence" / "1.wav", np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    intro = _voice(rng, 1.4, 190)
    if HAVE_FFMPEG:  # G.722, as the -g722 package ships it
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-",
                        "-acodec", "g722", "-f", "g722", str(ast / "vm-intro.g722")], input=_pcm16_bytes(intro), check=True)
    else:
        sf.write(ast / "vm-intro.wav", intro, SAMPLE_RATE, subtype="PCM_16")
    return {"librivox": lv, "cards": cards, "tidigits": td, "asterisk": ast}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A corpus with two test music pieces (a chord with noise) and one train piece."""
    c = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1)
    rows = []
    for split, name, f in (("test", "m0", 220.0), ("test", "m1", 330.0), ("train", "t0", 440.0)):
        (c / "sources" / "music" / split).mkdir(parents=True, exist_ok=True)
        t = np.arange(SAMPLE_RATE * 2) / SAMPLE_RATE
        x = 0.1 * np.sin(2 * np.pi * f * t) + 0.05 * np.sin(2 * np.pi * 1.5 * f * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(c / "sources" / "music" / split / f"{name}.flac", x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        rows.append({"id": name, "audio": f"{name}.flac", "split": split, "kind": "music"})
    (c / "sources" / "music.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return c


FIXTURE_SOURCES = ["librivox", "cards", "tidigits", "asterisk"]


def _build(sources, corpus, out, seed=0, snrs=(-5.0, 0.0, 5.0)) -> dict:
    return build_real_voices(corpus, out, snrs_db=snrs, seed=seed, sources=FIXTURE_SOURCES,
                             roots={k: sources[k] for k in FIXTURE_SOURCES})


# --- text ----------------------------------------------------------------------------------------
def test_normalize_transcript_spells_numbers_and_keys_and_drops_notes():
    assert normalize_transcript("Press 1, or # to exit; * for help.") == "press one or pound to exit star for help"
    assert normalize_transcript("Please leave your message after the tone. (simple tone sound plays)") == \
        "please leave your message after the tone"
    assert normalize_transcript("[ascending tones]") == "" == normalize_transcript("<beep ascending>")
    assert normalize_transcript("If you'd like... dial 500, Call-Forward on Busy.") == \
        "if you'd like dial five hundred call forward on busy"
    assert normalize_transcript("3D audio enabled") == "three d audio enabled"
    assert normalize_transcript("At 7:45 A.M.") == "at seven forty five a m"
    assert number_words(0) == "zero" and number_words(162) == "one hundred sixty two"
    assert number_words(2034) == "two thousand thirty four" and number_words(1_000_000) == "one million"


def test_tidigits_names_and_conditions():
    assert tidigits_text("dhd.2934z") == "two nine three four zero"
    assert tidigits_text("man.ah.35oa") == "three five oh"
    assert tidigits_text("readme") is None
    assert [condition_name(s) for s in (None, -5, 0, 5.0, 2.5)] == ["clean", "snr-5", "snr+0", "snr+5", "snr+2.5"]


def test_asterisk_transcripts_read_plain_and_gzipped(tmp_path):
    text = "; header\nvm-next: Press 6 to play the next message.\n\ndigits/5: five\n"
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(text.encode()))
    want = {"vm-next": "Press 6 to play the next message.", "digits/5": "five"}
    assert read_asterisk_transcripts(tmp_path / "a.txt") == want == read_asterisk_transcripts(tmp_path / "b.txt.gz")
    with pytest.raises(CorpusError, match="asterisk-core-sounds-en"):
        read_asterisk_transcripts(tmp_path / "none.txt.gz")


# --- sources -------------------------------------------------------------------------------------
def test_real_voice_items_of_fixture_sources(sources):
    voices = real_voice_items(FIXTURE_SOURCES, roots=sources)
    got = {(v.id, v.utterance, v.text, v.display) for v in voices}
    assert got == {
        ("librivox-00", "utt-a", "he was not an ill disposed young man", None),
        ("librivox-01", "utt-b", "he might even have been made amiable himself", None),
        ("cards-00", "001", "ten of clubs", None),  # "five" has one word
        ("tidigits-00", "dhd.2934z", "two nine three four zero", None),
        ("asterisk-00", "vm-intro", "please leave your message after the tone", "Please leave your message after the tone."),
        ("asterisk-01", "vm-next", "press six to play the next message", "Press 6 to play the next message."),
    }
    for v in voices:  # every recording decodes to 16 kHz audio of about the written length
        x = v.load()
        assert x.dtype == np.float32 and 0.8 < len(x) / SAMPLE_RATE < 2.0 and np.any(x)
    assert {v.fmt for v in voices if v.source == "asterisk"} == ({"g722", "file"} if HAVE_FFMPEG else {"file"})
    assert len(real_voice_items(["cards"], min_words=1, roots=sources)) == 2


def test_named_missing_source_is_an_error_and_unnamed_ones_are_skipped(tmp_path, sources):
    with pytest.raises(CorpusError, match="pocketsphinx-testdata"):
        real_voice_items(["librivox"], roots={"librivox": tmp_path / "nope"})
    with pytest.raises(CorpusError, match="unknown real-voice source"):
        real_voice_items(["nope"])
    missing: dict[str, str] = {}
    everything_missing = {k: tmp_path / "nope" for k in ("librivox", "cards", "goforward", "tidigits", "alsa", "asterisk")}
    with pytest.raises(CorpusError, match="no real-voice source"):
        real_voice_items(None, roots=everything_missing, missing=missing)
    assert set(missing) == set(everything_missing)


def test_installed_pocketsphinx_testdata_recordings():
    if not (POCKETSPHINX_DATA / "librivox" / "transcription").is_file():
        pytest.fail("pocketsphinx-testdata is an install step of .ci/setup.sh")
    voices = real_voice_items(["librivox", "cards", "goforward", "tidigits"])
    by = {s: [v for v in voices if v.source == s] for s in ("librivox", "cards", "goforward", "tidigits")}
    assert [len(by[s]) for s in by] == [5, 5, 1, 1]
    assert by["goforward"][0].text == "go forward ten meters"
    assert by["cards"][4].text == "eight of spades four of clubs seven of hearts"
    x = decode_voice(by["goforward"][0].path, "raw16k")
    assert len(x) == 89160 // 2 and 0.05 < np.max(np.abs(x)) < 1.0


def test_installed_asterisk_prompts():
    if not ASTERISK_TRANSCRIPT.is_file():
        pytest.fail("asterisk-core-sounds-en and asterisk-core-sounds-en-g722 are an install step of .ci/setup.sh")
    voices = {v.utterance: v for v in real_voice_items(["asterisk"])}
    assert len(voices) >= 300 and not set(voices) & set(ASTERISK_SKIP)
    assert {v.fmt for v in voices.values()} == {"g722"}
    assert voices["vm-next"].text == "press six to play the next message"
    assert voices["demo-congrats"].text.startswith("congratulations you have successfully installed and executed")
    assert voices["unidentified-no-callback"].text == "unidentified or withheld and therefore cannot be called back"
    assert "silence/1" not in voices and "beep" not in voices and "digits/5" not in voices  # no speech / one word
    x = voices["vm-next"].load()
    assert 1.0 < len(x) / SAMPLE_RATE < 4.0 and 0.05 < np.max(np.abs(x)) < 1.0


def test_every_installed_transcript_is_lowercase_words():
    for v in real_voice_items(None):
        assert re.fullmatch(r"[a-z']+( [a-z']+)+", v.text), (v.id, v.text)


# --- the builder ---------------------------------------------------------------------------------
def test_builder_writes_clean_and_exact_mixes_at_the_asked_snrs(sources, corpus, tmp_path):
    out = tmp_path / "rv"
    summary = _build(sources, corpus, out)
    items = read_manifest(out / "test.jsonl")
    ids = [it.id for it in items]
    conds = ["clean", "snr-5", "snr+0", "snr+5"]
    utts = ["librivox-00", "librivox-01", "cards-00", "tidigits-00", "asterisk-00", "asterisk-01"]
    assert ids == [f"{u}-{c}" for u in utts for c in conds]
    assert summary["items"] == 24 and summary["utterances"] == 6 and summary["conditions"] == conds
    assert summary["sources"]["librivox"]["items"] == dict.fromkeys(conds, 2)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert [i.id for i in read_manifest(out / "test_clean.jsonl")] == [f"{u}-clean" for u in utts]
    assert [i.id for i in read_manifest(out / "test_mixed.jsonl")] == [f"{u}-{c}" for u in utts for c in conds[1:]]
    total = 0.0
    for it in items:
        assert it.singing is None and it.singing_text is None and it.sample_rate == SAMPLE_RATE
        assert it.extra["scenario"] == "speech" and it.id.endswith("-" + it.extra["condition"])
        mix, rate = sf.read(out / it.mixture, dtype="float32")
        sp = sf.read(out / it.speech, dtype="float32")[0]
        assert rate == SAMPLE_RATE and len(mix) == len(sp)
        total += len(mix) / SAMPLE_RATE
        lead = int(0.5 * SAMPLE_RATE)
        assert not np.any(sp[:lead - 1]) and not np.any(sp[len(sp) - lead + 1:])  # 0.5 s before and after
        if it.extra["condition"] == "clean":
            assert it.music is None and it.extra["music_source"] is None
            assert it.extra["speech_snr_db"] is None and it.extra["speech_snr_bucket"] is None
            assert np.array_equal(mix, sp) and np.max(np.abs(mix)) == pytest.approx(0.8, abs=1e-4)
            assert not (out / it.mixture).with_name("music.flac").exists()
        else:
            mu = sf.read(out / it.music, dtype="float32")[0]
            assert np.abs(mix - sp - mu).max() <= 1.5 / 32768
            want = it.extra["target_snr_db"]
            assert it.id.endswith(f"snr{want:+g}")
            assert region_snr_db(sp, mu) == pytest.approx(want, abs=0.5)
            assert it.extra["speech_snr_db"] == pytest.approx(want, abs=0.05)
            assert it.extra["speech_snr_bucket"] == int(want)
            assert it.extra["music_source"] in ("m0", "m1")  # test split only
    assert summary["total_seconds"] == pytest.approx(total, abs=0.01)
    vm = next(i for i in items if i.id == "asterisk-01-clean")
    assert vm.speech_text == "press six to play the next message"
    assert vm.extra["speech_text_display"] == "Press 6 to play the next message."
    assert "speech_text_display" not in items[0].extra


def test_builder_is_deterministic_for_the_seed(sources, corpus, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _build(sources, corpus, a, snrs=(0.0,))
    _build(sources, corpus, b, snrs=(0.0,))
    _build(sources, corpus, c, snrs=(0.0,), seed=7)
    assert (a / "test.jsonl").read_text() == (b / "test.jsonl").read_text()
    files = sorted(p.relative_to(a) for p in (a / "mixtures").rglob("*.flac"))
    assert files and files == sorted(p.relative_to(b) for p in (b / "mixtures").rglob("*.flac"))
    for rel in files:
        assert np.array_equal(sf.read(a / rel)[0], sf.read(b / rel)[0]), rel
    draws = lambda d: [(i.extra["music_source"], i.extra["music_offset_s"]) for i in read_manifest(d / "test_mixed.jsonl")]
    assert draws(a) != draws(c)
    # an item's music does not depend on which other sources are built
    d = tmp_path / "d"
    build_real_voices(corpus, d, snrs_db=(0.0,), sources=["cards"], roots=sources)
    assert [i.extra["music_offset_s"] for i in read_manifest(d / "test_mixed.jsonl")] == \
        [i.extra["music_offset_s"] for i in read_manifest(a / "test_mixed.jsonl") if i.id.startswith("cards-")]


def test_builder_needs_the_corpus_music_index(sources, tmp_path, corpus):
    with pytest.raises(CorpusError, match=r"music\.jsonl not found: build the corpus first"):
        _build(sources, tmp_path / "no-corpus", tmp_path / "out")
    only_train = tmp_path / "train-only"
    (only_train / "sources").mkdir(parents=True)
    (only_train / "sources" / "music.jsonl").write_text(json.dumps({"id": "t", "audio": "t.flac", "split": "train"}) + "\n")
    with pytest.raises(CorpusError, match="no test-split music"):
        _build(sources, only_train, tmp_path / "out")
    # clean items only: no corpus needed
    summary = _build(sources, tmp_path / "no-corpus", tmp_path / "clean", snrs=())
    assert summary["items"] == 6 and summary["conditions"] == ["clean"]


def test_cli_real_voices(corpus, tmp_path, capsys):
    from jrsv_stream.cli import main as cli_main

    if not (POCKETSPHINX_DATA / "goforward.raw").is_file():
        pytest.fail("pocketsphinx-testdata is an install step of .ci/setup.sh")
    out = tmp_path / "o"
    assert cli_main(["data", "real-voices", "--corpus", str(corpus), "--out", str(out), "--snr", "-5", "5",
                     "--sources", "goforward", "tidigits"]) == 0
    printed = capsys.readouterr().out
    assert "goforward" in printed and "6 items" in printed
    assert [i.id for i in read_manifest(out / "test.jsonl")] == [
        "goforward-00-clean", "goforward-00-snr-5", "goforward-00-snr+5",
        "tidigits-00-clean", "tidigits-00-snr-5", "tidigits-00-snr+5"]
    assert cli_main(["data", "real-voices", "--corpus", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "music.jsonl not found" in capsys.readouterr().err
