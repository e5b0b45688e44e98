"""bench/latency.py's word matching: a word counts from when it was on screen without a break."""

import pytest
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.latency import measure  # noqa: E402
from jrsv_stream.stream.events import Final, Partial  # noqa: E402


def _ev(cls, t, seq, words, audio_time, seg="speech-1"):
    text = " ".join(w for w, _, _ in words)
    return t, cls(stream_id="s", track="speech", segment_id=seg, seq=seq, text=text, words=tuple(words),
                  start_s=words[0][1] if words else 0.0, end_s=words[-1][2] if words else 0.0,
                  audio_time_s=audio_time, emitted_at=t)


def _lat(received, word=("hello", 0.1, 0.8), t0=9.5, mode="time"):
    m = measure([(None, {"speech": [word]})], [(received, t0)], mode, 1.0)
    return m["partial"], m["final"]


def test_word_shown_before_its_end_counts_from_when_it_appeared():
    # the word is on screen from t=10.0 (before it ends at wall 9.5 + 0.8 = 10.3); the next
    # partial (text changed) is the first sent after the audio passed its end
    rec = [_ev(Partial, 9.8, 0, [("he", 0.1, 0.3)], 0.4),
           _ev(Partial, 10.0, 1, [("hello", 0.1, 0.4)], 0.5),
           _ev(Partial, 10.5, 2, [("hello", 0.1, 0.6), ("x", 0.7, 0.9)], 1.0),
           _ev(Final, 11.0, 3, [("hello", 0.1, 0.6), ("x", 0.7, 0.9)], 1.2)]
    partial, final = _lat(rec)
    assert abs(partial[0] + 300.0) < 1e-6  # from "hello" at 10.0, not the first piece "he" at 9.8
    assert abs(final[0] - 700.0) < 1e-6
    # the per-word row says the same, and what first showed the word
    m = measure([(None, {"speech": [("hello", 0.1, 0.8)]})], [(rec, 9.5)], "time", 1.0)
    assert m["per_word"] == [{"item": None, "track": "speech", "word": "hello", "end_s": 0.8, "partial_ms": -300.0,
                              "first_shown_by": "Partial", "final_ms": 700.0}]


def test_a_break_on_screen_restarts_the_clock():
    rec = [_ev(Partial, 10.0, 0, [("hello", 0.1, 0.4)], 0.5),
           _ev(Partial, 10.2, 1, [("zz", 0.85, 0.9)], 0.9),  # the word disappeared
           _ev(Partial, 10.6, 2, [("hello", 0.1, 0.6), ("zz", 0.85, 0.9)], 1.0)]
    partial, final = _lat(rec)
    assert abs(partial[0] - 300.0) < 1e-6 and final == []


def test_other_segments_do_not_extend_a_word_and_text_mode_is_unchanged():
    rec = [_ev(Partial, 10.0, 0, [("hello", 0.1, 0.4)], 0.5, seg="speech-0"),
           _ev(Partial, 10.5, 1, [("hello", 0.1, 0.6)], 1.0, seg="speech-1")]
    assert abs(_lat(rec)[0][0] - 200.0) < 1e-6
    # text mode: the first event with the same word ending within the tolerance, whenever it came
    assert abs(_lat(rec, mode="text")[0][0] + 300.0) < 1e-6


def test_override_pairs_parse_or_exit_with_the_option_named():
    from bench.common import parse_overrides

    assert parse_overrides(["rule2_trailing_silence_s=0.5", "gate_on=3"], "--x") == {
        "rule2_trailing_silence_s": 0.5, "gate_on": 3.0}
    # a whole number stays an int: frame counts (activity_window_frames=0) must not become 0.0
    assert type(parse_overrides(["activity_window_frames=0"], "--x")["activity_window_frames"]) is int
    for bad in ("gate_on", "=0.3", "gate_on=high"):
        with pytest.raises(SystemExit, match="--session: expected FIELD=NUMBER"):
            parse_overrides([bad], "--session")
