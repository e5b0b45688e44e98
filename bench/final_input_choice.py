"""Which audio should a speech final decode? Our Whisper finals (the default recognizer's
Whisper base, beam 5, as ``WhisperCTC._decode``) over each item heard four ways: the mixture
(``mix``), the separated speech at its calibrated level (``sep``), and the blends 0.5 / 0.3 x
the mixture + the rest x the separated speech (``b05``, the shipped speech finals; ``b03``);
and a per-item *choice* among some of them by the decoder's own average log-probability
(``choose_*``), or by the separator's own estimate of the voice's SNR (the energy of its
raw speech output over its music output, before calibration: the mixture when that is at least T dB,
``mix_if_est_snr_ge_T``, else ``b05``), beside the oracle choice (the fewest errors: an
upper bound); and a *consensus* (session 26): the way whose normalized text is nearest, in word
edits, to the other ways' texts (``consensus_*``, the medoid; ``b07`` = 0.7 x mixture + 0.3 x
separated joins the last one). Each item's texts are kept in the JSON (``texts``).

    .venv/bin/python bench/final_input_choice.py --sets real_clean real_0 real_p5 corpus_mix ood_mix --json bench/results/final_input_choice_s26.json

Sets and items: ``bench/real_voices_eval.py``'s (``--per-set`` per set).
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

THRESHOLDS_DB = (-22.0, -19.5, -17.0, -15.0)
CHOICES = {"choose_mix_b05": ("mix", "b05"), "choose_mix_sep_b05": ("mix", "sep", "b05"),
           "choose_all": ("mix", "sep", "b05", "b03")}
# consensus: the way whose (normalized) text is nearest, in word edits, to the other ways'
# texts (the medoid; ties: the first way listed)
CONSENSUS = {"consensus_mix_sep_b05": ("b05", "mix", "sep"), "consensus_mix_b05_b03": ("b05", "mix", "b03"),
             "consensus_all": ("b05", "mix", "sep", "b03", "b07")}


def medoid(texts: dict[str, str], keys) -> str:
    """The key whose text is nearest, in word edits, to the other keys' texts in total
    (``decode.hybrid.consensus_index``: what the live consensus finals choose with)."""
    from jrsv_stream.decode.hybrid import consensus_index

    return keys[consensus_index([texts[k] for k in keys])]


def main(argv=None) -> int:
    from whisper_on_separated import calibrated_separator, heard_ways, speech_rows

    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.eval.scoring import ErrorCounts, count_errors
    from jrsv_stream.nn.whisper_ctc import WhisperCTC

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--separator", default="models/separator_real")
    ap.add_argument("--asr", default="models/whisper_ctc")
    ap.add_argument("--sets", nargs="+", default=["real_clean", "real_0", "real_p5"])
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
        picked: dict[str, dict[str, int]] = {}
        ests: list[float] = []
        texts: list[dict] = []
        t0 = time.time()
        for r in rows:
            mix = load_audio(r["mixture"])
            srcs, sp = separate(mix)
            # the separator's own estimate of how much the voice stands above the rest
            est = 10 * np.log10((np.sum(srcs[0] ** 2) + 1e-9) / (np.sum(srcs[2] ** 2) + 1e-9))
            ests.append(round(float(est), 1))
            cand = heard_ways(mix, sp)
            cand["b07"] = 0.7 * mix + 0.3 * sp
            out = {}
            for k, audio in cand.items():
                with torch.no_grad():
                    nbest, _, _ = asr._decode(audio, a.beam)
                text, lp, n = nbest[0]
                out[k] = (text, lp / (n + 1), count_errors(r["speech_text"], text))
                errs.setdefault(k, ErrorCounts()).__iadd__(out[k][2])
            for c, keys in CHOICES.items():
                k = max(keys, key=lambda x: out[x][1])
                picked.setdefault(c, {}).setdefault(k, 0)
                picked[c][k] += 1
                errs.setdefault(c, ErrorCounts()).__iadd__(out[k][2])
            for c, keys in CONSENSUS.items():
                k = medoid({k: v[0] for k, v in out.items()}, keys)
                picked.setdefault(c, {}).setdefault(k, 0)
                picked[c][k] += 1
                errs.setdefault(c, ErrorCounts()).__iadd__(out[k][2])
            texts.append({"id": r["id"], "ref": r["speech_text"], **{k: v[0] for k, v in out.items()}})
            for t in THRESHOLDS_DB:
                k = "mix" if est >= t else "b05"
                errs.setdefault(f"mix_if_est_snr_ge_{t}", ErrorCounts()).__iadd__(out[k][2])
            k = min(cand, key=lambda x: out[x][2].word_errors)
            errs.setdefault("oracle", ErrorCounts()).__iadd__(out[k][2])
        res["sets"][name] = {"n_items": len(rows), "seconds": round(time.time() - t0, 1), "picked": picked, "est_snr_db": ests, "texts": texts,
                             "wer": {k: round(100.0 * c.word_errors / max(1, c.ref_words), 2) for k, c in errs.items()}}
        print(name, res["sets"][name]["wer"], picked, flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
