"""Endpoint detection: when a segment (utterance / lyric line) ends and a final is due.

WeNet's rules (runtime ``endpoint.h``) on per-frame "blank" decisions, plus a rule on the
separator's activity probability (shared/DESIGN.md: activity heads gate the captions):

- rule 1: trailing blank >= ``rule1_trailing_silence_s`` with nothing decoded yet (a long
  silence: close the empty segment so state does not grow);
- rule 2: trailing blank >= ``rule2_trailing_silence_s`` after something was decoded (the
  speaker paused: finalize);
- rule 2b: trailing blank >= ``pause_trailing_silence_s`` after something was decoded,
  once the segment is at least ``pause_min_utterance_s`` long (a shorter pause closes a
  long segment, so the first words of a long utterance do not wait for its end);
- rule 3: segment length >= ``rule3_max_utterance_s`` whatever was decoded;
- activity: the mean activity probability over the last ``activity_window_frames``
  frames is below ``activity_threshold`` after something was decoded (the voice on this
  track stopped, e.g. singing gave way to music, before the CTC blanks say so).

Rules are checked after every frame, so the result does not depend on chunking: a step
stops at the first frame that fires a rule and reports how many of its frames it used.
A frame is "blank" when its CTC argmax is the blank (:func:`blank_frames`); "decoded
something" means a non-blank frame occurred in the segment (the caller may override it
with the decoder's best hypothesis being non-empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class EndpointConfig:
    """Endpoint rules (a rule with a non-positive length is disabled).

    Attributes:
        frame_shift_ms: duration of one decoder frame (40 ms after subsampling).
        rule1_trailing_silence_s: trailing blank to end a segment with nothing decoded.
        rule2_trailing_silence_s: trailing blank to end a segment after decoded tokens.
        pause_trailing_silence_s: rule 2b's trailing blank (0 disables rule 2b).
        pause_min_utterance_s: rule 2b applies once the segment is this long.
        rule3_max_utterance_s: maximum segment length.
        activity_window_frames: frames averaged by the activity rule (0 disables it).
        activity_threshold: the activity rule fires when the window mean is below this.
        silence_max_activity: with activity given, a frame counts as silence (the trailing
            blank of rules 1, 2 and 2b) only when it is blank *and* its activity is under
            this (0 disables it: the blank alone). The CTC head of the Whisper default reads
            real voices poorly and is blank through whole words ("rear right" was cut after
            "rear" by 0.8 s of blanks while the speech activity stayed at 0.9). Off by
            default: measured (session 26, README "Reproducible A/B runs"), at 0.5 / 0.8 it
            trades real voices at 0 dB (+5 / +2 words) and the final latency (+0.33 / +0.16 s)
            for the mixtures.
    """

    frame_shift_ms: float = 40.0
    rule1_trailing_silence_s: float = 5.0
    rule2_trailing_silence_s: float = 0.8
    rule3_max_utterance_s: float = 20.0
    pause_trailing_silence_s: float = 0.0
    pause_min_utterance_s: float = 0.0
    activity_window_frames: int = 12
    activity_threshold: float = 0.2
    silence_max_activity: float = 0.0

    def __post_init__(self):
        if self.frame_shift_ms <= 0:
            raise ValueError(f"frame_shift_ms must be > 0, got {self.frame_shift_ms}")
        if self.activity_window_frames < 0:
            raise ValueError(f"activity_window_frames must be >= 0, got {self.activity_window_frames}")
        if not 0.0 <= self.activity_threshold <= 1.0:
            raise ValueError(f"activity_threshold must be in [0, 1], got {self.activity_threshold}")
        if not 0.0 <= self.silence_max_activity <= 1.0:
            raise ValueError(f"silence_max_activity must be in [0, 1] (0: off), got {self.silence_max_activity}")

    def frames(self, seconds: float) -> int:
        """Seconds -> frames (rounded); 0 when the rule is disabled (``seconds <= 0``)."""
        return max(0, int(round(seconds * 1000.0 / self.frame_shift_ms))) if seconds > 0 else 0


class EndpointState(NamedTuple):
    """Endpoint state of one segment (plain data; never mutated).

    Attributes:
        num_frames: frames of the segment consumed so far.
        trailing_blank_frames: consecutive blank frames at the end.
        decoded_something: a non-blank frame occurred in the segment.
        activity_recent: the ``activity_window_frames`` most recent activity values,
            newest last (a tuple, so states compare and hash).
        activity_count: activity frames seen (the window is full when >= its size).
        ended_rule: name of the rule that fired (``"rule1"``, ``"rule2"``, ``"pause"`` (rule 2b), ``"rule3"``,
            ``"activity"``), None while the segment is open.
        frames_used: frames of the last step's input consumed (all of them unless a rule
            fired inside the chunk; the caller starts the next segment with the rest).
    """

    num_frames: int
    trailing_blank_frames: int
    decoded_something: bool
    activity_recent: tuple[float, ...]
    activity_count: int
    ended_rule: str | None
    frames_used: int


def init_endpoint_state(config: EndpointConfig = EndpointConfig()) -> EndpointState:
    """State of a new segment."""
    return EndpointState(0, 0, False, (1.0,) * config.activity_window_frames, 0, None, 0)


def blank_frames(logp_chunk: np.ndarray, blank_id: int = 0) -> np.ndarray:
    """(F, V) log-probs -> (F,) bool: the frame's argmax is the blank."""
    logp_chunk = np.asarray(logp_chunk)
    if logp_chunk.ndim != 2:
        raise ValueError(f"logp_chunk must be (F, V), got shape {logp_chunk.shape}")
    return logp_chunk.argmax(axis=1) == blank_id


