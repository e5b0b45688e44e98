"""Reference word times for the real-voice recordings, so caption latency (word end ->
caption) can be measured on real voices and not only on the synthetic corpus.

The installed recordings (``jrsv-stream data real-voices``) come with transcripts but no
word times. Here faster-whisper (Whisper base, float32, ``word_timestamps=True``: its
cross-attention alignment) transcribes each item's *speech stem* (the recording alone,
sample-aligned with the item's mixture), its words are aligned to the reference
transcript (normalized words, ``difflib``), and every reference word that matched gets the
recognized word's start / end. Reference words that did not match get no time and are left
out of ``speech_words`` (the transcript stays whole in ``speech_text``, for WER).

Writes ``<real-voices>/test_clean_timed.jsonl`` and ``test_mixed_timed.jsonl`` (the SNR
buckets asked for) beside the originals (same relative paths), and a summary JSON.

    .venv/bin/python bench/word_times.py --real-voices data/real_voices --snr 0 --json bench/results/word_times_real_voices.json
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.real_voices_eval import ct2_folder  # noqa: E402
from jrsv_stream.eval.scoring import normalize_text  # noqa: E402


def aligned_times(ref_text: str, words: list[tuple[str, float, float]]) -> list[list]:
    """``[[ref word, start_s, end_s], ...]`` for the reference words that ``difflib`` matches
    to recognized ``words`` (each normalized as the scoring normalizes text; a recognized
    word that normalizes to several words, e.g. "7" -> "seven", spreads its span evenly)."""
    hyp: list[tuple[str, float, float]] = []
    for w, s, e in words:
        parts = normalize_text(w).split()
        for k, p in enumerate(parts):
            d = (e - s) / len(parts)
            hyp.append((p, s + k * d, s + (k + 1) * d))
    ref = normalize_text(ref_text).split()
    sm = difflib.SequenceMatcher(a=ref, b=[h[0] for h in hyp], autojunk=False)
    out = []
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            _, s, e = hyp[blk.b + k]
            out.append([ref[blk.a + k], round(s, 3), round(e, 3)])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-voices", default="data/real_voices")
    ap.add_argument("--snr", type=float, nargs="*", default=[0.0], help="mixed items of these SNR buckets (dB)")
    ap.add_argument("--model", default="base", help="installed Whisper model faster-whisper aligns with")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True, help="summary JSON")
    a = ap.parse_args(argv)
    from faster_whisper import WhisperModel

    from jrsv_stream.audio.io import load_audio

    root = Path(a.real_voices)
    fw = WhisperModel(str(ct2_folder(a.model, root.parent / f"ct2_{a.model}")), device="cpu", compute_type="float32",
                      cpu_threads=a.threads)
    cache: dict[str, list] = {}  # speech stem -> recognized words
    summary = {"command": " ".join(sys.argv), "model": a.model, "sets": {}}
    t0 = time.time()
    for name, src in (("clean", "test_clean.jsonl"), ("mixed", "test_mixed.jsonl")):
        rows = [json.loads(x) for x in (root / src).read_text().splitlines() if x.strip()]
        if name == "mixed":
            rows = [r for r in rows if r.get("speech_snr_bucket") in a.snr]
        n_ref = n_timed = 0
        for r in rows:
            stem = str(root / r["speech"])
            if stem not in cache:
                segs, _ = fw.transcribe(load_audio(stem), language="en", beam_size=1, word_timestamps=True,
                                        vad_filter=False, condition_on_previous_text=False)
                cache[stem] = [(w.word, w.start, w.end) for s in segs for w in (s.words or [])]
            r["speech_words"] = aligned_times(r["speech_text"], cache[stem])
            r["speech_words_source"] = f"faster-whisper {a.model} word timestamps on the speech stem, aligned to the transcript"
            n_ref += len(normalize_text(r["speech_text"]).split())
            n_timed += len(r["speech_words"])
        out = root / src.replace(".jsonl", "_timed.jsonl")
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary["sets"][name] = {"items": len(rows), "reference_words": n_ref, "timed_words": n_timed,
                                 "timed_fraction": round(n_timed / max(1, n_ref), 3), "manifest": str(out)}
        print(name, summary["sets"][name], flush=True)
    summary["seconds"] = round(time.time() - t0, 1)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
