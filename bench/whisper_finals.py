"""Whisper finals on segments: our PyTorch port's decoder over one re-encoded segment, as
the live path runs it at an endpoint, on real read speech and on the corpus's clean test
stems (speech and sung lines), for each model size and padding rule.

Writes JSON (WER per set, loops, ms per segment, real-time factor) and a PNG.

    .venv/bin/python bench/whisper_finals.py --corpus data/corpus --items 40 \
        --models tiny.en base --pads 2 30 --json bench/results/whisper_finals.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jrsv_stream.audio.io import load_audio  # noqa: E402
from jrsv_stream.data.real_corpora import read_librivox_testdata  # noqa: E402
from jrsv_stream.decode.hybrid import has_repetition_loop, normalize_text  # noqa: E402
from jrsv_stream.nn.whisper_decode import encode_segment, greedy_decode, segment_token_limit  # noqa: E402
from jrsv_stream.nn.whisper_weights import load_whisper  # noqa: E402


def sets(corpus: Path | None, items: int, real_voices: bool = False) -> dict[str, list[tuple[np.ndarray, str]]]:
    out = {"real_librivox": [(load_audio(p), t) for p, t in read_librivox_testdata()]}
    if real_voices:  # every real recording with a transcript the installed packages ship (jrsv-stream data real-voices)
        from jrsv_stream.data.real_voices import real_voice_items

        out["real_voices_clean"] = [(v.load(), v.text) for v in real_voice_items()]
    if corpus is not None:
        for kind in ("speech", "singing"):
            rows = [json.loads(x) for x in (corpus / "sources" / f"{kind}.jsonl").read_text().splitlines()]
            rows = [r for r in rows if r["split"] == "test"][:items]
            out[f"corpus_test_{kind}_clean"] = [(load_audio(corpus / "sources" / kind / "test" / r["audio"]), r["text"])
                                                for r in rows]
    return out


def decode(model, audio: np.ndarray, pad_s: float) -> tuple[str, float]:
    t0 = time.perf_counter()
    feats = encode_segment(model, torch.from_numpy(audio), min_pad_s=2.0, pad_to_s=pad_s)
    ids = greedy_decode(model, feats, max_tokens=segment_token_limit(len(audio) / 16000))[0]
    return model.tokenizer.decode(ids).strip(), 1000 * (time.perf_counter() - t0)


def main(argv=None) -> int:
    import jiwer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--items", type=int, default=40, help="test sources per kind")
    ap.add_argument("--models", nargs="+", default=["tiny.en"])
    ap.add_argument("--pads", nargs="+", type=float, default=[2.0, 30.0],
                    help="segment padded to max(dur + 2 s, PAD) seconds (<= 30)")
    ap.add_argument("--real-voices", action="store_true", help="also every clean real recording (332 utterances)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    corpus = Path(a.corpus) if (Path(a.corpus) / "sources" / "speech.jsonl").is_file() else None
    data = sets(corpus, a.items, a.real_voices)
    rows = []
    for name in a.models:
        model = load_whisper(name)
        for pad in a.pads:
            for set_name, utts in data.items():
                hyps, refs, ms, loops, dur = [], [], [], 0, 0.0
                for audio, ref in utts:
                    text, t = decode(model, audio, pad)
                    hyps.append(normalize_text(text))
                    refs.append(normalize_text(ref))
                    ms.append(t)
                    dur += len(audio) / 16000
                    loops += int(has_repetition_loop(text.split()))
                wer = jiwer.wer(refs, [h if h else "<empty>" for h in hyps])
                row = {"model": name, "pad_s": pad, "set": set_name, "utterances": len(utts), "audio_s": round(dur, 1),
                       "wer": round(100 * wer, 2), "loops": loops, "ms_per_segment_p50": round(float(np.median(ms)), 1),
                       "rtf": round(sum(ms) / 1000 / dur, 4), "examples": list(zip(refs[:3], hyps[:3]))}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "examples"}), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"device": "cpu", "threads": a.threads, "commit": commit, "corpus": str(corpus), "rows": rows}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['model']} pad{int(r['pad_s'])}\n{r['set'].replace('corpus_test_', '')}" for r in rows]
    ax.bar(range(len(rows)), [r["wer"] for r in rows])
    ax.set_xticks(range(len(rows)), labels, fontsize=6, rotation=60)
    ax.set_ylabel("WER %")
    ax.set_title("Whisper finals on whole segments (greedy, our port)")
    fig.tight_layout()
    fig.savefig(Path(a.json).with_suffix(".png"), dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
