"""The speech finals' encoder adapter, offline, with and without it: final WER of Whisper's
decoder over each item as one segment, through the finals' own path (``WhisperCTC._decode``:
the segment padded as a live final, beam from the model's config) on what the speech finals
hear (``--speech-mix`` x the mixture + the rest x the separated speech at the separator's
calibrated level), and on the clean voice (what the adapter must not break).

    .venv/bin/python bench/final_encoder_adapter_eval.py --adapter models/whisper_ctc/final_encoder_adapter_speech.pt \\
        --json bench/results/final_encoder_adapter_eval.json

Sets: ``bench/real_voices_eval.py``'s (same items): real voices clean and over the corpus's
test music at +5 / 0 / -5 dB (voices no training set has), the corpus test mixtures'
speech and the out-of-domain mixtures' speech.
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

from jrsv_stream.audio.io import load_audio  # noqa: E402
from jrsv_stream.eval.scoring import ErrorCounts, count_errors  # noqa: E402


def main(argv=None) -> int:
    from real_voices_eval import _rows, set_manifest

    from jrsv_stream.nn.pipeline import separator_track_gain
    from jrsv_stream.nn.separator import load_separator
    from jrsv_stream.nn.whisper_adapter import load_adapter
    from jrsv_stream.nn.whisper_ctc import WhisperCTC
    from jrsv_stream.separate import separate_stream

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", required=True, help="a final_encoder_adapter_speech.pt")
    ap.add_argument("--asr", default="models/whisper_ctc")
    ap.add_argument("--separator", default="models/separator_real")
    ap.add_argument("--speech-mix", type=float, default=0.5)
    ap.add_argument("--sets", nargs="+", default=["real_clean", "real_p5", "real_0", "real_m5", "corpus_mix", "ood_mix"])
    ap.add_argument("--per-set", type=int, default=30)
    ap.add_argument("--no-clean", action="store_true", help="skip the clean-voice decodes of the mixture sets")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    asr = WhisperCTC.from_pretrained(a.asr)
    asr.final_encoder_adapters.pop("speech", None)
    asr.final_encoder_adapters["with"] = load_adapter(a.adapter)  # a pseudo-track: the same decode, adapted
    sep, _, _ = load_separator(a.separator)
    gain = separator_track_gain(a.separator)
    res = {"adapter": a.adapter, "separator": a.separator, "speech_mix": a.speech_mix, "per_set": a.per_set, "sets": {}}
    tmp = Path(tempfile.mkdtemp())
    for name in a.sets:
        man = set_manifest(name, REPO / "data/real_voices", REPO / "data/corpus", a.per_set, tmp, REPO / "data/ood")
        rows = [r for r in _rows(man) if r.get("speech_text")]
        errs = {k: ErrorCounts() for k in ("heard", "heard_adapted", "clean", "clean_adapted")}
        t0 = time.time()
        items = []
        for r in rows:
            mix = load_audio(r["mixture"])
            heard = a.speech_mix * mix + (1 - a.speech_mix) * separate_stream(sep, mix)[0][0] * gain
            cand = {"heard": heard}
            if r.get("speech") and name != "real_clean" and not a.no_clean:
                cand["clean"] = load_audio(r["speech"])
            it = {"id": r["id"], "ref": r["speech_text"]}
            for k, audio in cand.items():
                for adapted in (False, True):
                    hyp = asr._decode(audio.astype(np.float32), track="with" if adapted else None)[0][0][0]
                    key = k + ("_adapted" if adapted else "")
                    errs[key] += count_errors(r["speech_text"], hyp)
                    it[key] = hyp
            items.append(it)
        out = {k: round(100.0 * c.word_errors / c.ref_words, 2) for k, c in errs.items() if c.ref_words}
        res["sets"][name] = {"n_items": len(rows), "wer": out, "seconds": round(time.time() - t0, 1), "items": items}
        print(name, out, flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
