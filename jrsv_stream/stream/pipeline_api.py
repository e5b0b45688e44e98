"""The model contract the live path codes against, state gather/scatter, and the character token table.

A :class:`StreamingPipeline` turns fixed chunks of 16 kHz audio for ``B`` streams into
per-track CTC log-probs and activity probabilities, carrying an explicit state (a
NamedTuple of batch-first tensors, nested NamedTuples/tuples/dicts allowed, every leaf
``(B, ...)`` with a fixed shape after the batch dimension). The batching worker keeps one
such state with ``B = capacity`` as a slot pool and moves rows in and out with
:func:`gather_state` / :func:`scatter_state`.

The contract does not know its implementations: :class:`jrsv_stream.nn.tiny.TinyPipeline`
(small, random, for tests and plumbing) and the trained pipelines of
:mod:`jrsv_stream.nn.pipeline` implement it, and :mod:`jrsv_stream.nn.loader` loads one
by name (``load_pipeline``, ``default_pipeline_spec``).
"""

from __future__ import annotations

import string
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import torch

TRACKS: tuple[str, ...] = ("speech", "lyrics")


class PipelineOutput(NamedTuple):
    """One step of a pipeline for ``B`` streams (``F`` frames of this chunk).

    logp: track -> (B, F, V) CTC log-probabilities.
    activity: track -> (B, F) probability that the track's source is active.
    encoder_out: optional track -> (B, F, D) encoder frames, kept by sessions only when the
        pipeline has a ``rescore_fn`` (attention rescoring of finals needs them).
    track_audio: optional track -> (B, chunk_samples) audio the recognizer heard this chunk
        (the separated track), on the frames' time base; kept by sessions only when the
        pipeline has a ``final_fn`` (finals decoded from the segment's audio need it).
        A track heard several ways has (B, chunk_samples, K) (consensus speech finals: K = 2,
        mixture and separated); sessions keep it as is and hand it to ``final_fn``.
    ahead_logp / ahead_audio: optional track -> (B, F', V) / (B, F' * frame samples): a
        recognizer with lookahead emits each chunk's frames a step late; these are the
        newest chunk's provisional log-probs and audio (the next step emits the frames
        again). Incremental finals' hypotheses read them to hear the newest audio.
    """

    logp: dict[str, torch.Tensor]
    activity: dict[str, torch.Tensor]
    encoder_out: dict[str, torch.Tensor] | None = None
    track_audio: dict[str, torch.Tensor] | None = None
    ahead_logp: dict[str, torch.Tensor] | None = None
    ahead_audio: dict[str, torch.Tensor] | None = None


@runtime_checkable
class Tokenizer(Protocol):
    """What the live path needs from a token table (the interface of
    :class:`jrsv_stream.decode.tokenizer.Tokenizer`: a piece starting with ``"▁"`` begins a
    word; id ``blank_id`` is the CTC blank)."""

    blank_id: int
    vocab_size: int

    def decode(self, ids: Sequence[int]) -> str: ...

    def is_word_start(self, token_id: int) -> bool: ...


class FinalFn(Protocol):
    def __call__(self, track: str, audio: Any, logp: Any, ctc_text: str) -> Any:
        """The final of an endpointed segment from its track audio (N,) float32, its
        (gated) CTC log-probs (F, V) and the CTC beam's best text: an object with ``text``
        (display text), ``words`` (``(word, start_frame, end_frame)`` relative to the
        segment) and ``source``, or None for no final (nothing was heard). Runs on the
        worker's finals lane (:meth:`BatchWorker.call_final`)."""
        ...


class RescoreFn(Protocol):
    def __call__(self, track: str, encoder_out: torch.Tensor, hyps: list[list[int]]) -> Any:
        """Attention-decoder log-probability of each hypothesis (token ids, no blank) given
        the segment's encoder frames ``encoder_out`` (T, D): an (N,) array, or (N, 2)
        (left-to-right, right-to-left) - the ``attention_score_fn`` of
        :func:`jrsv_stream.decode.rescoring.attention_rescore`. Runs on the worker thread."""
        ...


