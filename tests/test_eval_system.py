"""System evaluation (`jrsv-stream eval`): metric aggregation by hand, separation scoring with
known answers, and the CLI on a hand-made manifest through the live path (tiny models)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jrsv_stream.cli import main as cli_main
from jrsv_stream.eval.system_eval import (_run_item, count_errors, normalize_text, score_tracks,
                                          summarize_separation_by_scenario)
from jrsv_stream.nn.asr import ASRModel
from jrsv_stream.nn.pipeline import JRSVPipeline, PassThroughSeparator
from jrsv_stream.stream.worker import BatchWorker
from jrsv_stream.eval.separation import score_separation_item
from tests.tiny_models import one_thread, save_tiny_pipeline, tone  # noqa: F401 (one_thread: autouse fixture)

SR = 16000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random separator + recognizer in the shipped layout (separator/, asr/)."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("models"))


# id, scenario, present vocals, speech bucket, singing bucket
ITEMS = [("sp", "speech", ("speech",), 5, None), ("si", "singing", ("singing",), None, -5),
         ("bo", "both", ("speech", "singing"), 0, 0)]
SPEECH_TEXT = {"sp": "Hello, world!", "bo": "we sail across the sea"}
SINGING_TEXT = {"si": "la la love", "bo": "silver sea"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Hand-made manifest: stems are tones + noise bursts that sum exactly to the mixture; one
    extra item ("bad") has an unreadable mixture file."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    n = int(1.5 * SR)
    lines = []
    for item_id, scen, vocals, b_sp, b_si in ITEMS:
        d = root / "mixtures" / item_id
        d.mkdir(parents=True)
        stems = {"music": tone(220.0, n, 0.1) + (rng.normal(size=n) * 0.01).astype(np.float32)}
        if "speech" in vocals:
            stems["speech"] = (tone(700.0, n, 0.2) * (rng.random(n) > 0.3)).astype(np.float32)
        if "singing" in vocals:
            stems["singing"] = tone(440.0, n, 0.15)
        for k, v in stems.items():
            sf.write(d / f"{k}.wav", v, SR, subtype="FLOAT")
        sf.write(d / "mixture.wav", sum(stems.values()), SR, subtype="FLOAT")
        lines.append({"id": item_id, "mixture": f"mixtures/{item_id}/mixture.wav",
                      **{k: f"mixtures/{item_id}/{k}.wav" if k in stems else None for k in ("speech", "singing", "music")},
                      "speech_text": SPEECH_TEXT.get(item_id), "singing_text": SINGING_TEXT.get(item_id), "sample_rate": SR,
                      "scenario": scen, "speech_snr_db": None if b_sp is None else float(b_sp) + 0.3,
                      "singing_snr_db": None if b_si is None else float(b_si) - 0.2,
                      "speech_snr_bucket": b_sp, "singing_snr_bucket": b_si})
    (root / "mixtures" / "bad").mkdir()
    (root / "mixtures" / "bad" / "mixture.wav").write_bytes(b"this is not audio")
    lines.append({**lines[0], "id": "bad", "mixture": "mixtures/bad/mixture.wav"})
    (root / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.fixture(scope="module")
def full_run(models, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "eval.json"
    rc = cli_main(["eval", str(corpus / "test.jsonl"), "--pipeline", str(models), "--json", str(out), "--streams", "3",
                   "--label", "tiny-full", "--quiet"])
    assert rc == 0
    return json.loads(out.read_text())


# --- aggregation by hand --------------------------------------------------------------------------
def test_normalize_text():
    assert normalize_text("Hello,  World! It's ME.") == "hello world it's me"
    assert normalize_text("'quoted' -- dash") == "quoted dash"
    assert normalize_text(None) == "" and normalize_text("?!") == ""


def test_corpus_level_wer_cer_with_hallucinations_by_hand():
    recs = [
        {"scenario": "speech", "speech": {"ref": "The cat sat.", "hyp": "the cat sat down", "snr_bucket": -5},
         "lyrics": {"ref": None, "hyp": "La la", "snr_bucket": None}},
        {"scenario": "singing", "speech": {"ref": None, "hyp": "", "snr_bucket": None},
         "lyrics": {"ref": "hello world", "hyp": "Hello word", "snr_bucket": 0}},
        {"scenario": "both", "speech": {"ref": "a b c d", "hyp": "", "snr_bucket": 5},
         "lyrics": {"ref": "sing it", "hyp": "sing it!", "snr_bucket": -5}},
    ]
    res = score_tracks(recs)
    sp, ly = res["speech"], res["lyrics"]
    # speech: 1 insertion / 3 words + 4 deletions / 4 words; chars: 5 inserted " down" of 11, 7 deleted of 7
    assert sp["wer"] == pytest.approx(100 * 5 / 7, abs=1e-3) and sp["n_ref_words"] == 7
    assert sp["cer"] == pytest.approx(100 * 12 / 18, abs=1e-3) and sp["hallucinated_words"] == 0
    # lyrics: 2 hallucinated words (absent track) + 1 substitution + 0, over 2 + 2 reference words
    assert ly["wer"] == pytest.approx(100 * 3 / 4, abs=1e-3) and ly["hallucinated_words"] == 2
    assert ly["cer"] == pytest.approx(100 * (5 + 1) / (11 + 7), abs=1e-3)
    # without the hallucination the lyrics WER is 1/4: the 2 inserted words add exactly 2/4
    recs[0]["lyrics"]["hyp"] = ""
    assert score_tracks(recs)["lyrics"]["wer"] == pytest.approx(25.0)
    # groups: buckets only where the track's source is present; scenarios always
    assert set(sp["by_snr"]) == {"-5", "5"} and sp["by_snr"]["-5"]["wer"] == pytest.approx(100 / 3, abs=1e-3)
    assert sp["by_snr"]["5"]["wer"] == 100.0
    assert set(ly["by_snr"]) == {"-5", "0"} and ly["by_snr"]["0"]["wer"] == 50.0
    assert ly["by_scenario"]["speech"] == {"wer": None, "cer": None, "n_ref_words": 0, "n_ref_chars": 0, "word_errors": 2,
                                           "char_errors": 5, "hallucinated_words": 2, "n_items": 1, "n_ref_items": 0}
    assert ly["by_scenario"]["both"]["wer"] == 0.0 and sp["by_scenario"]["singing"]["wer"] is None


def test_count_errors_absent_or_empty_reference():
    c = count_errors(None, "one two three")
    assert (c.word_errors, c.ref_words, c.hallucinated_words, c.char_errors) == (3, 0, 3, 13)
    assert count_errors("", "") .word_errors == 0
    c = count_errors("a b", None)
    assert (c.word_errors, c.ref_words, c.char_errors, c.ref_chars) == (2, 2, 3, 3)


# --- separation scoring -----------------------------------------------------------------------------
def _example(scenario="both"):
    """Orthogonal zero-mean stems (whole periods over 1 s), equal energy: mixture = sum."""
    n = SR
    t = np.arange(n) / SR
    stems = np.stack([np.sin(2 * np.pi * f * t) for f in (300.0, 500.0, 700.0)]).astype(np.float32)
    act = np.ones((2, n // 256), dtype=np.float32)
    return {"mixture": torch.from_numpy(stems.sum(0)), "stems": torch.from_numpy(stems), "activity": torch.from_numpy(act),
            "length": n, "meta": {"id": "x", "scenario": scenario, "present": [True, True, True], "speech_snr_db": 0.2,
                                  "singing_snr_db": -4.6}}


def test_estimate_closer_to_reference_gives_the_expected_si_sdri():
    ex = _example()
    ref, mix = ex["stems"].numpy().astype(np.float64), ex["mixture"].numpy().astype(np.float64)
    # est = ref + 0.1 * (the other sources): interference power down by 20 dB -> SI-SDRi = 20 dB
    est = ref + 0.1 * (mix - ref)
    probs = np.full((2, ex["activity"].shape[1]), 0.9, dtype=np.float32)
    s = score_separation_item(est, probs, ex, ex["length"])
    assert s["si_sdri"] == pytest.approx({k: 20.0 for k in ("speech", "singing", "music")}, abs=1e-4)
    # mixture SI-SDR of each source against two equal-energy orthogonal interferers: -3.01 dB
    assert s["si_sdr"]["speech"] == pytest.approx(20.0 - 10 * np.log10(2), abs=1e-4)
    assert s["snr_bucket"] == {"speech": "0", "singing": "-5", "music": "0"}  # music: mean of the vocals' SNRs (-2.2)
    s_mix = score_separation_item(np.broadcast_to(mix, (3, len(mix))), probs, _example("speech"), ex["length"])
    res = summarize_separation_by_scenario([s, s_mix])
    assert res["si_sdri"]["singing"] == pytest.approx(10.0, abs=1e-4)  # mean of 20 and 0
    assert res["by_scenario"]["both"]["si_sdri"]["music"] == pytest.approx(20.0, abs=1e-4)
    assert res["by_scenario"]["speech"]["si_sdri"]["speech"] == pytest.approx(0.0, abs=1e-6)
    assert res["counts_by_snr"]["singing"] == {"-5": 2} and res["items"] == 2
    assert res["activity"]["speech"]["f1"] == 1.0


def test_pass_through_separator_hands_the_mixture_to_both_tracks(models):
    sep = PassThroughSeparator()
    x = torch.randn(2, 1280)
    out, st = sep.step(x, sep.init_state(2))
    assert torch.equal(out.sources, x[:, None].expand(2, 3, 1280)) and bool((out.activity_probs == 1.0).all())
    assert st.samples_seen.tolist() == [1280, 1280] and torch.equal(sep(x).sources, out.sources)
    with pytest.raises(ValueError, match="chunk"):
        sep.step(torch.zeros(2, 1000), sep.init_state(2))
    from jrsv_stream.decode.tokenizer import Tokenizer

    p = JRSVPipeline(sep, ASRModel.from_pretrained(models / "asr"), Tokenizer(models / "asr" / "tokenizer.model"), 5120)
    o, _ = p.step(torch.randn(2, 5120) * 0.1, p.init_state(2))
    assert all(bool((o.activity[t] == 1.0).all()) for t in p.tracks)
    assert p.algorithmic_latency_ms == pytest.approx(320.0) and p.frame_offset_s == 0.0


def test_live_item_with_a_pass_through_separator_scores_zero_si_sdri(models, corpus):
    """The separation path of one item (load, chunked step, alignment, scoring): estimating
    every source by the mixture improves nothing, exactly."""
    from jrsv_stream.data.dynamic import ManifestDataset
    from jrsv_stream.decode.tokenizer import Tokenizer

    sep = PassThroughSeparator(256)
    p = JRSVPipeline(sep, ASRModel.from_pretrained(models / "asr"), Tokenizer(models / "asr" / "tokenizer.model"), 5120)
    ds = ManifestDataset(corpus / "test.jsonl", 256)
    with BatchWorker(p, max_batch=1, max_wait_ms=0, device="cpu") as w:
        rec = _run_item(w, ds, 2, 5120, True)
    assert rec["id"] == "bo" and rec["speech"]["ref"] == SPEECH_TEXT["bo"] and rec["lyrics"]["snr_bucket"] == "0"
    assert rec["separation"]["si_sdri"] == pytest.approx({"speech": 0.0, "singing": 0.0, "music": 0.0}, abs=1e-6)


# --- the command --------------------------------------------------------------------------------------
def test_cli_writes_per_track_bucket_scenario_and_separation(full_run):
    r = full_run
    assert r["label"] == "tiny-full" and r["n_items"] == 3
    assert [f["id"] for f in r["failed_items"]] == ["bad"] and "bad" in r["failed_items"][0]["error"]
    assert r["config"]["chunk_ms"] == 320.0 and r["config"]["algorithmic_latency_ms"] == pytest.approx(352.0)
    assert r["config"]["separator"].endswith("separator") and r["config"]["asr"].endswith("asr")
    sp, ly = r["tracks"]["speech"], r["tracks"]["lyrics"]
    assert sp["n_ref_words"] == 2 + 5 and ly["n_ref_words"] == 3 + 2 and sp["n_ref_chars"] == len("hello world") + 22
    assert set(sp["by_snr"]) == {"5", "0"} and set(ly["by_snr"]) == {"-5", "0"}
    assert set(sp["by_scenario"]) == set(ly["by_scenario"]) == {"speech", "singing", "both"}
    assert sp["by_scenario"]["singing"]["n_ref_words"] == 0 and ly["by_scenario"]["both"]["n_ref_words"] == 2
    items = {it["id"]: it for it in r["items"]}
    for track, absent in (("speech", "si"), ("lyrics", "sp")):
        m = r["tracks"][track]
        assert m["hallucinated_words"] == len(normalize_text(items[absent][track]["hyp"]).split())
        assert m["wer"] == pytest.approx(100 * m["word_errors"] / m["n_ref_words"], abs=1e-3)
    sep = r["separation"]
    assert set(sep["si_sdri"]) == {"speech", "singing", "music"} and all(np.isfinite(v) for v in sep["si_sdri"].values())
    assert sep["counts_by_snr"] == {"speech": {"0": 1, "5": 1}, "singing": {"-5": 1, "0": 1}, "music": {"-5": 1, "0": 1, "5": 1}}
    assert {k: v["items"] for k, v in sep["by_scenario"].items()} == {"both": 1, "singing": 1, "speech": 1}
    assert set(sep["by_scenario"]["speech"]["si_sdri"]) == {"speech", "music"}
    assert set(sep["activity"]) == {"speech", "singing"} and r["rtf"] > 0 and r["audio_s"] == pytest.approx(4.5)


def test_cli_no_separator_is_mixture_asr_without_separation(models, corpus, tmp_path):
    out = tmp_path / "none.json"
    rc = cli_main(["eval", str(corpus / "test.jsonl"), "--separator", "none", "--asr", str(models / "asr"), "--json", str(out),
                   "--max-items", "2", "--streams", "2", "--chunk-ms", "640", "--quiet"])
    r = json.loads(out.read_text())
    assert rc == 0 and r["separation"] is None and r["n_items"] == 2 and r["failed_items"] == []
    assert r["config"]["separator"] == "none" and r["config"]["algorithmic_latency_ms"] == pytest.approx(640.0)
    assert set(r["tracks"]["speech"]["by_scenario"]) == {"speech", "singing"}


def test_bad_input_exits_2_with_a_message(models, corpus, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "mixture": "x.wav"}\n')
    assert cli_main(["eval", str(bad), "--pipeline", str(models), "--quiet"]) == 2
    assert "missing keys" in capsys.readouterr().err
    assert cli_main(["eval", str(tmp_path / "nope.jsonl"), "--pipeline", str(models), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli_main(["eval", str(corpus / "test.jsonl"), "--pipeline", str(tmp_path), "--quiet"]) == 2
    assert "asr" in capsys.readouterr().err
    assert cli_main(["eval", str(corpus / "test.jsonl"), "--separator", str(tmp_path / "nosep"), "--asr", str(models / "asr"),
                     "--quiet"]) == 2
    assert "separator" in capsys.readouterr().err
    assert cli_main(["eval", str(corpus / "test.jsonl"), "--pipeline", str(models), "--chunk-ms", "300", "--quiet"]) == 2
    assert "multiple of 640" in capsys.readouterr().err
    assert cli_main(["eval", str(corpus / "test.jsonl"), "--pipeline", str(models), "--streams", "0", "--quiet"]) == 2
    assert "--streams" in capsys.readouterr().err


def test_corrupt_manifest_via_the_installed_command(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = subprocess.run([sys.executable, "-m", "jrsv_stream.cli", "eval", str(bad), "--quiet"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "invalid JSON" in r.stderr and "Traceback" not in r.stderr


def test_calibration_measures_the_separator_level_and_eval_applies_it(models, corpus, tmp_path):
    import shutil

    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.eval.calibrate import calibrate_separator
    from jrsv_stream.eval.system_eval import SystemEvalConfig, build_pipeline
    from jrsv_stream.nn.separator import load_separator

    good = [x for x in (corpus / "test.jsonl").read_text().splitlines() if '"bad"' not in x]
    (corpus / "good.jsonl").write_text("\n".join(good) + "\n")
    shutil.copytree(models, tmp_path / "m")
    res = calibrate_separator(tmp_path / "m" / "separator", corpus / "good.jsonl")
    # by hand: mean over active vocal stems of 20 log10(rms(true) / rms(separated))
    sep, _, _ = load_separator(tmp_path / "m" / "separator")
    want = []
    for line in good:
        d = json.loads(line)
        mix = load_audio(corpus / d["mixture"])
        mix = mix[: len(mix) // sep.hop_samples * sep.hop_samples]
        with torch.no_grad():
            out = sep(torch.from_numpy(mix)[None]).sources[0].numpy()
        for name, idx in (("speech", 0), ("singing", 1)):
            if d[f"{name}_text"]:
                true = load_audio(corpus / d[name])[: len(mix)]
                want.append(20 * np.log10(np.sqrt(np.mean(true ** 2)) / np.sqrt(np.mean(out[idx, : len(true)] ** 2))))
    assert res["output_gain_db"] == pytest.approx(float(np.mean(want)), abs=2e-3)
    assert res["per_track_db"]["speech"]["n"] == 2 and res["per_track_db"]["singing"]["n"] == 2
    p, real = build_pipeline(SystemEvalConfig(pipeline=str(tmp_path / "m")))
    assert real and p.track_gain == pytest.approx(10 ** (res["output_gain_db"] / 20), rel=1e-6)
    p_none, _ = build_pipeline(SystemEvalConfig(pipeline=str(tmp_path / "m"), separator="none"))
    assert p_none.track_gain == 1.0  # the pass-through hears the mixture at its own level


def test_lm_fusion_overrides_apply_and_need_an_lm(models, corpus, tmp_path):
    """--lm-weight / --lm-bonus replace lm.npz's tuned point (the fusion grid relies on it);
    without an LM they are an error, not silently ignored."""
    import shutil

    from jrsv_stream.decode.ngram_lm import TokenNgramLM
    from jrsv_stream.decode.tokenizer import Tokenizer
    from jrsv_stream.eval.system_eval import SystemEvalConfig, build_pipeline
    from tests.tiny_models import TEXTS

    with pytest.raises(ValueError, match="no lm.npz"):
        build_pipeline(SystemEvalConfig(pipeline=str(models), lm_weight=0.5))
    shutil.copytree(models, tmp_path / "m")
    tok = Tokenizer(tmp_path / "m" / "asr" / "tokenizer.model")
    TokenNgramLM.train([tok.encode(t) for t in TEXTS], 3, tok.vocab_size, tok.eos_id, weight=0.4,
                       token_bonus=1.0).save(tmp_path / "m" / "asr" / "lm.npz")
    p, _ = build_pipeline(SystemEvalConfig(pipeline=str(tmp_path / "m")))
    assert (p.lm.weight, p.lm.token_bonus) == (0.4, 1.0)
    p, _ = build_pipeline(SystemEvalConfig(pipeline=str(tmp_path / "m"), lm_weight=1.25, lm_bonus=3.0))
    assert (p.lm.weight, p.lm.token_bonus) == (1.25, 3.0)
    p, _ = build_pipeline(SystemEvalConfig(pipeline=str(tmp_path / "m"), lm_bonus=2.0))
    assert (p.lm.weight, p.lm.token_bonus) == (0.4, 2.0)


def test_recognition_only_eval_gives_the_same_text_without_separation(models, corpus, full_run):
    """score_separation=False skips the separator's second pass, not anything the captions
    depend on: the same hypotheses as the full run, and no separation block."""
    from jrsv_stream.eval.system_eval import SystemEvalConfig, evaluate_system

    r = evaluate_system(corpus / "test.jsonl", SystemEvalConfig(pipeline=str(models), streams=3, score_separation=False))
    assert r["separation"] is None and r["n_items"] == full_run["n_items"]
    hyp = {it["id"]: (it["speech"]["hyp"], it["lyrics"]["hyp"]) for it in r["items"]}
    assert hyp == {it["id"]: (it["speech"]["hyp"], it["lyrics"]["hyp"]) for it in full_run["items"]}
    assert all("si_sdri" not in it for it in r["items"])


def test_fusion_grid_replay_equals_direct_evals_and_saves_the_best(models, corpus, tmp_path):
    """bench/fusion_grid.py runs the network once and replays it for the other points: each
    point's figures equal a direct `jrsv-stream eval` at that point; --save writes the best
    into the recognizer folder, where the pipeline loader picks it up."""
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.fusion_grid import ReplayPipeline
    from bench.fusion_grid import main as grid_main
    from jrsv_stream.decode.ngram_lm import TokenNgramLM, load_model_lm
    from jrsv_stream.decode.tokenizer import Tokenizer
    from jrsv_stream.eval.system_eval import SystemEvalConfig, evaluate_system
    from jrsv_stream.nn.tiny import TinyPipeline
    from tests.tiny_models import TEXTS

    m = tmp_path / "m"
    shutil.copytree(models, m)
    tok = Tokenizer(m / "asr" / "tokenizer.model")
    TokenNgramLM.train([tok.encode(t) for t in TEXTS], 3, tok.vocab_size, tok.eos_id, weight=0.5,
                       token_bonus=1.0).save(m / "asr" / "lm.npz")
    valid = corpus / "valid.jsonl"
    valid.write_text("".join(x + "\n" for x in (corpus / "test.jsonl").read_text().splitlines() if '"bad"' not in x))
    out = tmp_path / "grid.json"
    assert grid_main(["--pipeline", str(m), "--manifest", str(valid), "--max-items", "3", "--weights", "0.0", "3.0",
                      "--bonuses", "0.0", "6.0", "--threads", "1", "--json", str(out), "--save"]) == 0
    g = json.loads(out.read_text())
    assert len(g["grid"]) == 4 and out.with_suffix(".png").is_file()
    assert len({(r["speech_cer"], r["lyrics_cer"]) for r in g["grid"]}) > 1  # the point changes the decoding
    for r in g["grid"]:
        direct = evaluate_system(valid, SystemEvalConfig(pipeline=str(m), max_items=3, streams=1, score_separation=False,
                                                         lm_weight=r["weight"], lm_bonus=r["token_bonus"]))
        assert (r["speech_cer"], r["lyrics_cer"], r["speech_wer"], r["lyrics_wer"]) == tuple(
            direct["tracks"][t][k] for k in ("cer", "wer") for t in ("speech", "lyrics"))
    best = min(g["grid"], key=lambda r: (r["mean_cer"] + r["mean_wer"]) / 2)
    lm = load_model_lm(m / "asr")
    assert (lm.weight, lm.token_bonus) == (best["weight"], best["token_bonus"]) == (g["best"]["weight"], g["best"]["token_bonus"])
    with pytest.raises(SystemExit):  # never tuned on the test split
        grid_main(["--pipeline", str(m), "--manifest", str(corpus / "test.jsonl")])
    rp = ReplayPipeline(TinyPipeline(chunk_samples=640))
    st = rp.init_state(1)
    rp.step(torch.zeros(1, 640), st)
    rp.rewind()
    with pytest.raises(RuntimeError, match="differs"):
        rp.step(torch.ones(1, 640), st)


def test_cli_real_voices_beside_the_main_manifest(models, corpus, tmp_path):
    """--real-voices DIR: DIR's test_clean / test_mixed manifests through the same
    configuration, in the same JSON (here two copies of the test manifest stand in)."""
    rv = tmp_path / "rv"
    rv.mkdir()
    for name in ("test_clean", "test_mixed"):
        (rv / f"{name}.jsonl").write_text((corpus / "test.jsonl").read_text())
    for entry in corpus.iterdir():
        if entry.is_dir():
            (rv / entry.name).symlink_to(entry)
    out = tmp_path / "rv.json"
    rc = cli_main(["eval", str(corpus / "test.jsonl"), "--separator", "none", "--asr", str(models / "asr"), "--json", str(out),
                   "--max-items", "1", "--streams", "1", "--chunk-ms", "640", "--quiet", "--real-voices", str(rv)])
    r = json.loads(out.read_text())
    assert rc == 0 and set(r["real_voices"]) == {"test_clean", "test_mixed"}
    for sub in r["real_voices"].values():
        assert sub["n_items"] == 1 and sub["failed_items"] == [] and sub["tracks"]["speech"] == r["tracks"]["speech"]
    assert cli_main(["eval", str(corpus / "test.jsonl"), "--separator", "none", "--asr", str(models / "asr"), "--quiet",
                     "--max-items", "1", "--real-voices", str(tmp_path / "missing")]) == 2


def test_eval_steps_at_the_pipeline_folders_own_chunk(tmp_path):
    """``jrsv-stream eval --pipeline DIR`` runs the pipeline at its pipeline.yaml's chunk_ms
    (it ran every pipeline at 320 ms before); --chunk-ms still replaces it."""
    from jrsv_stream.eval.system_eval import SystemEvalConfig

    d = tmp_path / "p160"
    d.mkdir()
    (d / "pipeline.yaml").write_text("separator: sep\nasr: asr\nchunk_ms: 160\n")
    assert SystemEvalConfig(pipeline=str(d)).chunk_samples == 2560
    assert SystemEvalConfig(pipeline=str(d), chunk_ms=320).chunk_samples == 5120
    (d / "pipeline.yaml").write_text("separator: sep\nasr: asr\n")
    assert SystemEvalConfig(pipeline=str(d)).chunk_samples == 5120  # no chunk_ms: 320 ms
    with pytest.raises(ValueError, match="chunk-ms"):
        SystemEvalConfig(pipeline=str(d), chunk_ms=0)
