"""What Whisper needs from the separator: faster-whisper base offline (beam 5, 30 s windows,
no VAD, English) on the same items heard six ways, speech WER % each:

- ``mix``: the mixture; ``sep``: the separated speech (the separator's streaming path, its
  calibrated level); ``b05`` / ``b03``: 0.5 / 0.3 x the mixture + the rest x the separated
  speech (the speech finals' blend);
- ``clean``: the voice alone; ``oracle_m6`` / ``oracle_m12``: the voice plus the item's own
  music 6 / 12 dB quieter than in the mixture (a separator that only removes music, with no
  artifact on the voice).

    .venv/bin/python bench/whisper_on_separated.py --sets real_0 real_p5 --json bench/results/whisper_on_separated.json

Sets and items: ``bench/real_voices_eval.py``'s (``--per-set`` per set, its spread).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def speech_rows(name: str, per_set: int, tmp: Path) -> list[dict]:
    """The items of ``bench/real_voices_eval.py``'s set ``name`` (``per_set`` of them, its
    spread) that have a speech text."""
    from real_voices_eval import _rows, set_manifest

    man = set_manifest(name, REPO / "data/real_voices", REPO / "data/corpus", per_set, tmp, REPO / "data/ood")
    return [r for r in _rows(man) if r.get("speech_text")]


def calibrated_separator(path: str):
    """The separator at ``path`` as the pipeline hears it: a function mixture (T,) ->
    (its raw sources (3, T) from the streaming path, the separated speech at its calibrated
    level (T,)) (``jrsv_stream.separate.calibrated_separator``'s speech track)."""
    from jrsv_stream.separate import calibrated_separator as tracks_of

    run = tracks_of(path)

    def speech(mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        srcs, tracks = run(mix)
        return srcs, tracks[0]

    return speech


def heard_ways(mix: np.ndarray, speech: np.ndarray) -> dict[str, np.ndarray]:
    """An item heard four ways: the mixture, the separated speech (at its calibrated level),
    and the speech finals' blends 0.5 / 0.3 x the mixture + the rest x the separated speech."""
    return {"mix": mix, "sep": speech, "b05": 0.5 * mix + 0.5 * speech, "b03": 0.3 * mix + 0.7 * speech}


def main(argv=None) -> int:
    from faster_whisper import WhisperModel
    from real_voices_eval import ct2_folder

    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.eval.scoring import ErrorCounts, count_errors
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--separator", default="models/separator_real")
    ap.add_argument("--sets", nargs="+", default=["real_0", "real_p5"])
    ap.add_argument("--per-set", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    separate = calibrated_separator(a.separator)
    fw = WhisperModel(str(ct2_folder("base", REPO / "data" / "ct2_base")), device="cpu", compute_type="float32",
                      cpu_threads=a.threads)
    res = {"separator": a.separator, "per_set": a.per_set, "sets": {}}
    tmp = Path(tempfile.mkdtemp())
    for name in a.sets:
        rows = speech_rows(name, a.per_set, tmp)
        errs: dict[str, ErrorCounts] = {}
        t0 = time.time()
        for r in rows:
            mix = load_audio(r["mixture"])
            cand = heard_ways(mix, separate(mix)[1])
            if r.get("speech"):
                clean = load_audio(r["speech"])
                cand["clean"] = clean
                if r.get("music"):
                    mus = load_audio(r["music"])
                    n = min(len(clean), len(mus))
                    for db in (6, 12):
                        cand[f"oracle_m{db}"] = clean[:n] + mus[:n] * 10 ** (-db / 20)
            for k, audio in cand.items():
                segs, _ = fw.transcribe(audio.astype(np.float32), beam_size=5, temperature=0, without_timestamps=True,
                                        condition_on_previous_text=False, vad_filter=False, language="en")
                errs.setdefault(k, ErrorCounts()).__iadd__(count_errors(r["speech_text"], " ".join(s.text.strip() for s in segs)))
        res["sets"][name] = {"n_items": len(rows), "seconds": round(time.time() - t0, 1),
                             "wer": {k: round(100.0 * c.word_errors / max(1, c.ref_words), 2) for k, c in errs.items()}}
        print(name, res["sets"][name]["wer"], flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
