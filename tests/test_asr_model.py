import math

import numpy as np
import pytest
import torch

from jrsv_stream.nn.asr import ASRModel, ASRModelConfig, ConfigError, dataclass_from_dict
from jrsv_stream.nn.attention_decoder import DecoderConfig
from jrsv_stream.nn.encoder import ConformerConfig

V = 30


def _tiny_cfg(**kw) -> ASRModelConfig:
    return ASRModelConfig(vocab_size=V, encoder=ConformerConfig(d_model=32, n_heads=4, ff_dim=64, n_layers=2, conv_kernel=5,
                                                                subsampling_channels=8, dropout=0.0),
                          decoder=DecoderConfig(d_model=32, n_heads=4, ff_dim=64, n_layers=2, dropout=0.0), **kw)


def _model(dtype=torch.float64) -> ASRModel:
    torch.manual_seed(0)
    m = ASRModel(_tiny_cfg()).to(dtype).eval()
    m.features.set_normalization(torch.full((80,), -5.0), torch.full((80,), 3.0))
    return m


@pytest.mark.parametrize("chunk_frames", [4, 8, 3])
def test_audio_step_equals_chunked_encode(chunk_frames):
    m = _model()
    n = 16000 * 2 + 333
    x = torch.randn(2, n, dtype=torch.float64) * 0.1
    tracks = torch.tensor([0, 1])
    with torch.no_grad():
        ref, lens = m.encode(x, torch.tensor([n, n]), tracks, chunk_frames)
        st = m.init_state(2, tracks=tracks, dtype=torch.float64)
        outs, logps = [], []
        for a in range(0, n, m.chunk_samples(chunk_frames)):
            lp, y, st = m.step(x[:, a: a + m.chunk_samples(chunk_frames)], st)
            outs.append(y)
            logps.append(lp)
    got = torch.cat(outs, dim=1)
    assert ref.shape == got.shape == (2, n // 640, 32)
    assert (got - ref).abs().max().item() <= 1e-5
    lp = torch.cat(logps, dim=1)
    assert lp.shape == (2, n // 640, V)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, n // 640, dtype=lp.dtype), atol=1e-5)


def test_loss_is_finite_and_decreases_when_overfitting():
    torch.manual_seed(0)
    m = ASRModel(_tiny_cfg())
    x = torch.randn(2, 16000) * 0.1
    lens = torch.tensor([16000, 12000])
    ys = [[3, 4, 5, 6], [7, 8, 9]]
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = None
    for i in range(30):
        feats, feat_lens = m.features(x, lens)
        out = m.loss(feats, feat_lens, ys, torch.tensor([0, 1]), chunk_frames=[None, 2, 5][i % 3])
        assert set(out) == {"loss", "ctc", "att", "acc"} and torch.isfinite(out["loss"])
        first = out["loss"].item() if first is None else first
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.5 * first


def test_score_is_the_sum_of_token_logprobs_with_eos_and_batching_is_consistent():
    m = _model()
    with torch.no_grad():
        enc, enc_lens = m.encode(torch.randn(1, 8000, dtype=torch.float64) * 0.1, torch.tensor([8000]))
    hyps = [[3, 4, 5], [], [7], [3, 4, 5, 6, 9, 10]]
    batched = m.score(enc, enc_lens, hyps)
    assert batched.shape == (4,) and batched.dtype == np.float64
    for h, s in zip(hyps, batched):
        alone = m.score(enc, enc_lens, [h])[0]
        assert abs(alone - s) < 1e-9
        # teacher forcing by hand
        ys_in = torch.tensor([[m.sos_id] + h])
        with torch.no_grad():
            logp = torch.log_softmax(m.decoder(enc, enc_lens, ys_in, torch.tensor([len(h) + 1])), -1)[0]
        ref = sum(logp[u, t].item() for u, t in enumerate(h + [m.eos_id]))
        assert math.isclose(s, ref, abs_tol=1e-9)
    per_row = m.score(enc.expand(4, -1, -1), enc_lens.expand(4), hyps)
    assert np.allclose(per_row, batched, atol=1e-9)
    with pytest.raises(ValueError):
        m.score(enc.expand(2, -1, -1), enc_lens.expand(2), hyps)


def test_save_and_load_round_trip(tmp_path):
    m = _model(torch.float32)
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"not a real tokenizer, copied as is")
    m.save_pretrained(tmp_path / "asr", tok, extra={"note": 1})
    assert {p.name for p in (tmp_path / "asr").iterdir()} == {"config.yaml", "asr.pt", "tokenizer.model"}
    m2 = ASRModel.from_pretrained(tmp_path / "asr")
    assert not m2.training
    x = torch.randn(1, 6400) * 0.1
    with torch.no_grad():
        a, _ = m.encode(x, torch.tensor([6400]), chunk_frames=4)
        b, _ = m2.encode(x, torch.tensor([6400]), chunk_frames=4)
    assert torch.equal(a, b)
    assert torch.equal(m2.features.mean, m.features.mean)
    with pytest.raises(FileNotFoundError):
        ASRModel.from_pretrained(tmp_path / "missing")


def test_strict_config_loading():
    cfg = dataclass_from_dict(ASRModelConfig, {"vocab_size": 50, "encoder": {"n_layers": 3}})
    assert cfg.vocab_size == 50 and cfg.encoder.n_layers == 3 and cfg.encoder.d_model == 144
    with pytest.raises(ConfigError, match="n_layer"):
        dataclass_from_dict(ASRModelConfig, {"encoder": {"n_layer": 3}})
    with pytest.raises(ConfigError):
        ASRModel(ASRModelConfig(encoder=ConformerConfig(input_dim=40)))
