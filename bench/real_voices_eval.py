"""Final and last-partial WER through the live streaming path on real voices and the corpus
test split, side by side with faster-whisper run offline on the same Whisper weights and the
same audio (no separator: the accuracy ceiling of the weights).

Sets (each item's *mixture* audio is what both systems hear):

- ``real_clean``: every real recording with a transcript (``jrsv-stream data real-voices``,
  ``test_clean.jsonl``), the recording alone;
- ``real_m5`` / ``real_0`` / ``real_p5``: the same voices over corpus test music at -5 / 0 /
  +5 dB (``test_mixed.jsonl``);
- ``corpus_speech`` / ``corpus_singing``: the corpus test split's clean speech / singing
  stems (a manifest derived from ``test.jsonl`` whose mixture is the stem);
- ``corpus_mix``: the corpus test mixtures (speech and lyrics tracks);
- ``ood_mix``: the out-of-domain mixtures (``jrsv-stream data ood``: real voices, spoken and
  WORLD-sung, over music from soundfonts the corpus never used; both tracks).

``--per-set N`` takes N items per set, spread evenly over the set (all real non-Asterisk
voices first, so every source is in). Writes JSON and a PNG.

    .venv/bin/python bench/real_voices_eval.py --pipeline models/default --per-set 40 \
        --json bench/results/real_voices_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import parse_overrides  # noqa: E402
from jrsv_stream.eval.system_eval import ErrorCounts, SystemEvalConfig, count_errors, evaluate_system  # noqa: E402

SETS = ("real_clean", "real_m5", "real_0", "real_p5", "corpus_speech", "corpus_singing", "corpus_mix", "ood_mix")


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _spread(rows: list[dict], n: int | None) -> list[dict]:
    """n rows: every non-Asterisk real voice, then an even spread of the rest."""
    if n is None or len(rows) <= n:
        return rows
    first = [r for r in rows if r.get("source") not in (None, "asterisk")][:n]
    rest = [r for r in rows if r not in first]
    k = n - len(first)
    return first + ([rest[int(i * len(rest) / k)] for i in range(k)] if k > 0 else [])


def set_manifest(name: str, real_root: Path, corpus_root: Path, n: int | None, out_dir: Path,
                 ood_root: Path = Path("data/ood"), timed: bool = False) -> Path:
    """A manifest of the set's items written under ``out_dir`` (mixture paths absolute).
    ``timed``: the real voices from the manifests with reference word times
    (``bench/word_times.py``), so the word latencies are measured on them too."""
    if name == "ood_mix":  # items whose every vocal has a transcript; n split evenly over the 3 scenarios,
        # a seeded sample within each (the set's scenario / SNR cycles would alias with an even stride)
        rows, root = _rows(ood_root / "test_transcribed.jsonl"), ood_root
        if n is not None and len(rows) > n:
            import numpy as np

            rng = np.random.default_rng(0)
            scen = sorted({r["scenario"] for r in rows})
            pick = []
            for j, sc in enumerate(scen):
                group = [r for r in rows if r["scenario"] == sc]
                k = n // len(scen) + (1 if j < n % len(scen) else 0)
                pick += [group[i] for i in sorted(rng.permutation(len(group))[:k])]
            rows = pick
    elif name.startswith("real_"):
        src = real_root / ("test_clean.jsonl" if name == "real_clean" else "test_mixed.jsonl")
        if timed:
            src = src.with_name(src.stem + "_timed.jsonl")
        rows = _rows(src)
        if name != "real_clean":
            bucket = {"real_m5": -5, "real_0": 0, "real_p5": 5}[name]
            rows = [r for r in rows if r.get("speech_snr_bucket") == bucket]
        root = real_root
    else:
        rows, root = _rows(corpus_root / "test.jsonl"), corpus_root
        if name in ("corpus_speech", "corpus_singing"):
            kind = name.split("_")[1]
            rows = [{**r, "mixture": r[kind], "music": None, **{k: None for k in ("speech", "singing") if k != kind},
                     f"{'singing' if kind == 'speech' else 'speech'}_text": None, "scenario": kind,
                     "speech_snr_bucket": None, "singing_snr_bucket": None}
                    for r in rows if r.get(kind)]
    rows = _spread(rows, n)
    for r in rows:
        for k in ("mixture", "speech", "singing", "music"):
            if r.get(k):
                r[k] = str((root / r[k]).resolve())
    out = out_dir / f"{name}.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def ct2_folder(spec: str, out: Path) -> Path:
    """A CTranslate2 folder faster-whisper can open for an installed model (base ships its
    model.bin in two parts: concatenated here once, sha256-checked by the loader)."""
    from jrsv_stream.nn.whisper_weights import resolve_installed

    inst = resolve_installed(spec)
    if len(inst.parts) == 1 and inst.parts[0] == inst.folder / "model.bin":
        return inst.folder
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "model.bin").is_file():
        with open(out / "model.bin.part", "wb") as f:
            for p in inst.parts:
                f.write(Path(p).read_bytes())
        (out / "model.bin.part").rename(out / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
        if (inst.folder / name).is_file() and not (out / name).exists():
            (out / name).write_bytes((inst.folder / name).read_bytes())
    return out


def faster_whisper_wer(manifest: Path, folder: Path, threads: int) -> dict:
    """faster-whisper (float32, greedy, 30 s windows, no VAD) on each item's mixture: WER per
    track it can be compared on (it writes one text: scored against the speech reference,
    or the lyrics where the item has no speech)."""
    from faster_whisper import WhisperModel

    from jrsv_stream.audio.io import load_audio

    fw = WhisperModel(str(folder), device="cpu", compute_type="float32", cpu_threads=threads)
    rows = _rows(manifest)
    errs: dict[str, ErrorCounts] = {}
    t0, audio_s = time.perf_counter(), 0.0
    texts = []
    for r in rows:
        a = load_audio(r["mixture"])
        audio_s += len(a) / 16000
        segs, _ = fw.transcribe(a, beam_size=1, temperature=0, without_timestamps=True, condition_on_previous_text=False,
                                vad_filter=False, language="en")
        hyp = " ".join(s.text.strip() for s in segs)
        track = "speech" if r.get("speech_text") else "lyrics"
        ref = r.get("speech_text") or r.get("singing_text")
        errs.setdefault(track, ErrorCounts()).__iadd__(count_errors(ref, hyp))
        texts.append({"id": r["id"], "hyp": hyp})
    out = {t: round(100.0 * c.word_errors / max(1, c.ref_words), 2) for t, c in errs.items()}
    return {"wer": out, "rtf": round((time.perf_counter() - t0) / max(audio_s, 1e-9), 4), "items": texts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default=None, help="pipeline folder (default: the shipped default)")
    ap.add_argument("--real-voices", default="data/real_voices")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--ood", default="data/ood", help="the out-of-domain set (jrsv-stream data ood) for ood_mix")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--per-set", type=int, default=40)
    ap.add_argument("--streams", type=int, default=4,
                    help="items run at once through one worker; 1 gives the same texts run after run (the bf16 window "
                         "encoder's output depends on the batch: with 4, a 30-item set moves by up to ~3 WER points "
                         "between runs), so compare variants with --streams 1 (session 26)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ceiling", default="base", help="faster-whisper model for the ceiling ('' to skip)")
    ap.add_argument("--separator", default=None, help="'none': the recognizer hears the mixture (no separator)")
    ap.add_argument("--final-whisper", default=None, help="Whisper model of the finals (tiny.en, base, small)")
    ap.add_argument("--track-margin", type=float, default=None, help="the sessions' cross-track rule (default: off)")
    ap.add_argument("--endpoint", nargs="*", default=[], metavar="FIELD=SECONDS",
                    help="EndpointConfig fields to replace, e.g. rule2_trailing_silence_s=0.5")
    ap.add_argument("--session", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="SessionConfig fields to replace, e.g. gate_on=0.3 gate_off=0.2")
    ap.add_argument("--voice-rescue", default=None, metavar="LOGIT|off",
                    help="replace the pipeline's voice_rescue (talk on the singing track opens the speech gate)")
    ap.add_argument("--speech-final-mix", type=float, default=None, metavar="W",
                    help="replace the pipeline's speech_final_mix (speech finals: W x mixture + (1 - W) x separated)")
    ap.add_argument("--final-beam", type=int, default=None, metavar="N",
                    help="the Whisper finals' beam (1: greedy; hypotheses stay greedy)")
    ap.add_argument("--speech-final-consensus", choices=("on", "off"), default=None,
                    help="replace the pipeline's speech_final_consensus (speech finals: the consensus of the blend, "
                         "the mixture and the separated speech)")
    ap.add_argument("--final", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="the recognizer's FinalConfig fields to replace, e.g. min_confidence=0.2")
    ap.add_argument("--timed", action="store_true",
                    help="real voices with reference word times (bench/word_times.py): word latencies on them too")
    ap.add_argument("--label", default=None)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    from jrsv_stream.nn.loader import default_pipeline_spec

    pipeline = a.pipeline or default_pipeline_spec()
    if a.final_whisper:
        import os

        os.environ["JRSV_FINAL_WHISPER"] = a.final_whisper
    endpoint = tuple(parse_overrides(a.endpoint, "--endpoint").items())
    session = tuple(parse_overrides(a.session, "--session").items())
    final = tuple(parse_overrides(a.final, "--final").items())
    tmp = Path(tempfile.mkdtemp(prefix="real_voices_eval_"))
    res = {"pipeline": pipeline, "separator": a.separator, "final_whisper": a.final_whisper, "track_margin": a.track_margin, "endpoint": dict(endpoint), "session": dict(session), "voice_rescue": a.voice_rescue, "speech_final_mix": a.speech_final_mix, "speech_final_consensus": a.speech_final_consensus, "final_beam": a.final_beam, "final": dict(final), "timed": a.timed, "per_set": a.per_set, "ceiling_model": a.ceiling or None, "sets": {}}
    for name in a.sets:
        m = set_manifest(name, Path(a.real_voices), Path(a.corpus), a.per_set, tmp, Path(a.ood), a.timed)
        cfg = SystemEvalConfig(pipeline=pipeline, separator=a.separator, streams=a.streams, threads=a.threads, label=name,
                               score_separation=False, track_margin=a.track_margin, endpoint=endpoint,
                               session=session, voice_rescue_override=a.voice_rescue,
                               speech_final_mix=a.speech_final_mix, final_beam=a.final_beam,
                               speech_final_consensus=None if a.speech_final_consensus is None else a.speech_final_consensus == "on", final=final)
        ev = evaluate_system(m, cfg)
        row = {"n_items": ev["n_items"], "audio_s": ev["audio_s"], "rtf": ev["rtf"], "failed": len(ev["failed_items"]),
               "tracks": {t: {"wer": v["wer"], "last_partial_wer": v["last_partial_wer"], "n_ref_words": v["n_ref_words"],
                              "hallucinated_words": v["hallucinated_words"]} for t, v in ev["tracks"].items()},
               "word_audio_latency_s": ev["word_audio_latency_s"], "items": ev["items"]}
        if a.ceiling:
            fw = faster_whisper_wer(m, ct2_folder(a.ceiling, Path(a.real_voices).parent / f"ct2_{a.ceiling}"), a.threads)
            row["faster_whisper"] = fw
        res["sets"][name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "items"} | {
            "faster_whisper": row.get("faster_whisper", {}).get("wer")}), flush=True)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    plot(res, Path(a.json).with_suffix(".png"))
    return 0


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, ours, part, ceil = [], [], [], []
    for name, row in res["sets"].items():
        for t, v in row["tracks"].items():
            if v["wer"] is None or not v["n_ref_words"]:
                continue
            names.append(f"{name}\n{t}")
            ours.append(v["wer"])
            part.append(v["last_partial_wer"] or 0)
            ceil.append((row.get("faster_whisper") or {}).get("wer", {}).get(t, 0))
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    ax.bar([i - 0.27 for i in x], ours, 0.27, label="final (live path)")
    ax.bar(list(x), part, 0.27, label="last partial (live path)")
    ax.bar([i + 0.27 for i in x], ceil, 0.27, label=f"faster-whisper {res['ceiling_model']} offline")
    ax.set_xticks(list(x), names, fontsize=7)
    ax.set_ylabel("WER %")
    ax.set_ylim(0, min(150, max([10] + ours + part + ceil) * 1.1))
    ax.legend(fontsize=7)
    ax.set_title(f"{res['pipeline']} ({res['per_set']} items per set)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
