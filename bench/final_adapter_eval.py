"""The lyrics track's decoder adapter, offline, with and without it: final WER of Whisper's
decoder (the finals' own path: ``WhisperCTC._decode``, the segment padded as a live final,
beam from the model's config) on clean sung lines and on real talk.

    .venv/bin/python bench/final_adapter_eval.py --json bench/results/final_adapter_eval.json

Sets (none is in the adapter's training data):
- ``corpus_test_sung``: the corpus's test-split sung lines (test voices, test texts);
- ``heldout_text_sung``: the lines of ``bench/texts/heldout_lyrics.txt`` (texts written for
  this check, not in the corpus's pools) sung by the test split's singers (Festival
  ked_diphone and the test espeak / flite voices through WORLD), made here, seed 0;
- ``ood_sung``: the out-of-domain set's singing stems (real voices from installed packages,
  WORLD-sung, their own transcripts; `jrsv-stream data ood`);
- ``real_talk``: the real-voice recordings, clean (what the adapter must not break if talk
  reaches the lyrics track: the speech track never uses it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jrsv_stream.audio.io import load_audio  # noqa: E402
from jrsv_stream.eval.scoring import ErrorCounts, count_errors  # noqa: E402


def corpus_test_sung(corpus: Path, n: int) -> list[tuple[np.ndarray, str]]:
    rows = [json.loads(x) for x in open(corpus / "sources" / "singing.jsonl")]
    rows = [r for r in rows if r.get("split") == "test"][:n]
    return [(load_audio(corpus / "sources" / "singing" / "test" / r["audio"]), r["text"]) for r in rows]


def heldout_text_sung(n: int, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    from jrsv_stream.data.singing import SingRequest, sing, singers_for_split

    lines = [x.strip() for x in open(REPO / "bench" / "texts" / "heldout_lyrics.txt") if x.strip() and not x.startswith("#")]
    singers = singers_for_split("test")
    rng = random.Random(seed)
    reqs = [SingRequest(tuple(t.split()), singers[k % len(singers)], rng.uniform(80, 150), rng.randrange(12),
                        rng.randrange(2**31)) for k, t in enumerate(lines[:n])]
    out = []
    for r, u in zip(reqs, sing(reqs)):
        if u is not None:
            out.append((u.audio.astype(np.float32), " ".join(r.words)))
    return out


def ood_sung(ood: Path, n: int) -> list[tuple[np.ndarray, str]]:
    rows = [json.loads(x) for x in open(ood / "test.jsonl")]
    rows = [r for r in rows if r.get("singing") and r.get("singing_text")][:n]
    return [(load_audio(ood / r["singing"]), r["singing_text"]) for r in rows]


def real_talk(real: Path, n: int) -> list[tuple[np.ndarray, str]]:
    rows = [json.loads(x) for x in open(real / "test_clean.jsonl")]
    rng = random.Random(0)
    rng.shuffle(rows)
    key = "speech" if "speech" in rows[0] else "mixture"
    return [(load_audio(real / rows[i][key]), rows[i]["speech_text"]) for i in range(min(n, len(rows)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "models" / "whisper_ctc"))
    ap.add_argument("--corpus", default=str(REPO / "data" / "corpus"))
    ap.add_argument("--ood", default=str(REPO / "data" / "ood"))
    ap.add_argument("--real", default=str(REPO / "data" / "real_voices"))
    ap.add_argument("--per-set", type=int, default=40)
    ap.add_argument("--beam", type=int, default=None, help="default: the model's final.beam")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from jrsv_stream.nn.whisper_ctc import WhisperCTC

    m = WhisperCTC.from_pretrained(a.model)
    if "singing" not in m.final_adapters:
        raise SystemExit(f"{a.model} has no final_adapter_singing.pt")
    sets = {"corpus_test_sung": lambda: corpus_test_sung(Path(a.corpus), a.per_set),
            "heldout_text_sung": lambda: heldout_text_sung(a.per_set),
            "ood_sung": lambda: ood_sung(Path(a.ood), a.per_set),
            "real_talk": lambda: real_talk(Path(a.real), a.per_set)}
    res: dict = {"model": a.model, "beam": a.beam or m.cfg.final.beam, "adapter": m.final_adapters["singing"]["info"],
                 "sets": {}}
    for name, make in sets.items():
        items = make()
        row = {"n_items": len(items)}
        for arm, track in (("whisper", None), ("adapter", "singing")):
            c, t0, ex = ErrorCounts(), time.time(), []
            for audio, ref in items:
                hyp = m._decode(audio, a.beam, track=track)[0][0][0]
                c += count_errors(ref, hyp)
                if len(ex) < 3:
                    ex.append({"ref": ref, "hyp": hyp})
            row[arm] = {**c.to_json(), "seconds": round(time.time() - t0, 1), "examples": ex}
        res["sets"][name] = row
        print(f"{name}: {len(items)} items, WER whisper {row['whisper']['wer']} -> adapter {row['adapter']['wer']}",
              flush=True)
    Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