@runtime_checkable
class StreamingPipeline(Protocol):
    """The contract (see module docstring). ``step`` never mutates ``audio`` or ``state``."""

    sample_rate: int
    chunk_samples: int
    frame_shift_s: float
    algorithmic_latency_ms: float
    tracks: tuple[str, ...]
    tokenizer: Tokenizer
    rescore_fn: RescoreFn | None
    # Optional attributes (read with getattr):
    # frame_offset_s: float = 0.0 - audio time of output frame 0 in seconds, negative when
    #     the model delays its output (e.g. a separator's output delay).
    # last_stage_ms: dict[str, float] - set by ``step``: wall ms per stage of the last batch
    #     (e.g. {"separator": 2.1, "encoder": 3.4}); reported in stats and the latency
    #     benchmark. On CUDA the pipeline must synchronize to time stages (only if asked).
    # lm: TokenNgramLM | None - the recognizer's LM; sessions fuse it into their beam search.
    # final_fn: FinalFn | None - finals from the segment's track audio (``track_audio`` in
    #     the outputs); when set, sessions use it instead of ``rescore_fn``.
    # hypothesis_fn: FinalFn | None - incremental finals' hypotheses of an open segment (a
    #     greedy final_fn whose words carry the decoder's confidence); default: final_fn.
    # hypothesis_draft: bool = False - hypothesis_fn takes a 7th argument ``draft``: the
    #     previous hypothesis' words after the committed ones (what it will likely write
    #     again: a speculative decoder checks them in one pass).

    def init_state(self, batch: int, device: torch.device | str) -> Any: ...

    def step(self, audio: torch.Tensor, state: Any) -> tuple[PipelineOutput, Any]: ...


# ---------------------------------------------------------------------- state helpers
def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor leaf of a nested NamedTuple / tuple / list / dict."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(map_state(fn, s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, s) for s in state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if state is None:
        return None
    raise TypeError(f"state leaves must be tensors (or None), got {type(state).__name__}")


def state_leaves(state: Any) -> list[torch.Tensor]:
    """All tensor leaves, in a fixed traversal order."""
    out: list[torch.Tensor] = []
    map_state(lambda t: out.append(t) or t, state)
    return out


def gather_state(state: Any, idx: torch.Tensor) -> Any:
    """Rows ``idx`` (long (n,)) of every leaf: (B, ...) -> (n, ...) (new tensors)."""
    return map_state(lambda t: t.index_select(0, idx.to(t.device)), state)


def scatter_state(dst: Any, idx: torch.Tensor, src: Any) -> None:
    """In place: rows ``idx`` of every leaf of ``dst`` ((B, ...)) <- ``src`` ((n, ...)).

    ``dst`` and ``src`` must have the same structure; only the pool owner calls this.
    """
    d, s = state_leaves(dst), state_leaves(src)
    if len(d) != len(s):
        raise ValueError(f"state structures differ: {len(d)} vs {len(s)} leaves")
    for a, b in zip(d, s):
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"state leaf shape {tuple(b.shape)} does not fit pool leaf {tuple(a.shape)}")
        a.index_copy_(0, idx.to(a.device), b.to(device=a.device, dtype=a.dtype))


def state_batch_size(state: Any) -> int:
    leaves = state_leaves(state)
    return leaves[0].shape[0] if leaves else 0


# ---------------------------------------------------------------------- token table
class CharTokenizer:
    """Character token table with the :class:`jrsv_stream.decode.tokenizer.Tokenizer`
    interface: 0 = blank, 1 = ``"▁"`` (word boundary), then ``a-z`` and ``'``."""

    PIECES: tuple[str, ...] = ("<blank>", "\u2581", *string.ascii_lowercase, "'")
    blank_id = 0
    vocab_size = len(PIECES)

    def piece(self, token_id: int) -> str:
        return self.PIECES[token_id]

    def is_word_start(self, token_id: int) -> bool:
        return token_id == 1

    def is_special(self, token_id: int) -> bool:
        return token_id == 0

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join("".join(" " if i == 1 else self.PIECES[i] for i in ids if i != 0).split())

    def encode(self, text: str) -> list[int]:
        table = {p: i for i, p in enumerate(self.PIECES)}
        return [1 if c == " " else table[c] for c in " ".join(text.lower().split()) if c == " " or c in table]
