"""What per-stream hotwords do to real captions: each real-voice recording (clean) is
captioned three times through the live path (``StreamSession``): without hotwords, with
its own rarest words as hotwords (the reference's longest words of 7+ letters, up to 2),
``--snr``: the same voices over corpus test music at that SNR bucket instead;
and with another recording's words (distractors: the hotword is not said). Reported:
hotword recall (the word is in the finals), distractor false alarms (a hotword not said
appears in the finals) and final WER of each run.

    .venv/bin/python bench/hotword_effect.py --pipeline models/default --items 30 \
        --json bench/results/hotword_effect.json
    .venv/bin/python bench/hotword_effect.py --items 30 --snr 0 --json bench/results/hotword_effect_0db.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import device_name, git_commit  # noqa: E402


def _hotwords(text: str) -> list[str]:
    words = sorted({w for w in text.split() if len(w) >= 7 and w.isalpha()}, key=lambda w: (-len(w), w))
    return words[:2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default="models/default")
    ap.add_argument("--real", default="data/real_voices")
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--snr", type=int, default=None, help="the voices over corpus music at this SNR bucket (-5, 0, 5) instead of clean")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="bench/results/hotword_effect.json")
    a = ap.parse_args(argv)

    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.decode.hybrid import normalize_text
    from jrsv_stream.eval.system_eval import ErrorCounts, count_errors
    from jrsv_stream.nn.pipeline import load_streaming_pipeline
    from jrsv_stream.stream.captions import CaptionOptions, Hotword
    from jrsv_stream.stream.events import Final
    from jrsv_stream.stream.session import StreamSession
    from jrsv_stream.stream.worker import BatchWorker

    torch.set_num_threads(a.threads)
    t0 = time.time()
    root = Path(a.real)
    manifest = "test_clean.jsonl" if a.snr is None else "test_mixed.jsonl"
    rows = [json.loads(x) for x in (root / manifest).read_text().splitlines() if x.strip()]
    rows = [r for r in rows if _hotwords(r.get("speech_text") or "") and (a.snr is None or r.get("speech_snr_bucket") == a.snr)]
    rows = [rows[int(i * len(rows) / a.items)] for i in range(min(a.items, len(rows)))]
    p = load_streaming_pipeline(a.pipeline)
    runs = {"none": ErrorCounts(), "own": ErrorCounts(), "distractor": ErrorCounts()}
    recall = {"none": 0, "own": 0}
    n_hot = 0
    false_alarms = {"none": 0, "distractor": 0}
    n_dis = 0
    per_item = []
    with BatchWorker(p, max_wait_ms=1) as w:
        for k, r in enumerate(rows):
            ref = r["speech_text"]
            own = _hotwords(ref)
            dis = [h for h in _hotwords(rows[(k + len(rows) // 2) % len(rows)]["speech_text"]) if h not in ref.split()]
            audio = load_audio(root / r["mixture"])
            texts = {}
            for name, hw in (("none", []), ("own", own), ("distractor", dis)):
                s = StreamSession(w, "bench", options=CaptionOptions(hotwords=tuple(Hotword(h) for h in hw), tracks=("speech",)))
                ev = [e for i in range(0, len(audio), 16000 * 5) for e in s.process(audio[i:i + 16000 * 5])] + s.finish()
                s.close()
                hyp = normalize_text(" ".join(e.text for e in ev if isinstance(e, Final) and e.text))
                texts[name] = hyp
                runs[name] += count_errors(ref, hyp)
            said = set(texts["none"].split()), set(texts["own"].split()), set(texts["distractor"].split())
            n_hot += len(own)
            recall["none"] += sum(h in said[0] for h in own)
            recall["own"] += sum(h in said[1] for h in own)
            n_dis += len(dis)
            false_alarms["none"] += sum(h in said[0] for h in dis)
            false_alarms["distractor"] += sum(h in said[2] for h in dis)
            per_item.append({"id": r["id"], "ref": ref, "hotwords": own, "distractors": dis, **texts})
            print(k, r["id"], own, {n: t[:80] for n, t in texts.items()}, flush=True)
    res = {"items": len(rows), "hotwords": n_hot, "distractors": n_dis,
           "hotword_recall": {k: round(v / max(1, n_hot), 4) for k, v in recall.items()},
           "distractor_false_alarms": {k: round(v / max(1, n_dis), 4) for k, v in false_alarms.items()},
           "wer": {k: round(v.word_errors / max(1, v.ref_words), 4) for k, v in runs.items()}}
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "hotword_effect", "commit": git_commit(), "device": device_name("cpu"),
                               "config": {"pipeline": a.pipeline, "items": a.items, "snr": a.snr, "threads": a.threads, "boost": 3.0},
                               "wall_s": round(time.time() - t0, 1), "results": res, "per_item": per_item}, indent=1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
