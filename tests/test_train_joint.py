"""Joint separator + recognizer training (`jrsv-stream train joint`) on tiny random models and a
hand-made manifest: loss terms with known answers (KL = 0 for equal student and teacher, empty
targets), which parameters move in each mode, exact resume, pipeline export, strict configs."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from jrsv_stream.cli import main as cli_main
from jrsv_stream.config import ConfigError
from jrsv_stream.data.dynamic import ManifestDataset
from jrsv_stream.nn.asr import ASRModel
from jrsv_stream.nn.pipeline import load_streaming_pipeline
from jrsv_stream.nn.separator import load_separator
from jrsv_stream.train.joint import (JointDataset, JointModels, compute_losses, config_from_raw, hybrid_outputs,
                                     item_texts, kl_divergence, list_checkpoints, load_config, train_joint)
from tests.tiny_models import one_thread, save_tiny_pipeline, tone  # noqa: F401 (one_thread: autouse fixture)

SR = 16000
TEXTS = ["the quick brown fox jumps over the lazy dog", "we sail across the silver sea tonight",
         "a rolling stone gathers no moss", "la la love is all around"] * 20
# id, speech text, singing text (None: the source is absent)
ITEMS = [("a", "the quick brown fox", None), ("b", None, "we sail across the sea"),
         ("c", "a rolling stone", "la la love"), ("d", "the lazy dog", "silver sea tonight")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Tiny random separator + two-track recognizer in the shipped layout."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("models"), TEXTS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """train.jsonl / valid.jsonl of 1-1.6 s items whose stems (tones, gated noise) sum to the mixture."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    for k, (item_id, sp_text, si_text) in enumerate(ITEMS):
        n = int((1.0 + 0.2 * k) * SR)
        d = root / "mixtures" / item_id
        d.mkdir(parents=True)
        stems = {"music": tone(220.0, n, 0.1) + (rng.normal(size=n) * 0.01).astype(np.float32)}
        if sp_text:
            stems["speech"] = (rng.normal(size=n) * 0.2 * (np.arange(n) % 4000 < 2500)).astype(np.float32)
        if si_text:
            stems["singing"] = tone(440.0 + 50 * k, n, 0.15)
        for name, x in stems.items():
            sf.write(d / f"{name}.wav", x, SR, subtype="FLOAT")
        sf.write(d / "mixture.wav", sum(stems.values()), SR, subtype="FLOAT")
        lines.append({"id": item_id, "mixture": f"mixtures/{item_id}/mixture.wav",
                      **{s: f"mixtures/{item_id}/{s}.wav" if s in stems else None
                         for s in ("speech", "singing", "music")},
                      "speech_text": sp_text, "singing_text": si_text, "sample_rate": SR,
                      "speech_snr_db": 0.0 if sp_text else None, "singing_snr_db": 5.0 if si_text else None})
    text = "".join(json.dumps(x) + "\n" for x in lines)
    (root / "train.jsonl").write_text(text)
    (root / "valid.jsonl").write_text(text)
    return root


def _raw_config(tmp_path: Path, model_dir: Path, corpus: Path, mode: str = "frozen", distill: bool = False,
                **over) -> dict:
    cfg = {
        "name": "tiny", "runs_dir": str(tmp_path / "runs"), "export_dir": str(tmp_path / "export"), "seed": 0,
        "separator": {"mode": mode, "init": None if mode == "none" else str(model_dir / "separator"),
                      "stage1_steps": 0},
        "asr": {"init": str(model_dir / "asr")},
        "distill": {"enabled": distill, "temperature": 2.0},
        "loss": {"asr_weight": 2.0, "sep_weight": 1.0, "distill_weight": 1.0},
        "optim": {"lr": 0.003, "sep_lr": 0.003, "warmup_steps": 1},
        "data": {"train_manifest": str(corpus / "train.jsonl"), "valid_manifest": str(corpus / "valid.jsonl"),
                 "batch_seconds": 3.5, "max_batch": 2, "valid_items": 3, "num_workers": 0},
        "train": {"max_steps": 2, "valid_every_steps": 0, "ckpt_every_steps": 100, "keep_checkpoints": 2,
                  "device": "cpu", "threads": 1, "progress": False},
    }
    for key, v in over.items():  # "train.max_steps" style keys
        d = cfg
        *path, last = key.split(".")
        for p in path:
            d = d[p]
        d[last] = v
    return cfg


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _ckpt(tmp_path: Path) -> dict:
    return torch.load(list_checkpoints(tmp_path / "runs" / "tiny")[-1], weights_only=False)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _batch(model_dir: Path, corpus: Path, cfg, hop: int):
    from jrsv_stream.decode.tokenizer import Tokenizer

    tok = Tokenizer(model_dir / "asr" / "tokenizer.model")
    items = ManifestDataset(corpus / "train.jsonl", hop)
    texts = item_texts(items)
    tokens = [tuple(tok.encode(t) if t else [] for t in tt) for tt in texts]
    return JointDataset(items, tokens, texts, [[0, 1, 2]])[0]


