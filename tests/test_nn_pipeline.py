"""The trained-pipeline loader and JRSVPipeline: contract, streaming == offline, live path."""

import numpy as np
import pytest
import torch

from jrsv_stream.nn.pipeline import load_streaming_pipeline
from jrsv_stream.stream.events import Final
from jrsv_stream.stream.pipeline_api import StreamingPipeline, gather_state, scatter_state
from jrsv_stream.stream.session import transcribe
from jrsv_stream.stream.worker import BatchWorker
from tests.tiny_models import save_tiny_pipeline


@pytest.fixture(scope="module", params=["conformer", "lstm"])
def model_dir(request, tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("models"), encoder=request.param)


def test_loaded_pipeline_implements_the_contract(model_dir):
    p = load_streaming_pipeline(model_dir, chunk_samples=5120, device="cpu")
    assert isinstance(p, StreamingPipeline)
    assert p.tracks == ("speech", "lyrics") and p.frame_shift_s == 0.04
    assert p.algorithmic_latency_ms == pytest.approx(32.0 + 320.0)
    assert p.frame_offset_s == pytest.approx(-0.016)
    st = p.init_state(3, "cpu")
    x = torch.randn(3, 5120) * 0.1
    out, st2 = p.step(x, st)
    for t in p.tracks:
        assert out.logp[t].shape == (3, 8, p.tokenizer.vocab_size)
        assert torch.allclose(out.logp[t].exp().sum(-1), torch.ones(3, 8), atol=1e-4)
        a = out.activity[t]
        assert a.shape == (3, 8) and bool(((a >= 0) & (a <= 1)).all())
        assert out.encoder_out[t].shape == (3, 8, 32)
    # the slot pool can move rows: gather row 1 then scatter back leaves the state intact
    sub = gather_state(st2, torch.tensor([1]))
    scatter_state(st2, torch.tensor([2]), sub)
    out_b, _ = p.step(x[[1, 1, 1]], st2)
    assert torch.allclose(out_b.logp["speech"][1], out_b.logp["speech"][2], atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        p.step(torch.zeros(3, 5000), st)


def test_streaming_steps_equal_offline_separator_then_chunked_encoder(model_dir):
    p = load_streaming_pipeline(model_dir, chunk_samples=5120, device="cpu")
    torch.manual_seed(1)
    n_chunks = 4
    x = torch.randn(2, 5120 * n_chunks) * 0.1
    st = p.init_state(2, "cpu")
    got = {t: [] for t in p.tracks}
    for k in range(n_chunks):
        out, st = p.step(x[:, k * 5120:(k + 1) * 5120], st)
        for t in p.tracks:
            got[t].append(out.logp[t])
    with torch.no_grad():
        sources = p.separator(x).sources
        lens = torch.full((2,), x.shape[1])
        for t, idx in (("speech", 0), ("lyrics", 1)):
            enc, _ = p.asr.encode(sources[:, idx], lens, torch.full((2,), idx), chunk_frames=8, left_chunks=16)
            ref = p.asr.ctc_logp(enc)
            assert (torch.cat(got[t], 1) - ref).abs().max().item() < 1e-3


def test_live_path_runs_on_the_loaded_pipeline(model_dir):
    p = load_streaming_pipeline(model_dir, chunk_samples=5120, device="cpu")
    worker = BatchWorker(p, max_batch=4, max_wait_ms=5).start()
    try:
        audio = (np.random.default_rng(0).normal(size=16000 * 3) * 0.1).astype(np.float32)
        events = transcribe(worker, audio)
    finally:
        worker.stop()
    assert any(e.type == "stats" for e in events)
    assert all(not isinstance(e, Final) or e.track in ("speech", "lyrics") for e in events)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="separator"):
        load_streaming_pipeline(tmp_path)


def test_pipeline_loads_the_recognizer_lm_and_sessions_fuse_it(tmp_path):
    from jrsv_stream.decode.ngram_lm import LMError, TokenNgramLM
    from jrsv_stream.stream.session import StreamSession
    from tests.tiny_models import TEXTS

    root = save_tiny_pipeline(tmp_path / "m", encoder="lstm")
    assert load_streaming_pipeline(root, device="cpu").lm is None  # no lm.npz: decode without
    p0 = load_streaming_pipeline(root, device="cpu")
    tok = p0.tokenizer
    lm = TokenNgramLM.train([tok.encode(t) for t in TEXTS], 3, tok.vocab_size, tok.eos_id, weight=0.4, token_bonus=1.0)
    lm.save(root / "asr" / "lm.npz")
    p = load_streaming_pipeline(root, device="cpu")
    assert p.lm is not None and (p.lm.order, p.lm.weight, p.lm.token_bonus) == (3, 0.4, 1.0)
    assert load_streaming_pipeline(root, device="cpu", lm=False).lm is None
    worker = BatchWorker(p, max_batch=2, max_wait_ms=5).start()
    try:
        s = StreamSession(worker, "a")
        assert s.config.beam.lm is p.lm and s.config.beam.fusion == (p.lm, 0.4, 1.0)
        s.close()
    finally:
        worker.stop()
    (root / "asr" / "lm.npz").write_bytes(b"not an npz")
    with pytest.raises(LMError, match="lm.npz"):
        load_streaming_pipeline(root, device="cpu")


def test_calibrated_track_gain_scales_what_the_recognizer_hears(tmp_path):
    import json

    from jrsv_stream.nn.pipeline import separator_track_gain

    root = save_tiny_pipeline(tmp_path / "m", encoder="lstm")
    assert separator_track_gain(root / "separator") == 1.0  # no calibration.json: unity
    (root / "separator" / "calibration.json").write_text(json.dumps({"output_gain_db": 20.0}))
    p = load_streaming_pipeline(root, chunk_samples=5120, device="cpu")
    assert p.track_gain == pytest.approx(10.0)
    x = torch.randn(2, 5120) * 0.1
    out, _ = p.step(x, p.init_state(2, "cpu"))
    with torch.no_grad():
        src = p.separator(x).sources
        enc, _ = p.asr.encode(10.0 * src[:, 0], torch.full((2,), 5120), torch.zeros(2, dtype=torch.long), chunk_frames=8)
        ref = p.asr.ctc_logp(enc)
        enc1, _ = p.asr.encode(src[:, 0], torch.full((2,), 5120), torch.zeros(2, dtype=torch.long), chunk_frames=8)
        unscaled = p.asr.ctc_logp(enc1)
    assert (out.logp["speech"] - ref).abs().max().item() < 1e-3
    assert (out.logp["speech"] - unscaled).abs().max().item() > 1e-3  # the gain changes what is heard
    for bad in ('{"output_gain_db": "loud"}', '{"gain": 3}', '{"output_gain_db": 200}', "not json"):
        (root / "separator" / "calibration.json").write_text(bad)
        with pytest.raises(ValueError, match="calibration"):
            load_streaming_pipeline(root, device="cpu")
