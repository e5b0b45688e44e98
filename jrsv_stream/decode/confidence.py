"""Word confidence from CTC posteriors (and a decoder's token probabilities).

A CTC token is emitted as a spike: its posterior is high on a frame or two and blank
dominates around it. The confidence of a token of a hypothesis is the highest posterior
of that token over the frames from its emission frame to the next token's (or the
segment's end); a word's is the lowest of its pieces' (one unsure piece makes the word
unsure). For a final written by an attention decoder, the word's confidence is the
decoder's (the lowest probability of the tokens that wrote it), which calibrates better
than the CTC posterior over the word's aligned frames, as measured against word
correctness by ``bench/confidence_calibration.py``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ctc_token_confidence(logp: np.ndarray, tokens: Sequence[int], frames: Sequence[int], start_frame: int = 0
                         ) -> list[float]:
    """Confidence of each token of a CTC hypothesis.

    Args:
        logp: (F, V) log-probs of the segment's frames (frame 0 = absolute ``start_frame``).
        tokens: the hypothesis.
        frames: absolute emission frame of each token.
        start_frame: absolute index of ``logp``'s first frame.

    Returns:
        One probability in [0, 1] per token (0.0 for a token outside ``logp``'s frames).
    """
    n = logp.shape[0]
    out = []
    for i, (tok, f) in enumerate(zip(tokens, frames)):
        a = int(f) - start_frame
        b = (int(frames[i + 1]) - start_frame) if i + 1 < len(frames) else n
        a, b = max(0, a), min(n, max(b, a + 1))
        out.append(float(np.exp(np.max(logp[a:b, int(tok)]))) if a < b else 0.0)
    return out


def span_confidence(logp: np.ndarray, token_ids: Sequence[int], start: int, end: int) -> float:
    """The lowest, over ``token_ids`` (a word's pieces), of each piece's highest posterior
    within frames [start, end) of ``logp`` (F, V); 0.0 for an empty span."""
    a, b = max(0, start), min(logp.shape[0], max(end, start + 1))
    if a >= b or not len(token_ids):
        return 0.0
    return float(np.exp(np.min(np.max(logp[a:b][:, list(token_ids)], axis=0))))

