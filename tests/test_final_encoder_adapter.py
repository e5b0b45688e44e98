"""Encoder adapters of one track's finals (nn/whisper_adapter.py, train/final_encoder_adapter.py):
merging equals the LoRA-wrapped encoder and leaves the base alone, a zero adapter decodes
like the base, the parts cannot be mixed up, a Whisper-CTC folder decodes its speech track
through the adapted encoder and its singing track without, and the distillation data and
training run end to end (deterministic shards, the valid MSE falls, resume)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.real_corpora import read_librivox_testdata
from jrsv_stream.nn import whisper_weights as ww
from jrsv_stream.nn.whisper_adapter import (ENCODER_TARGETS, adapted_model, apply_decoder_lora, apply_encoder_lora,
                                            load_adapter, lora_state, save_adapter)
from jrsv_stream.nn.whisper_decode import encode_segment, greedy_decode
from jrsv_stream.train import final_encoder_adapter as fea
from tests.test_whisper_adapter import tiny  # noqa: F401  (the module-scoped tiny.en fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audio():
    return torch.from_numpy(load_audio(read_librivox_testdata()[0][0]))


def _wrapped_encoder_copy(seed=0, rank=4, scale=0.02):
    m = ww.load_whisper("tiny.en")
    apply_encoder_lora(m.encoder, rank, alpha=8.0)
    g = torch.Generator().manual_seed(seed)
    for n, p in m.encoder.named_parameters():
        if ".lora_b" in n:
            p.data = torch.randn(p.shape, generator=g) * scale
    return m


def test_merged_encoder_adapter_equals_the_lora_encoder_and_leaves_the_base_alone(tiny, audio, tmp_path):
    wrapped = _wrapped_encoder_copy()
    assert not any(p.requires_grad for n, p in wrapped.encoder.named_parameters() if ".lora_" not in n)
    path = save_adapter(tmp_path / "e.pt", wrapped.encoder, 4, 8.0, ENCODER_TARGETS, "tiny.en", part="encoder")
    doc = load_adapter(path)
    assert doc["part"] == "encoder" and doc["n_text_state"] == 384
    with torch.no_grad():
        before = encode_segment(tiny, audio, 2.0, 15.0)
        want = encode_segment(wrapped, audio, 2.0, 15.0)
        merged = adapted_model(tiny, None, doc)
        got = encode_segment(merged, audio, 2.0, 15.0)
        after = encode_segment(tiny, audio, 2.0, 15.0)
    assert (want - before).abs().max() > 0.05  # the adapter changes the features
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(after, before)  # the base model is not modified
    assert merged.decoder is tiny.decoder and merged.encoder.conv1 is tiny.encoder.conv1


def test_zero_encoder_adapter_decodes_exactly_like_the_base(tiny, audio):
    m = ww.load_whisper("tiny.en")
    apply_encoder_lora(m.encoder, 4)  # B = 0: no change
    doc = {"lora": lora_state(m.encoder), "rank": 4, "alpha": 4.0, "targets": list(ENCODER_TARGETS),
           "whisper": "tiny.en", "n_text_state": 384, "part": "encoder"}
    with torch.no_grad():
        a = greedy_decode(tiny, encode_segment(tiny, audio, 2.0, 15.0))[0]
        b = greedy_decode(adapted_model(tiny, None, doc), encode_segment(adapted_model(tiny, None, doc), audio, 2.0, 15.0))[0]
    assert a == b and len(a) > 5


def test_parts_cannot_be_mixed_up(tiny, tmp_path):
    m = ww.load_whisper("tiny.en")
    apply_encoder_lora(m.encoder, 2, ("query",))
    enc_doc = load_adapter(save_adapter(tmp_path / "e.pt", m.encoder, 2, 2.0, ("query",), "tiny.en", part="encoder"))
    with pytest.raises(ValueError, match="is an encoder adapter"):
        adapted_model(tiny, enc_doc)
    dec = ww.load_whisper("tiny.en")
    apply_decoder_lora(dec.decoder, 2, ("query",))
    dec_doc = load_adapter(save_adapter(tmp_path / "d.pt", dec.decoder, 2, 2.0, ("query",), "tiny.en"))
    assert dec_doc["part"] == "decoder"
    with pytest.raises(ValueError, match="is a decoder adapter"):
        adapted_model(tiny, None, dec_doc)
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        apply_encoder_lora(m.encoder, 2, ("cross_query",))  # the encoder has no cross-attention
    with pytest.raises(ValueError, match="part"):
        save_adapter(tmp_path / "x.pt", m.encoder, 2, 2.0, ("query",), "tiny.en", part="middle")


def test_whisper_ctc_folder_decodes_speech_through_its_encoder_adapter(tiny, tmp_path):
    """final_encoder_adapter_speech.pt: the speech track's finals encode with the merged
    copy, the singing track with Whisper's own encoder; both parts on one track combine; a
    decoder adapter under the encoder adapter's name is an error."""
    from jrsv_stream.nn.whisper_ctc import WhisperCTC, WhisperCTCConfig

    d = WhisperCTC(WhisperCTCConfig(whisper="tiny.en"), whisper=tiny).save_pretrained(tmp_path / "wctc")
    # strong enough to change the text whatever the thread count (0.02 did not always, under bf16)
    wrapped = _wrapped_encoder_copy(rank=2, scale=0.1)
    save_adapter(d / "final_encoder_adapter_speech.pt", wrapped.encoder, 2, 8.0, ENCODER_TARGETS, "tiny.en",
                 part="encoder")
    m = WhisperCTC.from_pretrained(d, whisper=tiny)
    assert set(m.final_encoder_adapters) == {"speech"} and m.final_adapters == {}
    assert m.final_model("singing") is tiny
    sp_model = m.final_model("speech")
    assert sp_model.encoder is not tiny.encoder and sp_model.decoder is tiny.decoder
    a = load_audio(read_librivox_testdata()[1][0])
    plain = m._decode(a, beam=1)[0][0][0]
    assert m._decode(a, beam=1, track="singing")[0][0][0] == plain
    assert m._decode(a, beam=1, track="speech")[0][0][0] != plain  # the random adapter changes the speech text
    dec = ww.load_whisper("tiny.en")
    apply_decoder_lora(dec.decoder, 2, ("query",))
    save_adapter(d / "final_adapter_speech.pt", dec.decoder, 2, 2.0, ("query",), "tiny.en")
    both = WhisperCTC.from_pretrained(d, whisper=tiny).final_model("speech")
    assert both.encoder is not tiny.encoder and both.decoder is not tiny.decoder
    shutil.copy(d / "final_adapter_speech.pt", d / "final_encoder_adapter_singing.pt")
    with pytest.raises(ValueError, match="holds a decoder adapter"):
        WhisperCTC.from_pretrained(d, whisper=tiny)