def endpoint_step(state: EndpointState, frame_is_blank: np.ndarray, activity: np.ndarray | None = None,
                  config: EndpointConfig = EndpointConfig(),
                  decoded_something: bool | None = None) -> tuple[EndpointState, bool]:
    """Advance the rules over a chunk of frames.

    Args:
        state: state after the previous chunk (an ended state must be reset with
            :func:`init_endpoint_state` first).
        frame_is_blank: (F,) bool, True where the frame is blank / silence.
        activity: (F,) activity probability of this track per frame, or None (activity
            rule skipped for these frames).
        config: rules.
        decoded_something: if given, overrides the segment's "decoded something" flag
            from this chunk on (e.g. ``bool(best(beam_state).tokens)``).

    Returns:
        ``(new_state, ended)``; when ended, ``new_state.ended_rule`` names the rule and
        ``new_state.frames_used`` the frames consumed up to and including the firing one.

    Raises:
        ValueError: shapes disagree, or ``state`` has already ended.
    """
    if state.ended_rule is not None:
        raise ValueError(f"segment already ended ({state.ended_rule}); start a new one with init_endpoint_state")
    if len(state.activity_recent) != config.activity_window_frames:
        raise ValueError("state was made for another activity_window_frames; use init_endpoint_state(config)")
    blanks = np.asarray(frame_is_blank, dtype=bool).reshape(-1)
    num = blanks.shape[0]
    if activity is not None:
        activity = np.asarray(activity, dtype=np.float64).reshape(-1)
        if activity.shape[0] != num:
            raise ValueError(f"activity has {activity.shape[0]} frames, frame_is_blank has {num}")
        if config.silence_max_activity > 0:  # a blank frame under a voice is not silence
            blanks = blanks & (activity < config.silence_max_activity)
    r1 = config.frames(config.rule1_trailing_silence_s)
    r2 = config.frames(config.rule2_trailing_silence_s)
    r3 = config.frames(config.rule3_max_utterance_s)
    r2b = config.frames(config.pause_trailing_silence_s)
    r2b_min = config.frames(config.pause_min_utterance_s)
    win = config.activity_window_frames

    n, trailing = state.num_frames, state.trailing_blank_frames
    something = state.decoded_something if decoded_something is None else bool(decoded_something)
    recent, count = state.activity_recent, state.activity_count
    if activity is not None and win > 0:
        recent = np.concatenate([np.asarray(recent, dtype=np.float64), activity])
        csum = np.concatenate([[0.0], np.cumsum(recent)])
    rule = None
    used = num
    for i, is_blank in enumerate(blanks.tolist()):
        n += 1
        if is_blank:
            trailing += 1
        else:
            trailing = 0
            if decoded_something is None:
                something = True
        if activity is not None and win > 0:
            count += 1
        if not something and r1 and trailing >= r1:
            rule = "rule1"
        elif something and r2 and trailing >= r2:
            rule = "rule2"
        elif something and r2b and n >= r2b_min and trailing >= r2b:
            rule = "pause"
        elif r3 and n >= r3:
            rule = "rule3"
        elif something and activity is not None and win > 0 and count >= win:
            end = len(state.activity_recent) + i + 1  # index after this frame in `recent`
            if (csum[end] - csum[end - win]) / win < config.activity_threshold:
                rule = "activity"
        if rule is not None:
            used = i + 1
            break
    if activity is not None and win > 0:
        start = len(state.activity_recent) + used - win
        recent = tuple(recent[start:start + win].tolist())
    new = EndpointState(n, trailing, something, recent, count, rule, used)
    return new, rule is not None
