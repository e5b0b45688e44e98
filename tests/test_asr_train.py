import json

import numpy as np
import pytest
import torch
import yaml

from jrsv_stream.audio.io import save_audio
from jrsv_stream.nn.asr import ASRModel, ConfigError
from jrsv_stream.train.asr import (ChunkConfig, OptimConfig, list_checkpoints, load_config, lr_lambda, sample_chunk,
                                   train_asr)
from jrsv_stream.train.asr_data import (SpecAugConfig, apply_spec_aug, make_batches, perturb, read_utterances,
                                        spec_aug_params)

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "we sing a song of love", "hello there my friend",
         "the sun is bright today", "rain falls on the roof", "she sells sea shells", "time flies like an arrow"]


def _corpus(root, n_train=4, n_valid=2):
    """Sources laid out like `jrsv-stream data synth` output: tones whose pitch follows the text."""
    rng = np.random.default_rng(0)
    for kind in ("speech", "singing"):
        lines = []
        for split, n in (("train", n_train), ("valid", n_valid)):
            for i in range(n):
                text = TEXTS[(i + (kind == "singing")) % len(TEXTS)]
                dur = 0.6 + 0.1 * i
                t = np.arange(int(16000 * dur)) / 16000
                x = 0.2 * np.sin(2 * np.pi * (200 + 30 * len(text)) * t) + 0.01 * rng.standard_normal(len(t))
                sid = f"{kind}-{split}-{i:06d}"
                save_audio(root / "sources" / kind / split / f"{sid}.flac", x.astype(np.float32))
                lines.append({"id": sid, "audio": f"{sid}.flac", "duration_s": len(t) / 16000, "text": text,
                              "words": [], "voice": "test", "split": split, "kind": kind})
        (root / "sources" / f"{kind}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return root


def _config(tmp_path, **train_kw) -> str:
    cfg = {
        "name": "t", "runs_dir": str(tmp_path / "runs"), "export_dir": str(tmp_path / "export"), "seed": 0,
        "data": {"corpus": str(tmp_path / "corpus"), "vocab_size": 40, "batch_seconds": 2.5, "max_batch": 4,
                 "num_workers": 0, "cmvn_utts": 4, "valid_utts": 4},
        "model": {"encoder": {"d_model": 32, "n_heads": 2, "ff_dim": 64, "n_layers": 2, "conv_kernel": 5,
                              "subsampling_channels": 8},
                  "decoder": {"d_model": 32, "n_heads": 2, "ff_dim": 64, "n_layers": 1}},
        "optim": {"lr": 0.002, "warmup_steps": 2},
        "train": {"max_steps": 4, "valid_every_steps": 3, "ckpt_every_steps": 2, "keep_checkpoints": 2,
                  "progress": False, "threads": 1, **train_kw},
    }
    path = tmp_path / "asr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("asr") / "corpus")


def _setup(tmp_path, corpus):
    (tmp_path / "corpus").symlink_to(corpus)


def test_train_resume_export_and_corrupt_checkpoint(tmp_path, corpus):
    _setup(tmp_path, corpus)
    cfg = _config(tmp_path)
    s = train_asr(cfg, max_minutes=0)
    assert s["status"] == "finished" and s["step"] == 4
    run = tmp_path / "runs" / "t"
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt", "step-00000004.pt"]
    export = tmp_path / "export"
    assert {p.name for p in export.iterdir()} == {"config.yaml", "asr.pt", "tokenizer.model"}
    assert (export / "asr.pt").stat().st_size < 25 * 2**20
    model = ASRModel.from_pretrained(export)
    from jrsv_stream.decode.tokenizer import Tokenizer
    assert model.vocab_size == Tokenizer(export / "tokenizer.model").vocab_size
    assert not torch.equal(model.features.istd, torch.ones(80))  # global statistics stored in the model
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    valid = [r for r in logs if r["kind"] == "valid"]
    assert valid and {"speech/wer@8", "singing/cer@full", "loss"} <= set(valid[0])

    # resume: two more steps continue from step 4
    s2 = train_asr(_config(tmp_path, max_steps=6))
    assert s2["step"] == 6 and s2["steps_this_run"] == 2

    # a corrupt latest checkpoint is a clear error naming the file
    last = list_checkpoints(run)[-1]
    last.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=f"{last.name}.*corrupt"):
        train_asr(_config(tmp_path, max_steps=8))