@pytest.fixture(scope="module")
def distill_data(tmp_path_factory):
    """A few distillation crops from a fake corpus, real talk from codec2's recordings, the
    shipped separator and tiny.en as the teacher."""
    from jrsv_stream.data.real_speech import build_real_speech
    from tests.test_dynamic_mixing import make_fake_corpus

    root = tmp_path_factory.mktemp("distill")
    corpus = make_fake_corpus(root / "corpus")
    pool = root / "pool"
    assert build_real_speech(pool, ["codec2"])["missing_packages"] == []
    args = ["prepare", "--corpus", str(corpus), "--real-speech", str(pool), "--p-real", "0.5", "--p-clean", "0.3",
            "--separator", str(REPO / "models/separator_real"), "--crop-s", "2", "--n-train", "6", "--n-valid", "3",
            "--whisper", "tiny.en", "--threads", "1", "--seed", "4"]
    fea.main(args + ["--out", str(root / "a")])
    return root, args


def test_distillation_shards_are_deterministic_and_hold_what_the_finals_hear(distill_data, tiny):
    root, args = distill_data
    fea.main(args + ["--out", str(root / "b")])
    for name in ("train-0000.pt", "valid-0000.pt"):
        x, y = torch.load(root / "a" / name), torch.load(root / "b" / name)
        assert x["kinds"] == y["kinds"]
        for k in ("heard", "clean", "teacher"):
            assert torch.equal(x[k], y[k]), k
    d = torch.load(root / "a" / "train-0000.pt")
    assert d["heard"].shape == d["clean"].shape == (6, 32000) and d["teacher"].shape == (6, 750, 384)
    assert d["heard"].dtype == torch.float16 and torch.isfinite(d["heard"].float()).all()
    # the teacher's features are the frozen encoder's on the clean voice, as a live final encodes it
    with torch.no_grad():
        f = encode_segment(tiny, d["clean"][0].float(), 2.0, 15.0)
    assert (f[0] - d["teacher"][0].float()).abs().mean() < 0.05
    music = [i for i, k in enumerate(d["kinds"]) if not k.startswith("clean")]
    assert music and any(not torch.equal(d["heard"][i], d["clean"][i]) for i in music)
    assert any(k.endswith("_real") for k in d["kinds"])


def test_distillation_lowers_the_valid_mse_and_resumes(distill_data):
    root, _ = distill_data
    out = root / "ad.pt"
    fea.main(["train", "--data", str(root / "a"), "--out", str(out), "--whisper", "tiny.en", "--rank", "4",
              "--steps", "12", "--valid-every", "6", "--batch", "3", "--lr", "3e-3", "--threads", "1"])
    doc = load_adapter(out)
    assert doc["part"] == "encoder" and doc["whisper"] == "tiny.en"
    assert doc["info"]["valid_mse"] < doc["info"]["valid_mse_before"]
    ck = torch.load(str(out) + ".ckpt", weights_only=False)
    assert ck["step"] == 12
    fea.main(["train", "--data", str(root / "a"), "--out", str(out), "--whisper", "tiny.en", "--rank", "4",
              "--steps", "18", "--valid-every", "6", "--batch", "3", "--lr", "3e-3", "--threads", "1"])
    ck = torch.load(str(out) + ".ckpt", weights_only=False)
    assert ck["step"] == 18 and [h["step"] for h in ck["hist"]] == [0, 6, 12, 18]
    with pytest.raises(FileNotFoundError, match="prepare"):
        fea.main(["train", "--data", str(root / "nothing"), "--out", str(root / "x.pt"), "--whisper", "tiny.en"])
