"""The recurrent encoder option (encoder.type: lstm): streaming == offline, causality, state
handling, and that ASRModel builds it from a config."""
import pytest
import torch

from jrsv_stream.nn.asr import ASRModel, ASRModelConfig
from jrsv_stream.nn.encoder import ConformerConfig, LSTMEncoder, LSTMEncoderState, build_encoder

F = 20


VARIANTS = [("conv2d", 24), ("stack", 32)]  # (subsampling, lstm_hidden): projected / direct output


def _encoder(n_tracks: int = 2, subsampling: str = "conv2d", hidden: int = 24) -> LSTMEncoder:
    torch.manual_seed(0)
    cfg = ConformerConfig(type="lstm", input_dim=F, d_model=32, subsampling_channels=8, n_tracks=n_tracks,
                          lstm_layers=2, lstm_hidden=hidden, subsampling=subsampling)
    enc = build_encoder(cfg).double().eval()
    assert isinstance(enc, LSTMEncoder)
    return enc


def _stream(enc, x, chunk, tracks, state=None):
    st = enc.init_state(x.shape[0], dtype=torch.float64) if state is None else state
    outs = []
    for a in range(0, x.shape[1], 4 * chunk):
        y, st = enc.step(x[:, a: a + 4 * chunk], st, -1, tracks)
        outs.append(y)
    return torch.cat(outs, dim=1), st


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chunk", [1, 3, 4, 8, 16])
def test_forward_equals_chained_steps_for_every_chunk_size(chunk, variant):
    enc = _encoder(2, *variant)
    T = 4 * 23 + 3
    x = torch.randn(2, T, F, dtype=torch.float64)
    tracks = torch.tensor([0, 1])
    with torch.no_grad():
        ref, lens = enc(x, torch.tensor([T, T]), None, -1, tracks)
        chunked, _ = enc(x, torch.tensor([T, T]), chunk, 2, tracks)  # chunk masks change nothing
        got, st = _stream(enc, x, chunk, tracks)
    assert ref.shape == got.shape == (2, T // 4, 32) and lens.tolist() == [T // 4] * 2
    assert (got - ref).abs().max().item() <= 1e-10
    assert (chunked - ref).abs().max().item() == 0.0
    assert st.offset.tolist() == [T // 4] * 2 and st.h.shape == (2, 2, variant[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_and_track_dependent(variant):
    enc = _encoder(2, *variant)
    x = torch.randn(1, 96, F, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 48:] = torch.randn(1, 48, F, dtype=torch.float64) * 3
    lens = torch.tensor([96])
    with torch.no_grad():
        a, _ = enc(x, lens)
        b, _ = enc(x2, lens)
        s, _ = enc(x, lens, tracks=torch.tensor([1]))
    # output frame i depends on features up to 4i + 3 only: frames 0..11 see features < 48
    assert (a[:, :12] - b[:, :12]).abs().max().item() == 0.0
    assert not torch.allclose(a[:, 12:], b[:, 12:])
    assert not torch.allclose(a, s)


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_does_not_mutate_state_and_padding_changes_nothing(variant):
    enc = _encoder(2, *variant)
    x = torch.randn(2, 64, F, dtype=torch.float64)
    st = enc.init_state(2, dtype=torch.float64)
    with torch.no_grad():
        _, st1 = enc.step(x[:, :16], st)
        before = [t.clone() for t in st1]
        y_a, _ = enc.step(x[:, 16:32], st1)
        y_b, _ = enc.step(x[:, 16:32], st1)
        batch, lens = enc(x, torch.tensor([64, 40]), tracks=torch.tensor([0, 1]))
        alone, _ = enc(x[1:, :40], torch.tensor([40]), tracks=torch.tensor([1]))
    assert all(torch.equal(a, b) for a, b in zip(before, st1))
    assert torch.equal(y_a, y_b)
    assert lens.tolist() == [16, 10] and (batch[1:, :10] - alone).abs().max().item() < 1e-10
    assert isinstance(st1, LSTMEncoderState)


def test_asr_model_with_lstm_encoder_streams_like_offline():
    torch.manual_seed(1)
    cfg = ASRModelConfig(vocab_size=30, encoder=ConformerConfig(type="lstm", d_model=32, subsampling_channels=8,
                                                                lstm_layers=2, lstm_hidden=24))
    m = ASRModel(cfg).double().eval()
    wav = torch.randn(1, 640 * 13, dtype=torch.float64) * 0.1
    with torch.no_grad():
        enc, _ = m.encode(wav, torch.tensor([wav.shape[1]]), torch.tensor([1]))
        ref = m.ctc_logp(enc)
        st = m.init_state(1, tracks=[1], dtype=torch.float64, cache_frames=8)
        outs = []
        for a in range(0, wav.shape[1], 640 * 4):
            lp, _, st = m.step(wav[:, a: a + 640 * 4], st)
            outs.append(lp)
    assert (torch.cat(outs, 1) - ref).abs().max().item() < 1e-8


def test_unknown_encoder_type_or_subsampling_is_a_clear_error():
    with pytest.raises(ValueError, match="encoder.type"):
        build_encoder(ConformerConfig(type="transformer"))
    with pytest.raises(ValueError, match="encoder.subsampling"):
        build_encoder(ConformerConfig(type="lstm", subsampling="pool"))
