"""The model contract: TinyPipeline streams exactly like its offline forward, is causal,
and gather/scatter move nested batch-first states row by row."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from jrsv_stream.nn.loader import load_pipeline
from jrsv_stream.nn.tiny import TinyPipeline
from jrsv_stream.stream.pipeline_api import (CharTokenizer, PipelineOutput, StreamingPipeline, gather_state, map_state,
                                             scatter_state, state_batch_size)
from tests.streaming_helpers import assert_causal


def _run_steps(p: TinyPipeline, audio: torch.Tensor) -> PipelineOutput:
    state = p.init_state(audio.shape[0])
    outs = []
    with torch.no_grad():
        for a in range(0, audio.shape[1], p.chunk_samples):
            o, state = p.step(audio[:, a:a + p.chunk_samples], state)
            outs.append(o)
    return PipelineOutput({t: torch.cat([o.logp[t] for o in outs], 1) for t in p.tracks},
                          {t: torch.cat([o.activity[t] for o in outs], 1) for t in p.tracks})


@pytest.mark.parametrize("chunk_samples", [640, 1920, 5120])
def test_tiny_pipeline_steps_equal_forward(chunk_samples):
    torch.manual_seed(0)
    p = TinyPipeline(chunk_samples=chunk_samples)
    audio = 0.1 * torch.randn(2, 5120 * 3)
    with torch.no_grad():
        ref = p(audio)
    got = _run_steps(p, audio)
    for t in p.tracks:
        assert got.logp[t].shape == ref.logp[t].shape == (2, 24, p.tokenizer.vocab_size)
        assert torch.allclose(got.logp[t], ref.logp[t], atol=1e-5)
        assert torch.allclose(got.activity[t], ref.activity[t], atol=1e-6)


def test_tiny_pipeline_is_causal_and_declares_its_sizes():
    p = TinyPipeline()
    assert isinstance(p, StreamingPipeline)
    assert p.sample_rate == 16000 and p.frame_shift_s == 0.04 and p.tracks == ("speech", "lyrics")
    assert p.algorithmic_latency_ms == 320.0 and p.rescore_fn is None
    x = 0.1 * torch.randn(1, 640 * 20)
    assert_causal(lambda a: p(a).logp["speech"].transpose(1, 2), x, t=640 * 10, out_scale=640)


def test_tiny_pipeline_weights_are_deterministic_and_output_is_sparse_ctc():
    a, b = TinyPipeline(seed=3), TinyPipeline(seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    x = 0.1 * torch.randn(1, 16000 * 2)
    with torch.no_grad():
        o = a(x)
    lp = o.logp["speech"][0]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(lp.shape[0]), atol=1e-4)
    nonblank = (lp.argmax(-1) != 0).float().mean().item()
    assert 0.05 < nonblank < 0.9  # some tokens, many blanks
    # silence -> inactive, signal -> active (activity follows frame energy)
    with torch.no_grad():
        assert a(torch.zeros(1, 6400)).activity["speech"].max() < 0.05
        assert o.activity["speech"].mean() > 0.9


def test_step_rejects_wrong_chunk_shape():
    p = TinyPipeline()
    with pytest.raises(ValueError, match="expected audio"):
        p.step(torch.zeros(1, 100), p.init_state(1))


class Inner(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


class Outer(NamedTuple):
    inner: Inner
    caches: tuple
    d: dict


def _state(B: int, fill: float) -> Outer:
    return Outer(Inner(torch.full((B, 3), fill), torch.full((B, 2, 2), fill)), (torch.full((B, 1), fill),),
                 {"x": torch.full((B, 4), fill)})


def test_gather_scatter_nested_state():
    pool = _state(5, 0.0)
    for i in range(5):
        scatter_state(pool, torch.tensor([i]), _state(1, float(i)))
    g = gather_state(pool, torch.tensor([4, 1]))
    assert isinstance(g, Outer) and isinstance(g.inner, Inner) and state_batch_size(g) == 2
    assert g.inner.b[:, 0, 0].tolist() == [4.0, 1.0] and g.d["x"][:, 0].tolist() == [4.0, 1.0]
    g2 = map_state(lambda t: t + 10, g)
    scatter_state(pool, torch.tensor([0, 2]), g2)
    assert pool.caches[0][:, 0].tolist() == [14.0, 1.0, 11.0, 3.0, 4.0]
    with pytest.raises(ValueError):
        scatter_state(pool, torch.tensor([0]), Outer(Inner(torch.zeros(1, 4), torch.zeros(1, 2, 2)), (torch.zeros(1, 1),),
                                                     {"x": torch.zeros(1, 4)}))
    with pytest.raises(TypeError):
        map_state(lambda t: t, (torch.zeros(1), "not a tensor"))


def test_tiny_state_gathers_like_any_state():
    p = TinyPipeline()
    s = p.init_state(4)
    g = gather_state(s, torch.tensor([1, 3]))
    assert state_batch_size(g) == 2 and g.mean.shape == (2, p.channels)


def test_char_tokenizer_has_the_decode_tokenizer_interface():
    tok = CharTokenizer()
    ids = tok.encode("Hello  world")
    assert tok.decode(ids) == "hello world"
    assert tok.is_word_start(1) and not tok.is_word_start(ids[0]) and tok.is_special(0)
    assert tok.piece(1) == "\u2581" and tok.vocab_size == 29 and tok.blank_id == 0


def test_load_pipeline():
    assert isinstance(load_pipeline("tiny", 1280), TinyPipeline)
    assert load_pipeline("tiny", 1280).chunk_samples == 1280
    with pytest.raises((ValueError, OSError)):
        load_pipeline("/nonexistent/model")


def test_default_pipeline_prefers_whisper_then_the_joint_pair_then_the_cascade_then_tiny(tmp_path, monkeypatch):
    from jrsv_stream.nn.loader import default_pipeline_spec

    monkeypatch.delenv("JRSV_PIPELINE", raising=False)
    root = tmp_path / "models"

    def ship(folder):
        for sub, f in (("separator", "separator.pt"), ("asr", "asr.pt")):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            (folder / sub / f).write_bytes(b"x")

    assert default_pipeline_spec(str(root)) == "tiny"
    ship(root)
    assert default_pipeline_spec(str(root)) == str(root)
    (root / "jrsv" / "asr").mkdir(parents=True)  # incomplete: still the cascade
    assert default_pipeline_spec(str(root)) == str(root)
    ship(root / "jrsv")
    assert default_pipeline_spec(str(root)) == str(root / "jrsv")
    (root / "default").mkdir()
    (root / "default" / "pipeline.yaml").write_text("separator: ../separator\nasr: ../whisper_ctc\n")
    assert default_pipeline_spec(str(root)) == str(root / "jrsv")  # no trained head yet
    (root / "whisper_ctc").mkdir()
    (root / "whisper_ctc" / "ctc_head.pt").write_bytes(b"x")
    assert default_pipeline_spec(str(root)) == str(root / "default")
    monkeypatch.setenv("JRSV_PIPELINE", "elsewhere")
    assert default_pipeline_spec(str(root)) == "elsewhere"
