"""Recognition losses through the Whisper-CTC recognizer for the separator's training
(issue 16): the CTC span of a crop, distillation is zero exactly when the separated track is
the clean stem, gradients reach the separator (and only the head in the frozen variant), and
the trainer's three variants run, export and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from jrsv_stream.data.dynamic import DynamicMixDataset, crop_words
from jrsv_stream.nn.separator import load_separator
from jrsv_stream.train.recognizer_loss import RecognizerLoss, RecognizerLossConfig, ctc_span
from jrsv_stream.train.separator import list_checkpoints, train_separator
from tests.test_dynamic_mixing import make_fake_corpus
from tests.test_separator_train import write_config

ASR = "models/whisper_ctc"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_fake_corpus(tmp_path_factory.mktemp("fake-corpus-rec"), seed=5)


@pytest.fixture(scope="module")
def whisper():
    from jrsv_stream.nn.whisper_weights import load_whisper

    return load_whisper("base")


def test_crop_words_and_ctc_span_leave_cut_words_out():
    words = [("one", 0.1, 0.5), ("two", 0.6, 1.0), ("three", 1.2, 1.6), ("four", 1.8, 2.3)]
    cw = crop_words(words, 0.3, 1.7)  # crop [0.3, 2.0): "one" and "four" are cut
    assert [w for w, _, _ in cw] == ["one", "two", "three", "four"]
    assert cw[0][1] == pytest.approx(-0.2) and cw[-1][2] == pytest.approx(2.0)
    a, b, text = ctc_span(cw, 1.7, margin_s=0.04)
    assert text == "two three"
    assert a == pytest.approx(0.2 + 0.04) and b == pytest.approx(1.5 - 0.04)
    assert ctc_span([("x", 0.2, 0.4)], 1.0) == (0.0, 1.0, "x")  # nothing cut: the whole crop
    assert crop_words(None, 0.0, 1.0) == []


def _batch(corpus: Path, hop: int):
    ds = DynamicMixDataset(corpus, "train", 16000 // hop * hop, hop, batch_size=2, seed=2)
    return ds.batch(0)


def test_distillation_is_zero_on_the_clean_stems_and_grows_with_leakage(corpus, whisper):
    rec = RecognizerLoss(RecognizerLossConfig(enabled=True, asr=ASR, kd=1.0, feat=1.0), whisper=whisper)
    b = _batch(corpus, 64)
    D = 48
    perfect = torch.nn.functional.pad(b["stems"], (D, 0))[..., :b["stems"].shape[-1]]
    t = rec(perfect, b["stems"], b["mixture"], b["meta"], D)
    assert t["rows"] > 0 and t["kd"] == pytest.approx(0.0, abs=1e-6) and t["feat"] == pytest.approx(0.0, abs=1e-6)
    leaky = perfect.clone()
    leaky[:, :2] += 0.5 * torch.nn.functional.pad(b["stems"][:, 2:3], (D, 0))[..., :b["stems"].shape[-1]]
    t2 = rec(leaky, b["stems"], b["mixture"], b["meta"], D)
    assert t2["kd"] > 1e-3 and t2["feat"] > 1e-2


def test_recognizer_hears_the_separated_tracks_at_the_calibrated_level(corpus, whisper):
    """SI-SDR leaves the separator's output level free (the shipped one is ~26 dB low): the
    loss hears the tracks after the same gain as the live pipeline, so quiet but otherwise
    perfect tracks distil to zero with the gain and not without it."""
    b = _batch(corpus, 64)
    D, g_db = 48, 26.0
    quiet = torch.nn.functional.pad(b["stems"], (D, 0))[..., :b["stems"].shape[-1]] * 10 ** (-g_db / 20)
    cfg = RecognizerLossConfig(enabled=True, asr=ASR, kd=1.0, feat=1.0)
    with_gain = RecognizerLoss(cfg, whisper=whisper, gain_db=g_db)(quiet, b["stems"], b["mixture"], b["meta"], D)
    # (not exactly zero: the bf16 encoder rounds the rescaled samples' features)
    assert with_gain["kd"] < 1e-3 and with_gain["feat"] < 0.03
    no_gain = RecognizerLoss(cfg, whisper=whisper)(quiet, b["stems"], b["mixture"], b["meta"], D)
    assert no_gain["feat"] > 10 * with_gain["feat"] and no_gain["kd"] > 10 * with_gain["kd"]
    pinned = RecognizerLoss(RecognizerLossConfig(enabled=True, asr=ASR, kd=1.0, feat=1.0, gain_db=0.0),
                            whisper=whisper, gain_db=g_db)  # the config's gain_db wins
    assert pinned.gain == 1.0


def test_ctc_gradient_reaches_the_separator_and_not_the_frozen_encoder(corpus, whisper, tmp_path):
    path = write_config(tmp_path / "c.yaml", corpus, tmp_path)
    from jrsv_stream.train.separator import load_train_config
    from jrsv_stream.nn.separator import build_separator

    model = build_separator(load_train_config(path).model)
    rec = RecognizerLoss(RecognizerLossConfig(enabled=True, asr=ASR, ctc=1.0), whisper=whisper)
    b = _batch(corpus, model.hop_samples)
    out = model(b["mixture"])
    t = rec(out.sources, b["stems"], b["mixture"], b["meta"], model.output_delay_samples)
    assert t["ctc"] > 0
    t["total"].backward()
    g = sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)
    assert g > 0
    assert all(p.grad is None for p in rec.model.whisper.parameters())
    assert all(p.grad is None for p in rec.model.heads.parameters())  # head frozen unless train_head


def test_bad_variant_settings_are_clear_errors(whisper):
    with pytest.raises(ValueError, match="freeze_separator"):
        RecognizerLoss(RecognizerLossConfig(enabled=True, asr=ASR, ctc=1.0, features="live"), whisper=whisper)
    with pytest.raises(ValueError, match="nothing to learn"):
        RecognizerLoss(RecognizerLossConfig(enabled=True, asr=ASR, ctc=1.0, freeze_separator=True), whisper=whisper)
    with pytest.raises(ValueError, match="features"):
        RecognizerLoss(RecognizerLossConfig(enabled=True, asr=ASR, ctc=1.0, features="both"), whisper=whisper)


def _rec_config(tmp_path: Path, corpus: Path, name: str, rec: dict, max_steps: int = 3) -> Path:
    p = write_config(tmp_path / f"{name}.yaml", corpus, tmp_path / name, name=name, max_steps=max_steps)
    d = yaml.safe_load(p.read_text())
    d["data"]["crop_s"] = 1.0
    d["run"]["select"] = "last"
    d["recognizer"] = {"enabled": True, "asr": ASR, **rec}
    p.write_text(yaml.safe_dump(d))
    return p


def test_joint_run_changes_the_separator_and_resumes(tmp_path, corpus):
    p = _rec_config(tmp_path, corpus, "joint", {"ctc": 1.0, "kd": 0.5, "feat": 0.5}, max_steps=3)
    r = train_separator(str(p), progress=False)
    assert r["step"] == 3
    logs = [yaml.safe_load(x) for x in (Path(r["run_dir"]) / "log.jsonl").read_text().splitlines()]
    steps = [x for x in logs if "lr" in x]
    assert steps and all("rec_kd" in x or "rec_ctc" in x for x in steps)
    first = torch.load(list_checkpoints(Path(r["run_dir"]))[-1], weights_only=True)["model"]
    d = yaml.safe_load(p.read_text())
    d["optim"]["max_steps"] = 5
    p.write_text(yaml.safe_dump(d))
    r2 = train_separator(str(p), progress=False)  # resumes from step 3
    assert r2["step"] == 5
    exported, _, meta = load_separator(Path(d["run"]["export_dir"]))
    assert meta["step"] == 5  # select: last
    assert any(not torch.equal(first[k], v) for k, v in exported.state_dict().items())


def test_frozen_separator_variant_adapts_only_the_head(tmp_path, corpus):
    p = _rec_config(tmp_path, corpus, "frozen", {"ctc": 1.0, "features": "live", "freeze_separator": True,
                                                  "train_head": True, "head_lr": 1e-3}, max_steps=2)
    d = yaml.safe_load(p.read_text())
    d["data"]["crop_s"] = 0.64  # two live chunks of 320 ms
    init = tmp_path / "init"
    train_separator(str(write_config(tmp_path / "i.yaml", corpus, init, name="init", max_steps=1)), progress=False)
    d["run"]["init_from"] = str(init / "models" / "separator")
    p.write_text(yaml.safe_dump(d))
    r = train_separator(str(p), progress=False)
    out = Path(d["run"]["export_dir"])
    sep, _, _ = load_separator(out)
    src, _, _ = load_separator(init / "models" / "separator")
    assert all(torch.equal(a, b) for a, b in zip(sep.state_dict().values(), src.state_dict().values()))
    new_head = torch.load(out / "asr" / "ctc_head.pt", weights_only=True)
    old_head = torch.load(Path(ASR) / "ctc_head.pt", weights_only=True)
    assert any(not torch.equal(new_head[k], old_head[k]) for k in old_head)
    assert (out / "asr" / "config.yaml").read_text() == (Path(ASR) / "config.yaml").read_text()
    ck = torch.load(list_checkpoints(Path(r["run_dir"]))[-1], weights_only=True)
    assert "head" in ck and "head_optim" in ck
