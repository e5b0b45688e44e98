import numpy as np
import pytest
import pyworld

from jrsv_stream.data.singing import SingRequest, pitch_range, sing, singers_for_split
from jrsv_stream.data.text import load_lyric_lines, load_sentences, normalize_sentence
from jrsv_stream.data.tts import TtsRequest, Voice, synthesize, voices_for_split


def test_text_splits_are_disjoint_and_large():
    s = load_sentences()
    texts = {k: {x.text for x in v} for k, v in s.items()}
    assert len(texts["train"]) > 10000 and len(texts["test"]) > 500
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["valid"] and not texts["valid"] & texts["test"]
    lines = load_lyric_lines()
    lt = {k: {x.text for x in v} for k, v in lines.items()}
    assert not lt["train"] & lt["test"]
    assert all(3 <= len(x.words) <= 8 for x in lines["train"][:2000])


def test_normalize_rejects_what_tts_would_not_read_verbatim():
    assert normalize_sentence("He paid 20 dollars.") is None
    assert normalize_sentence("Ask Dr. Xyzzyq about it.") is None
    s = normalize_sentence("Well, don't count your chickens -- before they hatch!")
    assert s.words == ("well", "don't", "count", "your", "chickens", "before", "they", "hatch")
    assert s.spoken.startswith("Well, don't")


def test_heldout_voices_never_in_training():
    train = {v.id for v in voices_for_split("train")}
    test = {v.id for v in voices_for_split("test")}
    assert train and test and not train & test
    assert {"flite:rms", "festival:ked_diphone"} <= test
    assert len(train) > 150
    assert not set(singers_for_split("train")) & set(singers_for_split("test"))


def _energy_inside_words(audio, words, sr=16000):
    mask = np.zeros(len(audio), bool)
    for _, s, e in words:
        mask[int(s * sr):int(e * sr)] = True
    return float(np.sum(audio[mask] ** 2) / np.sum(audio**2))


@pytest.mark.parametrize("voice", [Voice("espeak", "en-us+m3"), Voice("flite", "awb"), Voice("flite", "kal"),
                                   Voice("festival", "kal_diphone"), Voice("festival", "cmu_us_slt_arctic_hts")])
def test_each_engine_gives_16k_audio_and_word_times(voice):
    sent = normalize_sentence("The quick brown fox jumps over the lazy dog, and then it sleeps.")
    (u,) = synthesize([TtsRequest(sent.spoken, sent.words, voice, speed=1.1, pitch=0.3)])
    assert u is not None and u.voice == voice.id
    dur = len(u.audio) / 16000
    assert 2.0 < dur < 8.0 and abs(np.max(np.abs(u.audio)) - 0.5) < 1e-3
    assert [w for w, _, _ in u.words] == list(sent.words)
    starts = [s for _, s, _ in u.words]
    assert starts == sorted(starts) and all(0 <= s < e <= dur + 1e-3 for _, s, e in u.words)
    # the word spans hold nearly all of the energy: timings are where the speech is
    assert _energy_inside_words(u.audio, u.words) > 0.9


def test_speed_changes_duration():
    sent = normalize_sentence("A rolling stone gathers no moss at all.")
    slow, fast = synthesize([TtsRequest(sent.spoken, sent.words, Voice("espeak", "en+f2"), speed=s) for s in (0.8, 1.25)])
    assert len(slow.audio) > 1.3 * len(fast.audio)


@pytest.mark.parametrize("singer", ["festival-sing:kal_diphone", "world:espeak:en-us+f2"])
def test_singing_follows_the_melody(singer):
    words = tuple("we sail across the silver sea tonight".split())
    (u,) = sing([SingRequest(words, singer, tempo_bpm=100.0, key_midi=2, seed=5)])
    assert u is not None and [w for w, _, _ in u.words] == list(words)
    notes = u.params["notes"]
    lo, hi = pitch_range(singer)
    assert all(lo <= n <= hi for ns in notes for n in ns)
    # f0 of the sung audio, per word, against the word's notes (nearest of them)
    x = u.audio.astype(np.float64)
    f0, t = pyworld.dio(x, 16000, frame_period=5.0)
    f0 = pyworld.stonemask(x, f0, t, 16000)
    hits = total = 0
    for (w, s, e), ns in zip(u.words, notes):
        sel = (t >= s) & (t < e) & (f0 > 0)
        midi = 69 + 12 * np.log2(f0[sel] / 440.0)
        err = np.min(np.abs(midi[:, None] - np.array(ns)[None, :]), axis=1)
        hits += int(np.sum(err <= 0.5))
        total += int(sel.sum())
    assert total > 100 and hits / total >= 0.7
