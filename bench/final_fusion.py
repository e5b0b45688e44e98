"""Speech finals that hear the segment two ways at once: Whisper's beam search scored by the
mean of the decoder's log-probs over two or three hearings of the same audio (the mixture,
the separated speech, the shipped 0.5 blend), against each hearing alone. Offline, our
finals' decoder (the default recognizer's Whisper, beam 5, ``WhisperCTC._decode``), one
final per item.

    .venv/bin/python bench/final_fusion.py --sets real_clean real_p5 real_0 corpus_mix ood_mix --json bench/results/final_fusion.json

Sets and items: ``bench/real_voices_eval.py``'s (``--per-set`` per set).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

WAYS = {"mix": ("mix",), "sep": ("sep",), "b05": ("b05",), "fuse_b05_mix": ("b05", "mix"),
        "fuse_b05_sep": ("b05", "sep"), "fuse_mix_sep": ("mix", "sep"), "fuse_b05_mix_sep": ("b05", "mix", "sep")}


def main(argv=None) -> int:
    from whisper_on_separated import calibrated_separator, heard_ways, speech_rows

    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.eval.scoring import ErrorCounts, count_errors
    from jrsv_stream.nn.whisper_ctc import WhisperCTC

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--separator", default="models/separator_real")
    ap.add_argument("--asr", default="models/whisper_ctc")
    ap.add_argument("--sets", nargs="+", default=["real_clean", "real_0", "real_p5"])
    ap.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    ap.add_argument("--per-set", type=int, default=30)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    separate = calibrated_separator(a.separator)
    asr = WhisperCTC.from_pretrained(a.asr).eval()
    res = {"separator": a.separator, "asr": a.asr, "decoder": asr.cfg.final.decoder_dtype, "beam": a.beam,
           "per_set": a.per_set, "sets": {}}
    tmp = Path(tempfile.mkdtemp())
    for name in a.sets:
        rows = speech_rows(name, a.per_set, tmp)
        errs: dict[str, ErrorCounts] = {}
        secs: dict[str, float] = {}
        texts = []
        t0 = time.time()
        for r in rows:
            mix = load_audio(r["mixture"])
            cand = heard_ways(mix, separate(mix)[1])
            row = {"ref": r["speech_text"]}
            for w in a.ways:
                first, *rest = WAYS[w]
                t1 = time.perf_counter()
                with torch.no_grad():
                    nbest, _, _ = asr._decode(cand[first], a.beam, views=[cand[k] for k in rest])
                secs[w] = secs.get(w, 0.0) + time.perf_counter() - t1
                row[w] = nbest[0][0]
                errs.setdefault(w, ErrorCounts()).__iadd__(count_errors(r["speech_text"], nbest[0][0]))
            texts.append(row)
        res["sets"][name] = {"n_items": len(rows), "seconds": round(time.time() - t0, 1),
                             "decode_s_per_item": {k: round(v / max(1, len(rows)), 3) for k, v in secs.items()},
                             "wer": {k: round(100.0 * c.word_errors / max(1, c.ref_words), 2) for k, c in errs.items()},
                             "texts": texts}
        print(name, res["sets"][name]["wer"], res["sets"][name]["decode_s_per_item"], flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