def test_resumed_training_equals_uninterrupted_training(tmp_path, corpus):
    _setup(tmp_path, corpus)
    a = train_asr(_config(tmp_path, max_steps=5, valid_every_steps=0, ckpt_every_steps=100))
    ref = torch.load(list_checkpoints(tmp_path / "runs" / "t")[-1], weights_only=False)["model"]
    assert a["step"] == 5
    train_asr(_config(tmp_path, max_steps=2, valid_every_steps=0, ckpt_every_steps=100), resume=False)
    b = train_asr(_config(tmp_path, max_steps=5, valid_every_steps=0, ckpt_every_steps=100))
    assert b["steps_this_run"] == 3
    got = torch.load(list_checkpoints(tmp_path / "runs" / "t")[-1], weights_only=False)["model"]
    assert all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)


def test_config_is_strict_and_model_changes_refuse_resume(tmp_path, corpus):
    _setup(tmp_path, corpus)
    cfg = _config(tmp_path, max_steps=1, valid_every_steps=0)
    d = yaml.safe_load(open(cfg))
    d["train"]["max_step"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="max_step"):
        load_config(bad)
    train_asr(cfg)
    d = yaml.safe_load(open(cfg))
    d["model"]["encoder"]["n_layers"] = 3
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="different model"):
        train_asr(other)


def test_separate_tracks_read_one_track_and_drop_the_embedding(tmp_path, corpus):
    _setup(tmp_path, corpus)
    cfg = _config(tmp_path, max_steps=1, valid_every_steps=0)
    d = yaml.safe_load(open(cfg))
    d["data"].update(tracks="separate", track="singing")
    path = tmp_path / "sep.yaml"
    path.write_text(yaml.safe_dump(d))
    assert train_asr(path)["status"] == "finished"
    model = ASRModel.from_pretrained(tmp_path / "export")
    assert model.encoder.track_embed is None
    utts = read_utterances(tmp_path / "corpus", "train", ("singing",))
    assert utts and all(u.track == 1 for u in utts)