# --- loss terms -----------------------------------------------------------------------------------
def test_hybrid_outputs_equal_the_model_loss_and_empty_targets_are_finite(model_dir):
    asr = ASRModel.from_pretrained(model_dir / "asr")
    torch.manual_seed(1)
    feats, lens = torch.randn(3, 120, 80), torch.tensor([120, 100, 64])
    ys, tracks = [[5, 6, 7], [], [9]], torch.tensor([0, 1, 1])
    for chunk in (None, 4):
        ref = asr.loss(feats, lens, ys, tracks, chunk, -1)
        got = hybrid_outputs(asr, feats, lens, ys, tracks, chunk, -1)
        for k in ("loss", "ctc", "att", "acc"):
            assert torch.equal(ref[k], got[k]), k
        assert torch.isfinite(got["loss"])
        assert got["ctc_logp"].shape == (3, 30, asr.vocab_size) and got["dec_logits"].shape == (3, 4, asr.vocab_size)
        assert got["dec_valid"].sum(1).tolist() == [4, 1, 2]  # tokens + <eos>; the empty target is <eos> only


def test_kl_divergence_by_hand():
    s = torch.log_softmax(torch.tensor([[[1.0, 2.0, 0.0]]]), -1)
    t = torch.log_softmax(torch.tensor([[[0.0, 1.0, 3.0]]]), -1)
    pt = t.exp()
    ref = float((pt * (t - s)).sum())
    assert float(kl_divergence(s, t, torch.ones(1, 1, dtype=torch.bool))) == pytest.approx(ref, rel=1e-6)
    assert float(kl_divergence(s, t, torch.zeros(1, 1, dtype=torch.bool))) == 0.0
    assert float(kl_divergence(t, t, torch.ones(1, 1, dtype=torch.bool), 3.0)) == 0.0


