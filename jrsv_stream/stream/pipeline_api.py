"""The model contract the live path codes against, state gather/scatter, and TinyPipeline.

A :class:`StreamingPipeline` turns fixed chunks of 16 kHz audio for ``B`` streams into
per-track CTC log-probs and activity probabilities, carrying an explicit state (a
NamedTuple of batch-first tensors, nested NamedTuples/tuples/dicts allowed, every leaf
``(B, ...)`` with a fixed shape after the batch dimension). The batching worker keeps one
such state with ``B = capacity`` as a slot pool and moves rows in and out with
:func:`gather_state` / :func:`scatter_state`.

:class:`TinyPipeline` is a real, small, randomly initialised causal model that implements
the contract (framing -> causal conv stack -> per-track CTC heads and activity); tests
and benchmarks use it until the trained separator + recognizer pipeline is shipped. Its
captions are random characters: numbers measured with it are plumbing only.
"""

from __future__ import annotations

import string
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.nn.streaming import CausalConv1d, ConvState

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
    """

    logp: dict[str, torch.Tensor]
    activity: dict[str, torch.Tensor]
    encoder_out: dict[str, torch.Tensor] | None = None
    track_audio: dict[str, torch.Tensor] | None = None


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


# ---------------------------------------------------------------------- TinyPipeline
class TinyState(NamedTuple):
    """State of :class:`TinyPipeline`.

    convs: one :class:`ConvState` per conv layer, cache (B, C, (K-1)*dilation).
    mean: (B, C) running (exponential) mean of the conv features, removed before the heads.
    """

    convs: tuple[ConvState, ...]
    mean: torch.Tensor


class TinyPipeline(nn.Module):
    """Small random causal model implementing :class:`StreamingPipeline`.

    Non-overlapping frames of ``frame_shift_samples`` -> linear projection + log energy ->
    a stack of :class:`CausalConv1d` (dilations 1, 2, 4, ...) -> minus a causal running
    mean, normalized per frame -> per track a CTC head over
    :class:`CharTokenizer` (blank-biased, so output is sparse like a real CTC model) and an
    activity head driven by the frame energy (silence -> inactive).

    Strictly causal; algorithmic latency = one chunk (a frame is output once its chunk is
    complete). Shapes: ``forward((B, T)) -> PipelineOutput`` with ``F = T // frame_shift``.
    """

    def __init__(self, chunk_samples: int = 5120, frame_shift_samples: int = 640, channels: int = 64,
                 layers: int = 3, kernel_size: int = 3, blank_bias: float = 6.0, seed: int = 0):
        super().__init__()
        if chunk_samples % frame_shift_samples:
            raise ValueError(f"chunk_samples {chunk_samples} must be a multiple of frame_shift_samples {frame_shift_samples}")
        self.sample_rate = SAMPLE_RATE
        self.chunk_samples = int(chunk_samples)
        self.frame_shift_samples = int(frame_shift_samples)
        self.frame_shift_s = frame_shift_samples / SAMPLE_RATE
        self.algorithmic_latency_ms = 1000.0 * chunk_samples / SAMPLE_RATE
        self.tracks = TRACKS
        self.tokenizer = CharTokenizer()
        self.rescore_fn = None
        self.channels = int(channels)
        self.ema = 0.9
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(frame_shift_samples, channels)
        self.convs = nn.ModuleList(CausalConv1d(channels + 1 if i == 0 else channels, channels, kernel_size, dilation=2**i)
                                   for i in range(layers))
        self.heads = nn.ModuleDict({t: nn.Conv1d(channels, self.tokenizer.vocab_size, 1) for t in self.tracks})
        self.act_heads = nn.ModuleDict({t: nn.Conv1d(channels, 1, 1) for t in self.tracks})
        with torch.no_grad():
            for p in self.parameters():  # deterministic init independent of the global RNG
                fan_in = p[0].numel() if p.ndim > 1 else 16
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            for h in self.heads.values():
                h.weight.mul_(3.0)
                h.bias[self.tokenizer.blank_id] += blank_bias
                h.bias[1] += 2.5  # word boundaries every few letters
            for h in self.act_heads.values():
                h.weight.mul_(0.05)
                h.bias.zero_()
        self.eval()

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> TinyState:
        return TinyState(tuple(c.init_state(batch, device) for c in self.convs),
                         torch.zeros(batch, self.channels, device=device))

    def _center(self, h: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove a causal running mean per channel and normalize per frame, so random
        weights give frame-dependent (varied) outputs. h (B, C, F), mean (B, C)."""
        out = []
        for t in range(h.shape[-1]):
            mean = self.ema * mean + (1.0 - self.ema) * h[:, :, t]
            out.append(h[:, :, t] - mean)
        hc = torch.stack(out, dim=-1)
        return hc / (hc.pow(2).mean(1, keepdim=True).sqrt() + 1e-3), mean

    def _frames(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = audio.shape
        fr = audio[:, : T - T % self.frame_shift_samples].reshape(B, -1, self.frame_shift_samples)  # (B, F, hop)
        energy_db = 10.0 * torch.log10(fr.pow(2).mean(-1) + 1e-10)  # (B, F)
        shape = fr / (fr.pow(2).mean(-1, keepdim=True).sqrt() + 1e-3)  # level-free waveform shape
        x = torch.cat([self.proj(shape), (energy_db / 20.0).unsqueeze(-1)], dim=-1)  # (B, F, C+1)
        return x.transpose(1, 2), energy_db

    def _heads(self, h: torch.Tensor, energy_db: torch.Tensor) -> PipelineOutput:
        logp = {t: self.heads[t](h).transpose(1, 2).log_softmax(-1) for t in self.tracks}
        gate = (energy_db + 45.0) / 3.0  # ~0 below -50 dBFS, ~1 above -40 dBFS
        act = {t: torch.sigmoid(gate + self.act_heads[t](h)[:, 0]) for t in self.tracks}
        return PipelineOutput(logp, act)

    def forward(self, audio: torch.Tensor) -> PipelineOutput:
        """audio (B, T) -> PipelineOutput with (B, T // hop, V) log-probs and (B, F) activity."""
        x, e = self._frames(audio)
        for c in self.convs:
            x = torch.relu(c(x))
        x, _ = self._center(x, torch.zeros(x.shape[0], self.channels, device=x.device, dtype=x.dtype))
        return self._heads(x, e)

    def step(self, audio: torch.Tensor, state: TinyState) -> tuple[PipelineOutput, TinyState]:
        """audio (B, chunk_samples) -> (PipelineOutput with F = chunk/hop frames, new state)."""
        if audio.ndim != 2 or audio.shape[1] != self.chunk_samples:
            raise ValueError(f"expected audio (B, {self.chunk_samples}), got {tuple(audio.shape)}")
        x, e = self._frames(audio)
        new = []
        for c, s in zip(self.convs, state.convs):
            x, s2 = c.step(x, s)
            x = torch.relu(x)
            new.append(s2)
        x, mean = self._center(x, state.mean)
        return self._heads(x, e), TinyState(tuple(new), mean)


def default_pipeline_spec(models_root: str | None = None) -> str:
    """``$JRSV_PIPELINE`` if set, else the shipped default pipeline: ``models/default/``
    (``pipeline.yaml``: the separator -> Whisper-CTC recognizer on both tracks) when its
    recognizer head is there, else ``models/jrsv/`` (the from-scratch baseline), else
    ``"tiny"`` (untrained: plumbing only). ``models_root``: another ``models/`` folder."""
    import os
    from pathlib import Path

    env = os.environ.get("JRSV_PIPELINE")
    if env:
        return env
    shipped = Path(models_root) if models_root else Path(__file__).resolve().parents[2] / "models"
    default = shipped / "default"
    if (default / "pipeline.yaml").is_file() and (shipped / "whisper_ctc" / "ctc_head.pt").is_file():
        return str(default)
    for folder in (shipped / "jrsv", shipped):
        if (folder / "separator" / "separator.pt").is_file() and (folder / "asr" / "asr.pt").is_file():
            return str(folder)
    return "tiny"


def load_pipeline(spec: str = "tiny", chunk_samples: int | None = None) -> StreamingPipeline:
    """``"tiny"`` -> :class:`TinyPipeline`; a model folder -> the trained pipeline.

    The trained pipeline is built by ``jrsv_stream.nn.pipeline.load_streaming_pipeline``
    (provided with the shipped models), which must return an object with this contract.
    """
    if spec == "tiny":
        return TinyPipeline(**({"chunk_samples": chunk_samples} if chunk_samples else {}))
    try:
        from jrsv_stream.nn.pipeline import load_streaming_pipeline  # type: ignore[attr-defined]
    except ImportError as e:
        raise ValueError(f"pipeline {spec!r}: the trained pipeline loader is not available ({e}); use 'tiny'") from e
    kw = {"chunk_samples": chunk_samples} if chunk_samples else {}
    return load_streaming_pipeline(spec, **kw)
