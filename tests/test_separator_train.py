"""Separator training on a tiny generated corpus: runs, checkpoints, resumes exactly,
exports the best model, stops on SIGTERM / time budget, rejects bad configs and corrupt
checkpoints."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch
import yaml

from jrsv_stream.nn.separator import ConfigError, load_separator
from jrsv_stream.train.separator import CheckpointError, list_checkpoints, load_train_config, main, train_separator
from tests.test_dynamic_mixing import make_fake_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_fake_corpus(tmp_path_factory.mktemp("fake-corpus"), seed=3)


def write_config(path: Path, corpus: Path, root: Path, name: str = "tiny", arch: str = "stft_mask", **optim) -> Path:
    cfg = {
        "name": name,
        "model": {"arch": arch,
                  "stft_mask": {"window_ms": 8.0, "hop_ms": 4.0, "conv_channels": 8, "conv_layers": 1, "gru_hidden": 8,
                                "gru_layers": 1, "residual_hidden": 4},
                  "convtasnet": {"enc_kernel_ms": 2.0, "enc_filters": 8, "bottleneck": 6, "hidden": 8, "blocks": 2,
                                 "repeats": 1, "block_frames": 4}},
        "data": {"corpus": str(corpus), "crop_s": 0.5, "batch_size": 2, "num_workers": 0, "seed": 1, "valid_items": 2,
                 "valid_max_s": 2.0, "train_split": "train"},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 6, **optim},
        "run": {"runs_dir": str(root / "runs"), "export_dir": str(root / "models" / "separator"), "device": "cpu",
                "threads": 1, "log_every": 1, "ckpt_every": 3, "valid_every": 3, "keep_checkpoints": 2},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(run_dir: Path) -> dict:
    return torch.load(list_checkpoints(run_dir)[-1], map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("arch", ["stft_mask", "convtasnet"])
def test_train_checkpoint_export_and_exact_resume(tmp_path, corpus, arch):
    # straight run to 8 steps
    a = train_separator(str(write_config(tmp_path / "a.yaml", corpus, tmp_path / "a", arch=arch, max_steps=8)),
                        progress=False)
    assert a["step"] == 8 and a["stopped"] == "max_steps"
    run_a = Path(a["run_dir"])
    assert [p.name for p in list_checkpoints(run_a)] == ["ckpt-00000006.pt", "ckpt-00000008.pt"]  # keep 2
    export = tmp_path / "a" / "models" / "separator"
    assert (export / "config.yaml").is_file() and (export / "separator.pt").stat().st_size < 25e6
    from jrsv_stream.nn.pipeline import separator_track_gain
    assert (export / "calibration.json").is_file() and separator_track_gain(export) > 0  # its level, for the recognizer
    model, cfg, meta = load_separator(export)
    assert cfg.arch == arch and meta["valid"]["items"] == 2 and "si_sdri" in meta["valid"]
    assert load_train_config(export / "config.yaml").model == cfg

    # the same run interrupted at 4 steps, then resumed to 8: identical weights (constant lr
    # after warm-up, so that the schedule does not depend on max_steps)
    a = train_separator(str(write_config(tmp_path / "a.yaml", corpus, tmp_path / "a", arch=arch, max_steps=8,
                                         lr_min=3e-3)), progress=False, resume=False)
    cfg_b = write_config(tmp_path / "b.yaml", corpus, tmp_path / "b", arch=arch, max_steps=4, lr_min=3e-3)
    assert train_separator(str(cfg_b), progress=False)["step"] == 4
    write_config(cfg_b, corpus, tmp_path / "b", arch=arch, max_steps=8, lr_min=3e-3)
    b = train_separator(str(cfg_b), progress=False)
    assert b["step"] == 8
    wa, wb = _weights(run_a), _weights(Path(b["run_dir"]))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", corpus, tmp_path, max_steps=3)
    train_separator(str(cfg), progress=False)
    last = list_checkpoints(tmp_path / "runs" / "tiny")[-1]
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or unreadable.*--no-resume"):
        train_separator(str(cfg), progress=False)
    assert train_separator(str(cfg), resume=False, progress=False)["step"] == 3  # fresh start still works
    assert main(["--config", str(cfg)]) == 0  # the command line resumes from the fresh checkpoint


def test_changed_model_config_refuses_to_resume(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", corpus, tmp_path, max_steps=3)
    train_separator(str(cfg), progress=False)
    d = yaml.safe_load(cfg.read_text())
    d["model"]["stft_mask"]["gru_hidden"] = 12
    cfg.write_text(yaml.safe_dump(d))
    with pytest.raises(CheckpointError, match="model config"):
        train_separator(str(cfg), progress=False)


def test_strict_config(tmp_path, corpus):
    cfg = write_config(tmp_path / "c.yaml", corpus, tmp_path)
    d = yaml.safe_load(cfg.read_text())
    d["optim"]["learning_rate"] = 0.1
    cfg.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="optim.*unknown keys.*learning_rate"):
        load_train_config(cfg)
    assert main(["--config", str(cfg)]) == 2


def test_repo_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(p.name for p in root.glob("separator_*.yaml"))
    assert {"separator_stft.yaml", "separator_convtasnet.yaml"} <= set(names)
    for n in names:
        c = load_train_config(root / n)
        assert c.name == n[:-5]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_and_time_budget_stop_with_a_checkpoint(tmp_path, corpus, sig):
    cfg = write_config(tmp_path / "c.yaml", corpus, tmp_path, max_steps=100000)
    handler_before = signal.getsignal(sig)
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), sig))
    timer.start()
    try:
        res = train_separator(str(cfg), progress=False, max_minutes=1.0)
    finally:
        timer.cancel()
    assert res["stopped"] == ("sigterm" if sig == signal.SIGTERM else "sigint") and res["step"] > 0
    assert list_checkpoints(tmp_path / "runs" / "tiny")[-1].name == f"ckpt-{res['step']:08d}.pt"
    res2 = train_separator(str(cfg), progress=False, max_minutes=0.005)
    assert res2["stopped"] == "max_minutes" and res2["step"] >= res["step"]
    assert signal.getsignal(sig) == handler_before  # the handler is restored


def test_evaluate_separator_reports_snr_buckets(tmp_path, corpus):
    from jrsv_stream.train.separator import evaluate_separator

    res = train_separator(str(write_config(tmp_path / "c.yaml", corpus, tmp_path, max_steps=3)), progress=False)
    ev = evaluate_separator(tmp_path / "models" / "separator", corpus / "valid.jsonl")
    assert ev["items"] == 2 and ev["trained_steps"] == res["best_step"]
    assert ev["algorithmic_latency_ms"] == 8.0
    for s in ("speech", "singing", "music"):
        assert set(ev["si_sdri_by_snr"][s]) <= {"-5", "0", "5"}
        assert sum(ev["counts_by_snr"][s].values()) <= 2
    assert sum(ev["counts_by_snr"]["music"].values()) == 2  # music is in every item
    assert set(ev["activity"]) == {"speech", "singing"}


def _warm_start_config(tmp_path: Path, corpus: Path, name: str) -> tuple[Path, Path, dict]:
    """A 3-step source model, and a 1-step run config (lr ~0) warm-started from it:
    (source export folder, config path, config dict to edit and write)."""
    a = train_separator(str(write_config(tmp_path / "a.yaml", corpus, tmp_path / "a", max_steps=3)), progress=False)
    src = Path(a["export_dir"])
    cfg = write_config(tmp_path / "b.yaml", corpus, tmp_path / "b", name=name, max_steps=1, lr=1e-12, lr_min=1e-12,
                       warmup_steps=0)
    d = yaml.safe_load(cfg.read_text())
    d["run"]["init_from"] = str(src)
    return src, cfg, d


def test_init_from_warm_starts_a_new_run_with_the_given_weights(tmp_path, corpus):
    src, cfg, d = _warm_start_config(tmp_path, corpus, "warm")
    d["data"]["augment"] = {"enabled": True, "p_eq": 1.0, "p_reverb": 1.0}
    cfg.write_text(yaml.safe_dump(d))
    b = train_separator(str(cfg), progress=False)
    assert b["step"] == 1
    ref = load_separator(src)[0].state_dict()
    got = _weights(Path(b["run_dir"]))
    assert all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)  # lr ~0: still the source's weights
    d["model"]["stft_mask"]["gru_hidden"] = 12  # another model: refused, clearly
    d["name"] = "warm2"
    cfg.write_text(yaml.safe_dump(d))
    with pytest.raises(CheckpointError, match="init_from.*model config"):
        train_separator(str(cfg), progress=False)
    d["run"]["init_from"] = str(tmp_path / "nowhere")
    cfg.write_text(yaml.safe_dump(d))
    with pytest.raises(FileNotFoundError, match="init_from"):
        train_separator(str(cfg), progress=False)


def test_init_from_grows_refinement_layers_onto_a_model_without_them(tmp_path, corpus):
    src, cfg, d = _warm_start_config(tmp_path, corpus, "grown")
    d["model"]["stft_mask"].update(refine_layers=2, refine_hidden=6)
    cfg.write_text(yaml.safe_dump(d))
    b = train_separator(str(cfg), progress=False)
    ref, got = load_separator(src)[0], load_separator(Path(b["export_dir"]))[0]
    assert len(got.refine_grus) == 2
    x = torch.randn(1, 1600) * 0.2
    with torch.no_grad():  # lr ~0: the grown model still separates exactly as its source
        assert torch.allclose(ref(x).sources, got(x).sources, atol=1e-6)
    d["name"], d["model"]["stft_mask"]["gru_hidden"] = "grown2", 12  # grown onto another base: refused
    cfg.write_text(yaml.safe_dump(d))
    with pytest.raises(CheckpointError, match="init_from.*model config"):
        train_separator(str(cfg), progress=False)
    d["name"], d["model"]["stft_mask"]["gru_hidden"] = "grown3", 8  # and it resumes with its refinement layers
    cfg.write_text(yaml.safe_dump(d))
    train_separator(str(cfg), progress=False)
    d["optim"]["max_steps"] = 2
    cfg.write_text(yaml.safe_dump(d))
    assert train_separator(str(cfg), progress=False)["step"] == 2


def test_speech_target_keeps_music_under_the_voice_only_where_there_is_speech():
    """optim.speech_keep_music_db: the speech target is voice + music x 10^(dB/20) on the
    examples that have speech; examples without speech and the other stems are unchanged;
    -inf (the default) is the stems themselves."""
    import torch

    from jrsv_stream.train.separator import OptimConfig, speech_target

    g = torch.Generator().manual_seed(0)
    stems = torch.randn(3, 3, 800, generator=g)
    stems[1, 0] = 0.0  # the second example has no speech
    assert speech_target(stems, OptimConfig().speech_keep_music_db) is stems
    t = speech_target(stems, -12.0)
    k = 10 ** (-12 / 20)
    torch.testing.assert_close(t[0, 0], stems[0, 0] + k * stems[0, 2])
    torch.testing.assert_close(t[2, 0], stems[2, 0] + k * stems[2, 2])
    assert torch.equal(t[1, 0], stems[1, 0]) and torch.equal(t[:, 1:], stems[:, 1:])
    assert not torch.equal(stems[0, 0], t[0, 0])  # the input is not modified in place