def test_distillation_term_is_zero_for_equal_student_and_teacher_inputs(tmp_path, model_dir, corpus):
    cfg = config_from_raw(_raw_config(tmp_path, model_dir, corpus, mode="none", distill=True))
    student = ASRModel.from_pretrained(model_dir / "asr").train()
    teacher = ASRModel.from_pretrained(model_dir / "asr")
    models = JointModels(student, None, teacher)
    batch = _batch(model_dir, corpus, cfg, student.frame_samples)
    assert batch.tokens[0][1] == [] and batch.tokens[1][0] == []  # item a has no singing, b no speech
    dev = torch.device("cpu")
    for chunk, left in ((None, -1), (4, 2)):
        out = compute_losses(models, batch, cfg, chunk, left, False, dev, teacher_hears="student_input")
        assert out["kd_ctc"].item() == 0.0 and out["kd_att"].item() == 0.0 and out["kd"].item() == 0.0
        assert out["rows"].item() == 6 and torch.isfinite(out["total"])
        assert out["total"].item() == pytest.approx(2.0 * out["asr"].item(), rel=1e-6)  # asr_weight 2, nothing else
        clean = compute_losses(models, batch, cfg, chunk, left, False, dev)  # teacher on the clean stems
        assert clean["kd_ctc"].item() > 0 and clean["kd_att"].item() > 0
        assert clean["asr"].item() == out["asr"].item()
    out["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    # absent_tracks: skip drops the two rows without text
    skip = config_from_raw(_raw_config(tmp_path, model_dir, corpus, mode="none", distill=True,
                                       **{"data.absent_tracks": "skip"}))
    assert compute_losses(models, batch, skip, None, -1, False, dev)["rows"].item() == 4


def test_separator_loss_only_when_it_trains(tmp_path, model_dir, corpus):
    cfg = config_from_raw(_raw_config(tmp_path, model_dir, corpus, mode="train"))
    sep, _, _ = load_separator(model_dir / "separator")
    asr = ASRModel.from_pretrained(model_dir / "asr").train()
    batch = _batch(model_dir, corpus, cfg, sep.hop_samples)
    models = JointModels(asr, sep.train(), None)
    on = compute_losses(models, batch, cfg, None, -1, True, torch.device("cpu"))
    off = compute_losses(models, batch, cfg, None, -1, False, torch.device("cpu"))
    assert torch.isfinite(on["sep"]) and on["sep"].item() != 0.0 and np.isfinite(on["si_sdr"].item())
    assert on["total"].item() == pytest.approx(2.0 * on["asr"].item() + on["sep"].item(), rel=1e-5)
    assert off["sep"].item() == 0.0 and off["total"].item() == pytest.approx(2.0 * off["asr"].item(), rel=1e-6)
    on["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sep.parameters())


# --- which parameters move ------------------------------------------------------------------------
def _initial(model_dir: Path) -> tuple[dict, dict]:
    sep, _, _ = load_separator(model_dir / "separator")
    return sep.state_dict(), ASRModel.from_pretrained(model_dir / "asr").state_dict()


@pytest.mark.parametrize("mode,distill,stage1,sep_moves", [("frozen", False, 0, False), ("train", True, 2, False),
                                                           ("train", False, 0, True)])
def test_parameters_that_move_in_each_mode(tmp_path, model_dir, corpus, mode, distill, stage1, sep_moves):
    sep0, asr0 = _initial(model_dir)
    cfg = _write(tmp_path / "c.yaml", _raw_config(tmp_path, model_dir, corpus, mode=mode, distill=distill,
                                                  **{"separator.stage1_steps": stage1}))
    s = train_joint(cfg)
    assert s["status"] == "finished" and s["step"] == 2
    ck = _ckpt(tmp_path)
    assert _same(ck["separator"], sep0) != sep_moves
    assert not _same(ck["asr"], asr0)
    assert any(not torch.equal(ck["asr"][k], asr0[k]) for k in asr0 if k.startswith("encoder.layers"))
    logs = [json.loads(x) for x in (tmp_path / "runs" / "tiny" / "log.jsonl").read_text().splitlines()]
    valid = [r for r in logs if r["kind"] == "valid"]
    assert valid and {"speech", "lyrics", "wer_mean", "separation"} <= set(valid[-1])
    assert set(valid[-1]["separation"]["si_sdri"]) == {"speech", "singing", "music"}


# --- resume ---------------------------------------------------------------------------------------
def test_killed_run_resumes_to_the_same_parameters(tmp_path, model_dir, corpus):
    # stage 1 for 2 steps then joint training with distillation: the resume crosses the stage switch
    over = {"separator.stage1_steps": 2, "train.ckpt_every_steps": 2, "data.max_batch": 1}
    a = train_joint(_write(tmp_path / "a.yaml", _raw_config(tmp_path / "a", model_dir, corpus, "train", True,
                                                            **over, **{"train.max_steps": 4})))
    ref = _ckpt(tmp_path / "a")
    assert a["step"] == 4 and a["steps_this_run"] == 4
    cfg_b = tmp_path / "b.yaml"
    _write(cfg_b, _raw_config(tmp_path / "b", model_dir, corpus, "train", True, **over, **{"train.max_steps": 3}))
    assert train_joint(cfg_b)["step"] == 3
    run_b = tmp_path / "b" / "runs" / "tiny"
    list_checkpoints(run_b)[-1].unlink()  # "killed" after the step-2 checkpoint: step 3 is lost
    assert list_checkpoints(run_b)[-1].name == "step-00000002.pt"
    _write(cfg_b, _raw_config(tmp_path / "b", model_dir, corpus, "train", True, **over, **{"train.max_steps": 4}))
    b = train_joint(cfg_b)
    assert b["step"] == 4 and b["steps_this_run"] == 2
    got = _ckpt(tmp_path / "b")
    assert (got["epoch"], got["batch_in_epoch"]) == (ref["epoch"], ref["batch_in_epoch"])
    assert _same(ref["asr"], got["asr"]) and _same(ref["separator"], got["separator"])
    so_a, so_b = ref["optimizer"]["state"], got["optimizer"]["state"]
    assert so_a.keys() == so_b.keys() and all(_same(so_a[k], so_b[k]) for k in so_a)
    assert ref["scheduler"] == got["scheduler"]


def test_sigterm_stops_with_a_checkpoint_and_the_rerun_resumes(tmp_path, model_dir, corpus):
    cfg = _write(tmp_path / "c.yaml", _raw_config(tmp_path, model_dir, corpus, "frozen",
                                                  **{"train.max_steps": 100000, "train.max_minutes": 1.0}))
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    handler = signal.getsignal(signal.SIGTERM)
    timer.start()
    try:
        s = train_joint(cfg)
    finally:
        timer.cancel()
    assert s["status"] == "sigterm" and s["step"] > 0 and s["export_dir"] is None
    assert list_checkpoints(tmp_path / "runs" / "tiny")[-1].name == f"step-{s['step']:08d}.pt"
    assert signal.getsignal(signal.SIGTERM) == handler
    s2 = train_joint(cfg, max_minutes=0.0001)  # budget already spent: resumes, takes no step, exports
    assert s2["status"] == "finished" and s2["step"] == s["step"] and s2["export_dir"]


# --- export ---------------------------------------------------------------------------------------
def test_export_is_a_pipeline_folder_and_the_cli_runs(tmp_path, model_dir, corpus):
    import shutil

    from jrsv_stream.decode.ngram_lm import TokenNgramLM
    from jrsv_stream.decode.tokenizer import Tokenizer

    # the initial recognizer has an LM: the exported pipeline carries it (same tokenizer)
    shutil.copytree(model_dir, tmp_path / "init")
    tok = Tokenizer(tmp_path / "init" / "asr" / "tokenizer.model")
    TokenNgramLM.train([tok.encode("the quick brown fox")] * 3, 2, tok.vocab_size, tok.eos_id, weight=0.7).save(
        tmp_path / "init" / "asr" / "lm.npz")
    cfg = _write(tmp_path / "c.yaml", _raw_config(tmp_path, tmp_path / "init", corpus, "train", **{"train.max_steps": 1}))
    assert cli_main(["train", "joint", "--config", str(cfg)]) == 0
    export = tmp_path / "export"
    p = load_streaming_pipeline(export, chunk_samples=5120, device="cpu")
    assert p.lm is not None and p.lm.weight == 0.7
    out, _ = p.step(torch.zeros(1, 5120), p.init_state(1, "cpu"))
    assert out.logp["speech"].shape[1] == 8
    summary = json.loads((export / "train_summary.json").read_text())
    assert summary["step"] == 1 and summary["separator_mode"] == "train" and summary["config"]["name"] == "tiny"
    assert {"speech", "lyrics", "wer_mean", "separation"} <= set(summary["best_valid"])
    assert "--pipeline" in (export / "README.md").read_text()
    _, _, meta = load_separator(export / "separator")
    assert meta["name"] == "tiny" and meta["step"] == summary["best_step"]
    # --export-only copies the run's best again
    (export / "asr" / "asr.pt").unlink()
    assert cli_main(["train", "joint", "--config", str(cfg), "--export-only"]) == 0
    assert (export / "asr" / "asr.pt").is_file()


def test_mixture_asr_exports_a_recognizer_only(tmp_path, model_dir, corpus):
    export = tmp_path / "export"
    (export / "separator").mkdir(parents=True)
    (export / "separator" / "separator.pt").write_bytes(b"stale")
    cfg = _write(tmp_path / "c.yaml", _raw_config(tmp_path, model_dir, corpus, "none", **{"train.max_steps": 1}))
    s = train_joint(cfg)
    assert s["status"] == "finished" and s["export_dir"] == str(export)
    assert ASRModel.from_pretrained(export / "asr").vocab_size == 40
    assert not (export / "separator").exists()
    assert "--separator none" in (export / "README.md").read_text()
    assert _ckpt(tmp_path)["separator"] is None


# --- configs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,match", [
    ("separator.mode", "joint", "separator.mode"),
    ("separator.init", "models/separator", "separator.init"),  # with mode none
    ("train.max_steps", "ten", "train.max_steps"),
    ("loss.asr_wieght", 2.0, "asr_wieght"),
    ("data.absent_tracks", "drop", "data.absent_tracks"),
    ("distill.temperature", 0.0, "distill.temperature"),
    ("optim.schedule", "linear", "optim.schedule"),
])
def test_malformed_config_names_the_field(tmp_path, model_dir, corpus, key, value, match):
    raw = _raw_config(tmp_path, model_dir, corpus, mode="none", **{key: value})
    with pytest.raises(ConfigError, match=match):
        config_from_raw(raw)
    path = _write(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError, match=f"bad.yaml.*{match}"):
        load_config(path)
    assert cli_main(["train", "joint", "--config", str(path)]) == 2


def test_resuming_with_another_setup_is_refused(tmp_path, model_dir, corpus):
    cfg = _write(tmp_path / "c.yaml", _raw_config(tmp_path, model_dir, corpus, "frozen", **{"train.max_steps": 1}))
    train_joint(cfg)
    _write(cfg, _raw_config(tmp_path, model_dir, corpus, "train", **{"train.max_steps": 2}))
    with pytest.raises(ConfigError, match="another setup"):
        train_joint(cfg)


def test_repo_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    want = {"joint_mixture_asr": ("none", False), "joint_cascade_ft": ("frozen", False),
            "joint_finetune": ("train", False), "joint_distill": ("train", True)}
    for name, (mode, distill) in want.items():
        c = load_config(root / f"{name}.yaml")
        assert c.name == name and c.export_dir == f"models/variants/{name}"
        assert (c.separator.mode, c.distill.enabled) == (mode, distill)
        assert c.asr.init == "models/asr" and 0 < c.train.max_minutes <= 40
    assert load_config(root / "joint_finetune.yaml").loss.asr_weight == 2.0
    assert load_config(root / "joint_distill.yaml").separator.stage1_steps > 0
