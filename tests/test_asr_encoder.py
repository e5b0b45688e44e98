import pytest
import torch

from jrsv_stream.nn.encoder import ConformerConfig, ConformerEncoder, EncoderState, chunk_attention_mask

F = 20


def _encoder(n_tracks: int = 2, subsampling: str = "conv2d") -> ConformerEncoder:
    torch.manual_seed(0)
    cfg = ConformerConfig(input_dim=F, d_model=32, n_heads=4, ff_dim=64, n_layers=2, conv_kernel=5,
                          subsampling_channels=8, max_rel_frames=6, n_tracks=n_tracks, subsampling=subsampling)
    enc = ConformerEncoder(cfg).double().eval()
    with torch.no_grad():  # non-trivial relative bias and embeddings
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return enc


def _stream(enc: ConformerEncoder, x: torch.Tensor, chunk: int, left: int, tracks, state: EncoderState | None = None):
    st = enc.init_state(x.shape[0], dtype=torch.float64) if state is None else state
    outs = []
    for a in range(0, x.shape[1], 4 * chunk):
        y, st = enc.step(x[:, a: a + 4 * chunk], st, left, tracks)
        outs.append(y)
    return torch.cat(outs, dim=1), st


@pytest.mark.parametrize("subsampling", ["conv2d", "stack"])
@pytest.mark.parametrize("chunk,left", [(1, -1), (3, -1), (4, -1), (5, 0), (7, 2), (8, 1), (16, -1)])
def test_chunked_forward_equals_chained_steps(chunk, left, subsampling):
    enc = _encoder(subsampling=subsampling)
    T = 4 * 23 + 3  # not a multiple of 4 or of any chunk
    x = torch.randn(2, T, F, dtype=torch.float64)
    tracks = torch.tensor([0, 1])
    with torch.no_grad():
        ref, lens = enc(x, torch.tensor([T, T]), chunk, left, tracks)
        got, st = _stream(enc, x, chunk, left, tracks)
    assert ref.shape == got.shape == (2, T // 4, 32)
    assert lens.tolist() == [T // 4] * 2
    assert (got - ref).abs().max().item() <= 1e-5
    assert st.offset.tolist() == [T // 4] * 2
    if left >= 0:
        assert st.att_cache.shape[3] <= left * chunk


@pytest.mark.parametrize("subsampling", ["conv2d", "stack"])
def test_step_output_is_causal_beyond_the_chunk(subsampling):
    enc = _encoder(subsampling=subsampling)
    c = 4
    x = torch.randn(1, 96, F, dtype=torch.float64)
    x2 = x.clone()
    cut = 4 * c * 3  # features of the first 3 chunks are unchanged
    x2[:, cut:] = torch.randn(1, 96 - cut, F, dtype=torch.float64) * 3
    lens = torch.tensor([96])
    with torch.no_grad():
        a, _ = enc(x, lens, c)
        b, _ = enc(x2, lens, c)
        full_a, _ = enc(x, lens, None)
        full_b, _ = enc(x2, lens, None)
    assert (a[:, : 3 * c] - b[:, : 3 * c]).abs().max().item() < 1e-12
    assert not torch.allclose(a[:, 3 * c:], b[:, 3 * c:])
    assert not torch.allclose(full_a[:, : 3 * c], full_b[:, : 3 * c])  # full context does look ahead


def test_padding_does_not_change_valid_frames():
    enc = _encoder()
    x = torch.randn(2, 64, F, dtype=torch.float64)
    with torch.no_grad():
        batch, lens = enc(x, torch.tensor([64, 40]), 3, -1, torch.tensor([0, 1]))
        alone, _ = enc(x[1:, :40], torch.tensor([40]), 3, -1, torch.tensor([1]))
    assert lens.tolist() == [16, 10]
    assert (batch[1:, :10] - alone).abs().max().item() < 1e-10


def test_preallocated_masked_cache_and_left_padding_change_nothing():
    enc = _encoder()
    x = torch.randn(1, 48, F, dtype=torch.float64)
    with torch.no_grad():
        ref, _ = _stream(enc, x, 4, 2, None)
        got, st = _stream(enc, x, 4, 2, None, enc.init_state(1, dtype=torch.float64, cache_frames=8))
    assert (got - ref).abs().max().item() < 1e-10
    assert st.att_cache.shape[3] == 8 and bool(st.cache_mask.all())


def test_step_does_not_mutate_state_and_tracks_matter():
    enc = _encoder()
    x = torch.randn(1, 32, F, dtype=torch.float64)
    st = enc.init_state(1, dtype=torch.float64)
    _, st1 = enc.step(x[:, :16], st)
    saved = [t.clone() for t in st1]
    with torch.no_grad():
        y_a, _ = enc.step(x[:, 16:], st1, tracks=torch.tensor([0]))
        y_b, _ = enc.step(x[:, 16:], st1, tracks=torch.tensor([1]))
    assert all(torch.equal(a, b) for a, b in zip(saved, st1))
    assert not torch.allclose(y_a, y_b)


def test_no_track_embedding_when_n_tracks_is_zero():
    enc = _encoder(n_tracks=0)
    assert enc.track_embed is None
    x = torch.randn(1, 16, F, dtype=torch.float64)
    with torch.no_grad():
        a, _ = enc(x, torch.tensor([16]), None, -1, torch.tensor([1]))
        b, _ = enc(x, torch.tensor([16]), None, -1, None)
    assert torch.equal(a, b)


def test_chunk_attention_mask():
    m = chunk_attention_mask(6, 2, left_chunks=1)
    expected = torch.tensor([[1, 1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [0, 0, 1, 1, 1, 1],
                             [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    assert bool(chunk_attention_mask(5, None).all())
