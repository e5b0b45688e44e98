"""Block-causal streaming Whisper encoder (candidate (b)): steps == offline block-masked
forward in float32 (several chunk sizes, a bounded left context, the 30 s reset policy),
causality at the chunk boundary, LoRA starts as the base and round-trips, bad input refused."""

from __future__ import annotations

import pytest
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.real_corpora import read_librivox_testdata
from jrsv_stream.nn.whisper_blockcausal import BlockCausalWhisper, block_causal_mask
from jrsv_stream.nn.whisper_weights import load_whisper


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_whisper("tiny.en")


@pytest.fixture(scope="module")
def audio():
    p, _ = read_librivox_testdata()[4]
    return torch.from_numpy(load_audio(p))[: 16000 * 2 + 1234]  # not a whole number of chunks


@pytest.mark.parametrize("chunk,left,max_frames", [(16, -1, None), (5, -1, None), (8, 2, None), (4, -1, 12)])
def test_steps_equal_offline(tiny, audio, chunk, left, max_frames):
    """Chunk by chunk with the explicit state == one block-masked forward (float32); the
    last partial chunk is zero-padded in both. max_frames 12 with chunk 4: a reset every 3
    chunks (the > 30 s policy, scaled down)."""
    m = BlockCausalWhisper(tiny.encoder, chunk, left, max_frames).eval()
    with torch.no_grad():
        off = m(audio)
        st = m.init_state(1)
        outs = []
        for i in range(0, len(audio), m.chunk_samples):
            x = torch.nn.functional.pad(audio[i:i + m.chunk_samples], (0, max(0, i + m.chunk_samples - len(audio))))
            y, st = m.step(x[None], st)
            assert y.shape == (1, chunk, 384)
            outs.append(y)
    on = torch.cat(outs, 1)
    n_chunks = -(-len(audio) // m.chunk_samples)
    assert off.shape == on.shape == (1, n_chunks * chunk, 384)
    assert torch.allclose(on, off, atol=1e-4, rtol=1e-4), (on - off).abs().max()
    if left >= 0:
        assert st.keys.shape[2] == left * chunk
    if max_frames:
        assert int(st.pos) <= max_frames
        assert int(st.pos) == (n_chunks - 1) % 3 * chunk + chunk


def test_causal_at_chunk_boundary(tiny, audio):
    """Changing the audio after chunk k leaves every frame of chunks <= k unchanged (also
    through the running-maximum normalization: the new audio is louder) and changes later ones."""
    m = BlockCausalWhisper(tiny.encoder, 16).eval()
    k_end = 3 * m.chunk_samples  # chunks 0, 1, 2 unchanged
    b = audio.clone()
    b[k_end:] = torch.randn(len(b) - k_end) * 0.5
    with torch.no_grad():
        ya, yb = m(audio), m(b)
    assert torch.allclose(ya[:, :48], yb[:, :48], atol=1e-5)
    assert not torch.allclose(ya[:, 48:], yb[:, 48:], atol=1e-2)


def test_mask_and_latency(tiny):
    m = BlockCausalWhisper(tiny.encoder, 16)
    assert m.algorithmic_latency_ms == 320.0 and m.chunk_samples == 5120
    assert m.chunks_per_segment == 93  # 1500 // 16: a reset after 29.76 s
    mk = block_causal_mask(6, 2, left_chunks=1)
    assert mk[5].tolist() == [False, False, True, True, True, True]
    assert mk[1].tolist() == [True, True, False, False, False, False]


def test_lora_starts_as_base_and_round_trips(tiny, audio):
    base = BlockCausalWhisper(tiny.encoder, 16).eval()
    m = BlockCausalWhisper(tiny.encoder, 16, lora_rank=4).eval()
    assert len(m.lora_names) == 2 * 4 and m.encoder is not tiny.encoder
    with torch.no_grad():
        y0 = base(audio[:8000])
        assert torch.allclose(m(audio[:8000]), y0, atol=1e-5)  # B = 0: the base model
        for p in m.lora_parameters():
            p.add_(0.01)
        y1 = m(audio[:8000])
    assert not torch.allclose(y1, y0, atol=1e-3)
    assert tiny.encoder.blocks[0].attn.query.__class__.__name__ == "Linear"  # the teacher untouched
    sd = m.lora_state_dict()
    m2 = BlockCausalWhisper(tiny.encoder, 16, lora_rank=4).eval()
    m2.load_lora_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(m2(audio[:8000]), y1, atol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        BlockCausalWhisper(tiny.encoder, 16, lora_rank=4, lora_layers=[0]).load_lora_state_dict(sd)


def test_bad_input_refused(tiny):
    m = BlockCausalWhisper(tiny.encoder, 16)
    st = m.init_state(2)
    with pytest.raises(ValueError, match=r"must be \(2, 5120\)"):
        m.step(torch.zeros(2, 5000), st)
    with pytest.raises(ValueError, match=r"must be \(2, 5120\)"):
        m.step(torch.zeros(1, 5120), st)
    with pytest.raises(ValueError, match="NaN"):
        m.step(torch.full((2, 5120), float("nan")), st)
    with pytest.raises(ValueError, match="N > 0"):
        m(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="chunk_frames"):
        BlockCausalWhisper(tiny.encoder, 0)
    with pytest.raises(ValueError, match="max_frames"):
        BlockCausalWhisper(tiny.encoder, 16, max_frames=3000)
    with pytest.raises(ValueError, match="compute_dtype"):
        BlockCausalWhisper(tiny.encoder, 16, compute_dtype="float16")
    with pytest.raises(ValueError, match="LoRA target"):
        BlockCausalWhisper(tiny.encoder, 16, lora_rank=2, lora_targets=("nope",))


def test_shipped_adapters_load():
    """models/whisper_blockcausal (LoRA for Whisper base, 320 ms chunks) matches the layout
    its config names (a randomly initialized base-sized encoder: no weights needed)."""
    from pathlib import Path

    from jrsv_stream.nn.whisper import WhisperDims, WhisperEncoder
    from jrsv_stream.train.blockcausal_lora import load_adapted

    folder = Path(__file__).resolve().parents[1] / "models" / "whisper_blockcausal"
    dims = WhisperDims(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6)
    bc = load_adapted(folder, WhisperEncoder(dims))
    assert bc.chunk_frames == 16 and bc.algorithmic_latency_ms == 320.0
    assert len(bc.lora_names) == 24 and sum(p.numel() for p in bc.lora_parameters()) == 393216
    assert any(float(p.detach().abs().max()) > 0 for n, p in bc.encoder.named_parameters() if n.endswith("lora_b"))
