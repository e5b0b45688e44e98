"""Decoder adapters of one track's finals (jrsv_stream.nn.whisper_adapter, train/final_adapter):
merging equals the LoRA-wrapped decoder, the base model is untouched, a short teacher-forced
run lowers the loss, files are checked, and a Whisper-CTC folder decodes its singing track
with the adapter and its speech track without."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.real_corpora import read_librivox_testdata
from jrsv_stream.nn import whisper_weights as ww
from jrsv_stream.nn.whisper_adapter import (adapted_model, apply_decoder_lora, load_adapter, lora_state,
                                            save_adapter)
from jrsv_stream.nn.whisper_decode import encode_segment, greedy_decode

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ww.load_whisper("tiny.en")
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def feats(tiny):
    audio, text = read_librivox_testdata()[0]
    a = torch.from_numpy(load_audio(audio))
    return encode_segment(tiny, a, 2.0, 15.0), text


def _wrapped_copy(tiny, seed=0, rank=4):
    """A second tiny.en with random (non-zero) LoRA on its decoder."""
    m = ww.load_whisper("tiny.en")
    apply_decoder_lora(m.decoder, rank, alpha=8.0)
    g = torch.Generator().manual_seed(seed)
    for n, p in m.decoder.named_parameters():
        if ".lora_b" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.02
    return m


def test_merged_adapter_equals_the_lora_decoder_and_leaves_the_base_alone(tiny, feats, tmp_path):
    f, _ = feats
    wrapped = _wrapped_copy(tiny)
    path = save_adapter(tmp_path / "final_adapter_singing.pt", wrapped.decoder, 4, 8.0,
                        ("query", "value", "out", "cross_query", "cross_out", "fc1", "fc2"), "tiny.en")
    tokens = torch.tensor([tiny.tokenizer.sot_sequence("en", "transcribe") + tiny.tokenizer.encode(" He hoped")])
    base_before = tiny.decoder(tokens, f).detach()
    merged = adapted_model(tiny, load_adapter(path))
    with torch.no_grad():
        want = wrapped.decoder(tokens, f)
        got = merged.decoder(tokens, f)
        base_after = tiny.decoder(tokens, f)
    assert (want - base_before).abs().max() > 0.05  # the adapter changes the decoder
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(base_after, base_before)  # the base model is not modified
    assert merged.encoder is tiny.encoder and merged.decoder.token_embedding is tiny.decoder.token_embedding


def test_zero_adapter_decodes_exactly_like_the_base(tiny, feats):
    f, _ = feats
    m = ww.load_whisper("tiny.en")
    apply_decoder_lora(m.decoder, 4)  # B = 0: no change
    doc = {"lora": lora_state(m.decoder), "rank": 4, "alpha": 4.0,
           "targets": ["query", "value", "out", "cross_query", "cross_out", "fc1", "fc2"],
           "whisper": "tiny.en", "n_text_state": 384}
    a = greedy_decode(tiny, f)[0]
    b = greedy_decode(adapted_model(tiny, doc), f)[0]
    assert a == b and len(a) > 5


def test_a_short_teacher_forced_run_lowers_the_loss(tiny, feats):
    """The training objective (train/final_adapter.py's step) on one utterance: 15 steps of
    the adapters lower the teacher-forced cross-entropy of a text the base decoder misreads."""
    from jrsv_stream.train.final_adapter import line_text

    f, _ = feats
    m = ww.load_whisper("tiny.en")
    apply_decoder_lora(m.decoder, 4, alpha=8.0)
    tok = m.tokenizer
    prompt = tok.sot_sequence("en", "transcribe")
    seq = prompt + tok.encode(" " + line_text("purple walrus eats seven ladders")) + [tok.eot]
    toks = torch.tensor([seq[:-1]])
    tgt = torch.tensor([[-100] * (len(prompt) - 1) + seq[len(prompt):]])
    params = [p for n, p in m.decoder.named_parameters() if ".lora_" in n]
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in m.decoder.named_parameters() if ".lora_" not in n)
    opt = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(m.decoder(toks, f)[0], tgt[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_adapter_files_are_checked(tiny, tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read decoder adapter"):
        load_adapter(bad)
    torch.save({"lora": {}}, bad)
    with pytest.raises(ValueError, match="not a decoder adapter"):
        load_adapter(bad)
    m = ww.load_whisper("tiny.en")
    apply_decoder_lora(m.decoder, 2, targets=("query",))
    sd = lora_state(m.decoder)
    sd["blocks.0.query.lora_a"][0, 0] = float("nan")
    torch.save({"lora": sd, "rank": 2, "alpha": 2.0, "targets": ["query"], "whisper": "tiny.en", "n_text_state": 384}, bad)
    with pytest.raises(ValueError, match="non-finite"):
        load_adapter(bad)
    doc = {"lora": lora_state(m.decoder), "rank": 2, "alpha": 2.0, "targets": ["query"], "whisper": "base",
           "n_text_state": 512}
    with pytest.raises(ValueError, match="width 512"):
        adapted_model(tiny, doc)
    doc.update(n_text_state=384, targets=["query", "value"])
    with pytest.raises(ValueError, match="does not match"):
        adapted_model(tiny, doc)
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        apply_decoder_lora(m.decoder, 2, targets=("nope",))


def test_whisper_ctc_folder_decodes_singing_with_its_adapter_and_speech_without(tiny, tmp_path):
    """A folder with final_adapter_singing.pt: the singing track's finals decode with the
    merged copy, the speech track with Whisper's own decoder; an adapter for another Whisper
    (--final-whisper) is skipped with a warning; an unknown track is an error."""
    from jrsv_stream.nn.whisper_ctc import WhisperCTC

    from jrsv_stream.nn.whisper_ctc import WhisperCTCConfig

    d = WhisperCTC(WhisperCTCConfig(whisper="tiny.en"), whisper=tiny).save_pretrained(tmp_path / "wctc")
    wrapped = _wrapped_copy(tiny, rank=2)
    save_adapter(d / "final_adapter_singing.pt", wrapped.decoder, 2, 8.0,
                 ("query", "value", "out", "cross_query", "cross_out", "fc1", "fc2"), "tiny.en")
    m = WhisperCTC.from_pretrained(d, whisper=tiny)
    assert set(m.final_adapters) == {"singing"}
    assert m.final_model("speech") is tiny and m.final_model(None) is tiny
    sung = m.final_model("singing")
    assert sung is not tiny and sung is m.final_model("singing")  # built once
    audio = load_audio(read_librivox_testdata()[1][0])
    sp = m._decode(audio, beam=1, track="speech")[0][0][0]
    sg = m._decode(audio, beam=1, track="singing")[0][0][0]
    assert sp == m._decode(audio, beam=1)[0][0][0]
    assert sg != sp  # the random adapter changes the singing track's text only
    with pytest.warns(UserWarning, match="decodes without it"):
        m2 = WhisperCTC.from_pretrained(d, whisper=tiny, final_whisper="base")
    assert m2.final_adapters == {}
    shutil.copy(d / "final_adapter_singing.pt", d / "final_adapter_drums.pt")
    with pytest.raises(ValueError, match="unknown track 'drums'"):
        WhisperCTC.from_pretrained(d, whisper=tiny)
