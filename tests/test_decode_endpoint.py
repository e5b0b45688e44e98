"""Endpoint rules: each rule fires when it should, chunking does not change the result."""

from __future__ import annotations

import numpy as np
import pytest

from jrsv_stream.decode.endpoint import EndpointConfig, blank_frames, endpoint_step, init_endpoint_state

CFG = EndpointConfig(frame_shift_ms=40.0, rule1_trailing_silence_s=5.0, rule2_trailing_silence_s=0.8,
                     rule3_max_utterance_s=20.0, activity_window_frames=10, activity_threshold=0.2)


def run(blanks, activity=None, cfg=CFG, chunk=8):
    """Feed frames in chunks until a rule fires: (state, frames consumed in total)."""
    state, total = init_endpoint_state(cfg), 0
    blanks = np.asarray(blanks, dtype=bool)
    for a in range(0, len(blanks), chunk):
        act = None if activity is None else activity[a:a + chunk]
        state, ended = endpoint_step(state, blanks[a:a + chunk], act, cfg)
        total += state.frames_used
        if ended:
            break
    return state, total


@pytest.mark.parametrize("chunk", [1, 8, 13])
def test_rule1_long_silence_nothing_decoded(chunk):
    state, used = run(np.ones(200, bool), chunk=chunk)
    assert state.ended_rule == "rule1" and used == 125  # 5 s / 40 ms
    assert not state.decoded_something


@pytest.mark.parametrize("chunk", [1, 8, 13])
def test_rule2_pause_after_speech(chunk):
    blanks = np.ones(100, bool)
    blanks[5:15:3] = False  # tokens, last non-blank at frame 14
    state, used = run(blanks, chunk=chunk)
    assert state.ended_rule == "rule2" and used == 15 + 20  # 0.8 s = 20 frames after frame 14
    assert state.decoded_something and state.trailing_blank_frames == 20


def test_short_pause_does_not_end():
    blanks = np.ones(60, bool)
    blanks[::15] = False  # pauses of 14 frames < 20
    state, used = run(blanks)
    assert state.ended_rule is None and used == 60 and state.num_frames == 60


@pytest.mark.parametrize("chunk", [1, 8, 13])
def test_rule2b_short_pause_closes_only_a_long_segment(chunk):
    cfg = EndpointConfig(frame_shift_ms=40.0, rule2_trailing_silence_s=0.8, pause_trailing_silence_s=0.32,
                         pause_min_utterance_s=2.0, activity_window_frames=0)
    blanks = np.ones(200, bool)
    blanks[0:40:4] = False  # tokens every 4 frames up to frame 36, then 12-frame pauses
    blanks[48:100:13] = False  # frames 48, 61, 74, 87: pauses of 12 frames
    state, used = run(blanks, cfg=cfg, chunk=chunk)
    # the 8-frame (0.32 s) pause after frame 36 is too early (frame 44 < 50 = 2 s); the first
    # 8-frame pause ending at or after frame 50 is the one after frame 48 (ends at frame 56)
    assert state.ended_rule == "pause" and used == 57
    state, used = run(blanks, chunk=chunk)  # rule 2b off (CFG): only the 0.8 s rule
    assert state.ended_rule == "rule2" and used == 88 + 20


@pytest.mark.parametrize("chunk", [1, 8])
def test_rule3_max_length(chunk):
    blanks = np.zeros(1000, bool)  # continuous tokens, never a pause
    state, used = run(blanks, chunk=chunk)
    assert state.ended_rule == "rule3" and used == 500


@pytest.mark.parametrize("chunk", [1, 8, 13])
def test_activity_rule(chunk):
    blanks = np.zeros(200, bool)
    blanks[50:] = True
    blanks[60] = False  # a late token: rule 2 can only fire 20 frames after frame 60
    activity = np.full(200, 0.9)
    activity[55:] = 0.05  # the voice stops at frame 55
    state, used = run(blanks, activity, chunk=chunk)
    # 10-frame window: 8 low frames give a mean of 0.22, 9 give 0.135 < 0.2 (frame 63).
    assert state.ended_rule == "activity" and used == 55 + 9
    # Low activity with nothing decoded does not end the segment by itself.
    state, used = run(np.ones(100, bool), np.full(100, 0.0), chunk=chunk)
    assert state.ended_rule is None
    # Without activity input, the same frames end later, by rule 2.
    state, used = run(blanks, None, chunk=chunk)
    assert state.ended_rule == "rule2" and used == 61 + 20


@pytest.mark.parametrize("chunk", [1, 8, 13])
def test_silence_max_activity_counts_only_quiet_blank_frames(chunk):
    """silence_max_activity: a blank frame counts toward the trailing silence only while the
    activity is under the threshold; off (0), the blank alone counts."""
    blanks = np.zeros(200, bool)
    blanks[50:] = True
    activity = np.full(200, 0.9)  # the voice goes on through frames 50-79 the CTC path leaves blank
    activity[80:] = 0.4  # then a quiet stretch (over the activity rule's 0.2)
    cfg = EndpointConfig(frame_shift_ms=40.0, rule2_trailing_silence_s=0.8, activity_window_frames=10,
                         activity_threshold=0.2, silence_max_activity=0.5)
    state, used = run(blanks, activity, cfg, chunk=chunk)
    assert state.ended_rule == "rule2" and used == 80 + 20
    state, used = run(blanks, activity, CFG, chunk=chunk)  # off: 20 blank frames after frame 49
    assert state.ended_rule == "rule2" and used == 50 + 20


def test_disabled_rules_and_override():
    cfg = EndpointConfig(rule1_trailing_silence_s=0, rule2_trailing_silence_s=0, rule3_max_utterance_s=0,
                         activity_window_frames=0)
    state, used = run(np.ones(1000, bool), np.zeros(1000), cfg=cfg)
    assert state.ended_rule is None and used == 1000
    # The decoder's own "best hypothesis is non-empty" flag can override the frame-based one.
    state, ended = endpoint_step(init_endpoint_state(CFG), np.ones(30, bool), None, CFG, decoded_something=True)
    assert ended and state.ended_rule == "rule2" and state.frames_used == 20


def test_blank_frames_and_errors():
    logp = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    assert blank_frames(logp).tolist() == [True, False, True]
    assert blank_frames(logp, blank_id=1).tolist() == [False, True, False]
    s0 = init_endpoint_state(CFG)
    with pytest.raises(ValueError):
        endpoint_step(s0, np.ones(3, bool), np.ones(4), CFG)
    ended, _ = endpoint_step(s0, np.ones(200, bool), None, CFG)
    with pytest.raises(ValueError, match="already ended"):
        endpoint_step(ended, np.ones(1, bool), None, CFG)
    with pytest.raises(ValueError):
        EndpointConfig(activity_threshold=2.0)
    assert s0 == init_endpoint_state(CFG)  # steps never mutate their input
