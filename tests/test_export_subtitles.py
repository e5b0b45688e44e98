"""SRT / WebVTT / LRC from finals: exact text, splitting of long finals, live writer."""

from __future__ import annotations

import pytest

from jrsv_stream.export.subtitles import (Cue, LiveSubtitleWriter, cues_from_finals, to_lrc, to_srt, to_vtt,
                                          write_subtitles)
from jrsv_stream.stream.events import Final


def _final(track, seg, text, words, seq=1):
    return Final("s", track, seg, seq, text, tuple(words), words[0][1] if words else 0.0, words[-1][2] if words else 0.0,
                 10.0, 0.0)


FINALS = [
    _final("speech", "speech-0", "hello there", [("hello", 1.0, 1.4), ("there", 1.5, 2.25)]),
    _final("lyrics", "lyrics-0", "la la land", [("la", 2.0, 2.3), ("la", 2.4, 2.7), ("land", 2.8, 3.5)]),
    _final("speech", "speech-1", "general kenobi", [("general", 3661.2, 3661.8), ("kenobi", 3661.9, 3662.5)]),
    _final("speech", "speech-2", "", []),
]


def test_srt_exact():
    assert to_srt(cues_from_finals(FINALS, "speech")) == (
        "1\n00:00:01,000 --> 00:00:02,250\nhello there\n\n"
        "2\n01:01:01,200 --> 01:01:02,500\ngeneral kenobi\n\n")


def test_vtt_exact_per_track():
    assert to_vtt(cues_from_finals(FINALS, "lyrics")) == "WEBVTT\n\n00:00:02.000 --> 00:00:03.500\nla la land\n\n"
    assert to_vtt([]) == "WEBVTT\n\n"


def test_lrc_exact_plain_and_word_times():
    cues = cues_from_finals(FINALS, "lyrics")
    assert to_lrc(cues) == "[00:02.00]la la land\n"
    assert to_lrc(cues, word_times=True, title="demo") == "[ti:demo]\n[00:02.00]<00:02.00>la <00:02.40>la <00:02.80>land\n"


def test_hours_and_long_finals_are_split_by_words():
    long = _final("speech", "speech-9", "one two three four five six",
                  [(w, 10.0 + i, 10.5 + i) for i, w in enumerate("one two three four five six".split())])
    cues = cues_from_finals([long], max_chars=10, max_duration_s=100)
    assert [c.text for c in cues] == ["one two", "three four", "five six"]
    assert [(c.start_s, c.end_s) for c in cues] == [(10.0, 11.5), (12.0, 13.5), (14.0, 15.5)]
    cues = cues_from_finals([long], max_chars=100, max_duration_s=2.0)
    assert [c.text for c in cues] == ["one two", "three four", "five six"]
    assert to_srt([Cue(3723.004, 3724.5, "x")]) == "1\n01:02:03,004 --> 01:02:04,500\nx\n\n"


def test_min_duration_and_no_overlap():
    a = _final("speech", "a", "a", [("a", 1.0, 1.1)])
    b = _final("speech", "b", "b", [("b", 1.3, 1.4)])
    cues = cues_from_finals([b, a])  # out of order in, time order out
    assert [(c.text, c.start_s, c.end_s) for c in cues] == [("a", 1.0, 1.3), ("b", 1.3, 1.8)]


def test_empty_finals_are_skipped_and_dicts_accepted():
    d = {"track": "speech", "text": "from json", "words": [["from", 0.0, 0.3], ["json", 0.4, 0.9]], "start_s": 0.0, "end_s": 0.9}
    assert [c.text for c in cues_from_finals([d, FINALS[3]])] == ["from json"]


def test_write_subtitles_and_live_writer(tmp_path):
    p = write_subtitles(tmp_path / "x" / "s.srt", "srt", cues_from_finals(FINALS[:1]))
    assert p.read_text() == "1\n00:00:01,000 --> 00:00:02,250\nhello there\n\n"
    with pytest.raises(ValueError, match="unknown subtitle format"):
        write_subtitles(tmp_path / "a.txt", "txt", [])
    with LiveSubtitleWriter(tmp_path / "speech.vtt", "vtt", "speech") as w:
        assert (tmp_path / "speech.vtt").read_text() == "WEBVTT\n\n"
        assert w.add(FINALS[0]) == 1
        assert w.add(FINALS[1]) == 0  # another track
        assert (tmp_path / "speech.vtt").read_text() == "WEBVTT\n\n00:00:01.000 --> 00:00:02.250\nhello there\n\n"
    with LiveSubtitleWriter(tmp_path / "lyrics.lrc", "lrc", "lyrics") as w:
        w.add(FINALS[1])
    assert (tmp_path / "lyrics.lrc").read_text() == "[00:02.00]la la land\n"


def test_live_writer_joins_the_pieces_of_an_utterance(tmp_path):
    """Incremental finals: pieces of one utterance wait for its end and make one cue."""
    p = tmp_path / "speech.srt"
    w = LiveSubtitleWriter(p, "srt", "speech")
    assert w.add(_final("speech", 0, "Good evening,", [("Good", 1.0, 1.3), ("evening,", 1.4, 1.9)]), more=True) == 0
    assert w.add(_final("speech", 1, "everyone.", [("everyone.", 2.0, 2.6)], seq=2), more=True) == 0
    assert p.read_text() == ""  # nothing yet: the utterance goes on
    assert w.end_utterance() == 1
    assert p.read_text() == "1\n00:00:01,000 --> 00:00:02,600\nGood evening, everyone.\n\n"
    assert w.add(_final("speech", 2, "Next.", [("Next.", 4.0, 4.5)], seq=3), more=True) == 0
    w.close()  # a waiting utterance is written at close
    assert p.read_text().endswith("2\n00:00:04,000 --> 00:00:04,500\nNext.\n\n")