def test_batches_cover_every_utterance_once_within_budget():
    d = np.random.default_rng(0).uniform(1, 10, size=200)
    batches = make_batches(d, 60.0, 16, np.random.default_rng(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    assert all(len(b) <= 16 and (len(b) == 1 or len(b) * max(d[b]) <= 60.0) for b in batches)


def test_augmentations():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    assert len(perturb(x, 0.9, 0.0)) == pytest.approx(16000 / 0.9, abs=2)
    assert len(perturb(x, 1.1, 0.0)) == pytest.approx(16000 / 1.1, abs=2)
    assert np.allclose(perturb(x, 1.0, 6.0), x * 10 ** 0.3, atol=1e-6)
    params = spec_aug_params([100, 50], SpecAugConfig(), 80, np.random.default_rng(0))
    feats = torch.ones(2, 100, 80)
    y = apply_spec_aug(feats, params)
    assert torch.equal(feats, torch.ones(2, 100, 80))  # input untouched
    for b in range(2):
        for axis, start, width in params[b].tolist():
            region = y[b, start: start + width] if axis == 0 else y[b, :, start: start + width]
            assert bool((region == 0).all())
    masked_t = (y[1] == 0).all(1).sum().item()
    assert masked_t <= 2 * 0.2 * 50


def test_schedule_and_chunk_sampling():
    f = lr_lambda(OptimConfig(warmup_steps=10, schedule="noam"), 0)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(39) == pytest.approx(0.5)
    g = lr_lambda(OptimConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1), 110)
    assert g(109) == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    draws = [sample_chunk(ChunkConfig(), rng) for _ in range(400)]
    full = sum(c is None for c, _ in draws)
    assert 150 < full < 250
    assert all(c is None or 1 <= c <= 25 for c, _ in draws)
    assert any(left > 0 for _, left in draws) and all(left == -1 or 2 <= left <= 16 for _, left in draws)


def test_word_crop_cuts_audio_and_targets_to_the_same_words(tmp_path):
    from jrsv_stream.decode.tokenizer import Tokenizer, train_tokenizer
    from jrsv_stream.train.asr_data import ASRDataConfig, ASRDataset, Utterance, WordCropConfig

    train_tokenizer(TEXTS * 10, tmp_path / "tok", 40)
    tok = Tokenizer(tmp_path / "tok.model")
    # 6 words of 0.5 s each; word j is a tone at 200 + 100 j Hz, so a crop is recognizable by pitch
    words = tuple((w, 0.5 * j, 0.5 * j + 0.5) for j, w in enumerate("we sing a song of love".split()))
    t = np.arange(8000) / 16000
    x = np.concatenate([0.1 * np.sin(2 * np.pi * (200 + 100 * j) * t) for j in range(6)]).astype(np.float32)
    save_audio(tmp_path / "u.flac", x)
    u = Utterance("u", str(tmp_path / "u.flac"), "we sing a song of love", 0, 3.0, words)
    word_tokens = [[tok.encode(w) for w, _, _ in words]]
    assert [t for w in word_tokens[0] for t in w] == tok.encode(u.text)  # whitespace-split pieces concatenate
    cfg = ASRDataConfig(speed_perturb=(1.0,), gain_db=(0.0, 0.0), word_crop=WordCropConfig(1.0, 2, 2, 0.0, until_epoch=1))
    seen = set()
    for seed in range(12):
        ds = ASRDataset([u], [tok.encode(u.text)], [[0]], cfg, augment=True, seed=seed, epoch=0, word_tokens=word_tokens)
        b = ds[0]
        text = b.texts[0].split()
        i = u.text.split().index(text[0])
        assert text == u.text.split()[i:i + 2] and b.tokens[0] == tok.encode(b.texts[0])
        n = int(b.wav_lens[0])
        assert n == 16000 and b.audio_s == pytest.approx(1.0)
        spec = np.abs(np.fft.rfft(b.wav[0, :8000].numpy()))
        assert np.argmax(spec) / 0.5 == pytest.approx(200 + 100 * i, abs=4)  # the audio is the first cropped word
        seen.add(i)
    assert len(seen) > 1
    # after until_epoch (and in validation) utterances stay whole
    for ds in (ASRDataset([u], [tok.encode(u.text)], [[0]], cfg, augment=True, epoch=1, word_tokens=word_tokens),
               ASRDataset([u], [tok.encode(u.text)], [[0]], cfg, augment=False, word_tokens=word_tokens)):
        b = ds[0]
        assert b.texts[0] == u.text and int(b.wav_lens[0]) == len(x)


def test_warm_start_takes_weights_normalization_and_tokenizer(tmp_path, corpus):
    _setup(tmp_path, corpus)
    train_asr(_config(tmp_path, max_steps=2, valid_every_steps=0))
    init = ASRModel.from_pretrained(tmp_path / "export")
    # a new run (other name), zero learning rate: after its steps the weights are still the init's
    cfg = yaml.safe_load(open(_config(tmp_path, max_steps=2, valid_every_steps=0, init_from=str(tmp_path / "export"))))
    cfg.update(name="t2", export_dir=str(tmp_path / "export2"), optim={"lr": 0.0, "warmup_steps": 2})
    (tmp_path / "warm.yaml").write_text(yaml.safe_dump(cfg))
    s = train_asr(tmp_path / "warm.yaml")
    assert s["step"] == 2
    got = torch.load(list_checkpoints(tmp_path / "runs" / "t2")[-1], weights_only=False)["model"]
    ref = init.state_dict()
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    assert (tmp_path / "runs" / "t2" / "tokenizer.model").read_bytes() == (tmp_path / "export" / "tokenizer.model").read_bytes()
    # a model of another shape cannot be warm started from it
    cfg.update(name="t3", model={**cfg["model"], "encoder": {**cfg["model"]["encoder"], "n_layers": 3}})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="init_from"):
        train_asr(tmp_path / "bad.yaml")


def test_single_track_model_warm_started_from_a_shared_one_keeps_its_track_bias(tmp_path, corpus):
    _setup(tmp_path, corpus)
    train_asr(_config(tmp_path, max_steps=1, valid_every_steps=0))
    init = ASRModel.from_pretrained(tmp_path / "export")
    assert init.encoder.track_embed is not None
    cfg = yaml.safe_load(open(_config(tmp_path, max_steps=2, valid_every_steps=0, ckpt_every_steps=1,
                                      init_from=str(tmp_path / "export"))))
    cfg.update(name="sing", export_dir=str(tmp_path / "sing"), optim={"lr": 0.0, "warmup_steps": 2})
    cfg["data"].update(tracks="separate", track="singing")
    (tmp_path / "sing.yaml").write_text(yaml.safe_dump(cfg))
    assert train_asr(tmp_path / "sing.yaml", max_minutes=None)["status"] == "finished"
    got = ASRModel.from_pretrained(tmp_path / "sing")
    # same weights (lr 0), so the singing-only model decodes singing exactly as the shared one
    ref = init.state_dict()
    assert all(torch.equal(got.state_dict()[k], ref[k]) for k in ref)
    x = torch.randn(1, 16000) * 0.1
    tracks = torch.ones(1, dtype=torch.long)
    with torch.no_grad():
        a, _ = init.encode(x, torch.tensor([16000]), tracks)
        b, _ = got.encode(x, torch.tensor([16000]), tracks)
    assert torch.equal(a, b)
    # resuming the run rebuilds the same model from its init folder
    assert train_asr(tmp_path / "sing.yaml", max_minutes=None)["step"] == 2
