"""Streaming CTC prefix beam search as an explicit CPU state machine.

One code path (shared/DESIGN.md, principle 2): :func:`prefix_beam_step` consumes a chunk of
CTC log-probs and returns a new :class:`PrefixBeamState`; :func:`prefix_beam_search` is
that step applied chunk by chunk, so offline == streaming by construction (frames are
processed one at a time inside a step; a chunk boundary changes nothing).

Per frame ``t`` and hypothesis (prefix ``l``, ``logp_blank`` = log p(l, path ends in
blank), ``logp_nonblank`` = log p(l, path ends in l's last token)):

- blank: ``l`` -> ``l`` ending in blank, ``+ logp[t, blank]``;
- the last token again: ``l`` ending in a token stays ``l`` (CTC collapses repeats); always
  taken, even when the token is outside the frame's top-k;
- a token ``c`` among the frame's candidates: ``l + (c,)``; when ``c`` is ``l``'s last
  token only paths ending in blank may extend (otherwise the repeat collapses).

Pruning (all per frame, independent of chunking): candidates are the ``top_k`` tokens by
log-prob that are within ``prune_threshold`` of the frame's best log-prob; the ``beam``
best prefixes survive; a frame whose blank probability exceeds ``blank_skip_prob`` only
updates the blank / repeat scores of the surviving prefixes (no extension), which is
nearly free and drops paths of probability < ``1 - blank_skip_prob`` per frame.

Token timestamps: a hypothesis keeps, per token, the frame where it was first emitted on
its dominant path (when several paths merge into one prefix, the times of the most
probable contribution are kept). With peaky CTC this is the token's spike frame.

Hotword biasing (:mod:`jrsv_stream.decode.context`): a prefix carries its context-graph
node and accumulated bonus; ranking inside the beam uses ``logp + bonus`` (so a hotword in
progress survives), and :func:`best` / :func:`nbest` finalize the bonus (an unfinished
hotword gives its bonus back).

Language-model shallow fusion (:mod:`jrsv_stream.decode.ngram_lm`): with ``config.lm``
set, extending a prefix by token ``c`` adds ``lm_weight * log P_lm(c | prefix) +
token_bonus`` to the prefix's ``lm_score`` (a function of the prefix alone, so merged paths
agree on it); ranking and :attr:`Hypothesis.score` include it.

The caller copies each batched chunk of log-probs to the CPU once (``.cpu().numpy()``)
and hands each stream its ``(F, V)`` slice; no ``.item()`` per token anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from jrsv_stream.decode.context import ROOT, ContextGraph, build_context_graph

if TYPE_CHECKING:
    from jrsv_stream.decode.ngram_lm import TokenNgramLM

NEG_INF = float("-inf")
# Rolling hash of a prefix: h(()) = 0, h(l + (c,)) = (h(l) * BASE + c + 1) mod MOD. Equal
# hashes are confirmed by comparing the tokens, so a collision costs time, never accuracy.
_HASH_MOD = (1 << 61) - 1
_HASH_BASE = 1_000_003


@dataclass(frozen=True)
class PrefixBeamConfig:
    """Prefix beam search settings.

    Attributes:
        beam: prefixes kept after each frame.
        top_k: candidate tokens per frame (blank excluded), by log-prob.
        prune_threshold: candidates must be within this many nats of the frame's best
            log-prob (``inf`` disables).
        blank_skip_prob: frames with blank probability above this only update the
            blank/repeat scores (None disables; exact search needs None).
        nbest: hypotheses :func:`nbest` returns by default (handed to rescoring); <= beam.
        blank_id: CTC blank index.
        hotwords: token-id sequences to favour (:mod:`jrsv_stream.decode.context`).
        context_score: bonus per matched hotword token (nats).
        hotword_scores: optional bonus per matched token of each hotword (same length as
            ``hotwords``; empty: ``context_score`` for all).
        lm: token n-gram LM for shallow fusion (None: no LM). Not part of equality/hash.
        lm_weight: LM weight (None: the LM's own tuned ``weight``).
        token_bonus: bonus per emitted token with an LM (None: the LM's ``token_bonus``).
    """

    beam: int = 10
    top_k: int = 10
    prune_threshold: float = 10.0
    blank_skip_prob: float | None = 0.999
    nbest: int = 10
    blank_id: int = 0
    hotwords: tuple[tuple[int, ...], ...] = ()
    context_score: float = 3.0
    hotword_scores: tuple[float, ...] = ()
    lm: "TokenNgramLM | None" = field(default=None, compare=False, repr=False)
    lm_weight: float | None = None
    token_bonus: float | None = None

    def __post_init__(self):
        if self.beam < 1 or self.top_k < 1 or self.nbest < 1:
            raise ValueError(f"beam, top_k and nbest must be >= 1: {self}")
        if self.nbest > self.beam:
            raise ValueError(f"nbest ({self.nbest}) must be <= beam ({self.beam})")
        if not self.prune_threshold > 0:
            raise ValueError(f"prune_threshold must be > 0, got {self.prune_threshold}")
        if self.blank_skip_prob is not None and not 0.0 < self.blank_skip_prob < 1.0:
            raise ValueError(f"blank_skip_prob must be in (0, 1) or None, got {self.blank_skip_prob}")
        if self.blank_id < 0:
            raise ValueError(f"blank_id must be >= 0, got {self.blank_id}")
        if self.context_score < 0:
            raise ValueError(f"context_score must be >= 0, got {self.context_score}")
        if self.lm_weight is not None and self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")
        # Lists from YAML/JSON become tuples so the config stays hashable (graph cache key).
        object.__setattr__(self, "hotwords", tuple(tuple(int(t) for t in h) for h in self.hotwords))
        object.__setattr__(self, "hotword_scores", tuple(float(x) for x in self.hotword_scores))
        if self.hotword_scores and len(self.hotword_scores) != len(self.hotwords):
            raise ValueError(f"{len(self.hotword_scores)} hotword_scores for {len(self.hotwords)} hotwords")

    @property
    def context_graph(self) -> ContextGraph | None:
        return build_context_graph(self.hotwords, float(self.context_score), self.hotword_scores or None)

    @property
    def fusion(self) -> tuple["TokenNgramLM", float, float] | None:
        """``(lm, weight, token_bonus)`` when shallow fusion is on, else None."""
        if self.lm is None:
            return None
        w = self.lm.weight if self.lm_weight is None else float(self.lm_weight)
        b = self.lm.token_bonus if self.token_bonus is None else float(self.token_bonus)
        return None if w == 0.0 and b == 0.0 else (self.lm, w, b)


class BeamHyp(NamedTuple):
    """One prefix in the beam.

    Attributes:
        tokens: the label prefix (no blanks, repeats collapsed).
        logp_blank: log p(prefix, path ends in blank) over frames seen so far.
        logp_nonblank: log p(prefix, path ends in its last token).
        token_frames: absolute frame index of each token's first emission (len == tokens).
        context_node: hotword graph node (0 = root / no match in progress).
        context_score: hotword bonus accumulated so far (not finalized).
        prefix_hash: rolling hash of ``tokens`` (identifies the prefix in O(1); see
            :func:`prefix_hash`).
        lm_score: shallow-fusion score of ``tokens`` (weighted LM log-prob + token bonuses).
    """

    tokens: tuple[int, ...]
    logp_blank: float
    logp_nonblank: float
    token_frames: tuple[int, ...]
    context_node: int = ROOT
    context_score: float = 0.0
    prefix_hash: int = 0
    lm_score: float = 0.0

    @property
    def logp(self) -> float:
        """log p(prefix) = logaddexp(logp_blank, logp_nonblank)."""
        return _logaddexp(self.logp_blank, self.logp_nonblank)


class PrefixBeamState(NamedTuple):
    """Decoder state of one stream (plain Python data; never mutated).

    Attributes:
        hyps: surviving prefixes, best first by ``logp + context_score``.
        num_frames: absolute index of the next frame (frames consumed, counting the
            ``start_frame`` given to :func:`init_state`).
        trailing_blank_frames: consecutive most recent frames whose argmax is blank.
    """

    hyps: tuple[BeamHyp, ...]
    num_frames: int
    trailing_blank_frames: int


class Hypothesis(NamedTuple):
    """A decoding result.

    Attributes:
        tokens: label sequence.
        score: ranking score = ``ctc_logp + context_score + lm_score`` (finalized bonus).
        token_frames: absolute frame of each token (see module doc).
        ctc_logp: log p(tokens | frames so far) of the CTC search (the prefix probability).
        context_score: finalized hotword bonus included in ``score``.
        lm_score: shallow-fusion score included in ``score`` (0 without an LM).
    """

    tokens: tuple[int, ...]
    score: float
    token_frames: tuple[int, ...]
    ctc_logp: float | None = None
    context_score: float = 0.0
    lm_score: float = 0.0


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def prefix_hash(tokens: tuple[int, ...]) -> int:
    """The rolling hash :class:`BeamHyp` keeps for ``tokens``."""
    h = 0
    for c in tokens:
        h = (h * _HASH_BASE + int(c) + 1) % _HASH_MOD
    return h


def init_state(config: PrefixBeamConfig | None = None, start_frame: int = 0) -> PrefixBeamState:
    """Empty-prefix state.

    Args:
        config: unused (kept for the ``init_state`` / ``step`` symmetry of streaming modules).
        start_frame: absolute index of the first frame (token timestamps count from 0 at
            the stream start; pass the stream position when restarting after an endpoint).
    """
    return PrefixBeamState(hyps=(BeamHyp((), 0.0, NEG_INF, ()),), num_frames=int(start_frame),
                           trailing_blank_frames=0)


def _same(src_a: tuple[int, ...], ext_a: int, src_b: tuple[int, ...], ext_b: int) -> bool:
    """``src_a + (ext_a,)`` == ``src_b + (ext_b,)`` (ext -1: nothing appended), no copy of
    the common part except on a parent/child match."""
    if len(src_a) + (ext_a >= 0) != len(src_b) + (ext_b >= 0):
        return False
    if (ext_a >= 0) == (ext_b >= 0):
        return ext_a == ext_b and src_a == src_b
    if ext_a >= 0:
        return src_b[-1] == ext_a and src_b[:-1] == src_a
    return src_a[-1] == ext_b and src_a[:-1] == src_b


def _entry_rank(e: list) -> float:
    return _logaddexp(e[0], e[1]) + e[8] + e[10]


def _rank(h: BeamHyp) -> float:
    return _logaddexp(h.logp_blank, h.logp_nonblank) + h.context_score + h.lm_score


def prefix_beam_step(state: PrefixBeamState, logp_chunk: np.ndarray,
                     config: PrefixBeamConfig = PrefixBeamConfig()) -> PrefixBeamState:
    """Consume a chunk of CTC log-probs.

    Args:
        state: state after the previous chunk (not modified).
        logp_chunk: (F, V) log-probabilities (log-softmax output) of F new frames; F may
            be 0. float32 or float64; converted to float64 once.
        config: search settings.

    Returns:
        The new state.

    Raises:
        ValueError: ``logp_chunk`` is not 2-D or ``blank_id >= V``.
    """
    logp = np.asarray(logp_chunk, dtype=np.float64)
    if logp.ndim != 2:
        raise ValueError(f"logp_chunk must be (F, V), got shape {logp.shape}")
    num_chunk_frames, vocab = logp.shape
    if num_chunk_frames == 0:
        return state
    blank = config.blank_id
    if blank >= vocab:
        raise ValueError(f"blank_id {blank} >= vocabulary size {vocab}")

    # One pass of numpy per chunk; the frame loop below sees only Python lists.
    argmax_blank = (logp.argmax(axis=1) == blank).tolist()
    blank_logp = logp[:, blank].tolist()
    nonblank = logp.copy()
    nonblank[:, blank] = NEG_INF
    k = min(config.top_k, vocab - 1)
    if k > 0:
        top_idx = np.argpartition(nonblank, vocab - k, axis=1)[:, vocab - k:]
    else:
        top_idx = np.zeros((num_chunk_frames, 0), dtype=np.int64)
    top_idx.sort(axis=1)  # process candidates in token-id order: deterministic
    top_val = np.take_along_axis(nonblank, top_idx, axis=1)
    keep = (top_val > NEG_INF) & (top_val >= logp.max(axis=1, keepdims=True) - config.prune_threshold)
    cand_idx, cand_val, keep_l = top_idx.tolist(), top_val.tolist(), keep.tolist()
    skip_logp = math.log(config.blank_skip_prob) if config.blank_skip_prob is not None else math.inf

    graph = config.context_graph
    fusion = config.fusion
    beam = config.beam
    hyps = state.hyps
    frame0 = state.num_frames
    trailing = state.trailing_blank_frames

    for t in range(num_chunk_frames):
        abs_t = frame0 + t
        lp_blank = blank_logp[t]
        row = logp[t]
        trailing = trailing + 1 if argmax_blank[t] else 0

        if lp_blank > skip_logp:
            # Blank skipping: no extension, only blank and repeat-of-last updates.
            new = []
            for h in hyps:
                tokens = h.tokens
                pnb = h.logp_nonblank
                new.append(BeamHyp(tokens, _logaddexp(h.logp_blank, pnb) + lp_blank,
                                   pnb + float(row[tokens[-1]]) if tokens else NEG_INF,
                                   h.token_frames, h.context_node, h.context_score, h.prefix_hash, h.lm_score))
            new.sort(key=_rank, reverse=True)
            hyps = tuple(new)
            continue

        cands = [(c, v) for c, v, kp in zip(cand_idx[t], cand_val[t], keep_l[t]) if kp]
        # Entries of the next beam, keyed by the prefix's rolling hash (O(1), not O(length)).
        # An entry describes its prefix as src + (ext,) (ext -1: src itself) and its token
        # frames as fsrc + (ft,) (ft -1: fsrc); tuples are built only for the survivors.
        # [logp_blank, logp_nonblank, best contribution, src, ext, fsrc, ft, node, bonus, hash, lm]
        nxt: dict = {}
        for h in hyps:
            tokens = h.tokens
            pb, pnb = h.logp_blank, h.logp_nonblank
            total = _logaddexp(pb, pnb)
            last = tokens[-1] if tokens else -1
            stay_b = total + lp_blank
            stay_nb = pnb + float(row[last]) if tokens else NEG_INF
            stay = _logaddexp(stay_b, stay_nb)
            key = h.prefix_hash
            e = nxt.get(key)
            if e is not None and not _same(e[3], e[4], tokens, -1):
                key = tokens  # hash collision: key by the tuple itself
                e = nxt.get(key)
            if e is None:
                nxt[key] = [stay_b, stay_nb, stay, tokens, -1, h.token_frames, -1, h.context_node,
                            h.context_score, h.prefix_hash, h.lm_score]
            else:
                e[0] = _logaddexp(e[0], stay_b)
                e[1] = _logaddexp(e[1], stay_nb)
                if stay > e[2]:
                    e[2], e[5], e[6] = stay, h.token_frames, -1
            lm_row = fusion[0].logprobs(fusion[0].context_of(tokens)) if fusion is not None and cands else None
            for c, lp_c in cands:
                v = (pb if c == last else total) + lp_c
                if v == NEG_INF:
                    continue
                key = ext_hash = (h.prefix_hash * _HASH_BASE + c + 1) % _HASH_MOD
                e = nxt.get(key)
                if e is not None and not _same(e[3], e[4], tokens, c):
                    key = tokens + (c,)
                    e = nxt.get(key)
                if e is None:
                    if graph is None:
                        node, bonus = ROOT, 0.0
                    else:
                        delta, node = graph.forward(h.context_node, c)
                        bonus = h.context_score + delta
                    lm = h.lm_score if lm_row is None else h.lm_score + fusion[1] * float(lm_row[c]) + fusion[2]
                    nxt[key] = [NEG_INF, v, v, tokens, c, h.token_frames, abs_t, node, bonus, ext_hash, lm]
                else:
                    e[1] = _logaddexp(e[1], v)
                    if v > e[2]:
                        e[2], e[5], e[6] = v, h.token_frames, abs_t
        entries = sorted(nxt.values(), key=_entry_rank, reverse=True)[:beam]
        hyps = tuple(BeamHyp(e[3] if e[4] < 0 else e[3] + (e[4],), e[0], e[1],
                             e[5] if e[6] < 0 else e[5] + (e[6],), e[7], e[8], e[9], e[10]) for e in entries)

    return PrefixBeamState(hyps=hyps, num_frames=frame0 + num_chunk_frames, trailing_blank_frames=trailing)


def _finalized(h: BeamHyp, graph: ContextGraph | None) -> Hypothesis:
    ctc = h.logp
    bonus = h.context_score + (graph.finalize(h.context_node) if graph is not None else 0.0)
    return Hypothesis(h.tokens, ctc + bonus + h.lm_score, h.token_frames, ctc, bonus, h.lm_score)


def nbest(state: PrefixBeamState, n: int | None = None,
          config: PrefixBeamConfig = PrefixBeamConfig()) -> list[Hypothesis]:
    """The ``n`` best hypotheses (default ``config.nbest``), best first, bonuses finalized.

    Args:
        state: decoder state.
        n: how many (at most the beam size).
        config: the config the state was decoded with (its hotword graph finalizes bonuses).
    """
    n = config.nbest if n is None else n
    graph = config.context_graph
    out = [_finalized(h, graph) for h in state.hyps]
    out.sort(key=lambda h: h.score, reverse=True)
    return out[:n]


def best(state: PrefixBeamState, config: PrefixBeamConfig = PrefixBeamConfig()) -> Hypothesis:
    """The best hypothesis (the partial caption after each chunk)."""
    return nbest(state, 1, config)[0]


def prefix_beam_search(logp: np.ndarray, config: PrefixBeamConfig = PrefixBeamConfig(),
                       chunk_frames: int | None = None, start_frame: int = 0) -> PrefixBeamState:
    """Offline search = :func:`prefix_beam_step` over chunks of ``chunk_frames``.

    Args:
        logp: (T, V) CTC log-probabilities of one utterance.
        config: search settings.
        chunk_frames: frames per step (None: one step over all frames). The result does
            not depend on it.
        start_frame: absolute index of frame 0.

    Returns:
        The final state; read results with :func:`best` / :func:`nbest`.
    """
    logp = np.asarray(logp, dtype=np.float64)
    if logp.ndim != 2:
        raise ValueError(f"logp must be (T, V), got shape {logp.shape}")
    state = init_state(config, start_frame)
    step = logp.shape[0] if not chunk_frames else int(chunk_frames)
    if step < 1:
        return state
    for a in range(0, logp.shape[0], step):
        state = prefix_beam_step(state, logp[a:a + step], config)
    return state


def ctc_greedy(logp: np.ndarray, blank_id: int = 0, start_frame: int = 0) -> Hypothesis:
    """Best-path decoding: argmax per frame, collapse repeats, drop blanks.

    Args:
        logp: (T, V) log-probabilities.
        blank_id: CTC blank index.
        start_frame: absolute index of frame 0.

    Returns:
        Hypothesis with ``score`` = log-prob of the best path (not the sequence's total
        probability) and ``token_frames`` = first frame of each token's run.
    """
    logp = np.asarray(logp, dtype=np.float64)
    if logp.ndim != 2:
        raise ValueError(f"logp must be (T, V), got shape {logp.shape}")
    if logp.shape[0] == 0:
        return Hypothesis((), 0.0, (), 0.0, 0.0)
    path = logp.argmax(axis=1)
    score = float(logp[np.arange(len(path)), path].sum())
    starts = np.ones(len(path), dtype=bool)
    starts[1:] = path[1:] != path[:-1]
    emit = starts & (path != blank_id)
    frames = np.nonzero(emit)[0]
    return Hypothesis(tuple(path[frames].tolist()), score, tuple((frames + start_frame).tolist()), score, 0.0)
