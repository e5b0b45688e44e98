"""The finals' Whisper decoder in float32 and with int8 weights (``nn/whisper_int8.py``):
the cost of one decoder step (one token, 15 s of encoder features, KV cache) and greedy
WER over real voices, clean and over test music, with the same bf16 encoder features (the
whole item padded to 15 s, as a final). Also the int8 variants of only the blocks / only the
output projection. Writes JSON and a bar plot of the step cost.

    .venv/bin/python bench/decoder_dtype.py --json bench/results/decoder_dtype.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.eval.scoring import ErrorCounts, count_errors
    from jrsv_stream.nn.whisper import DecoderCache
    from jrsv_stream.nn.whisper_decode import encode_segment, greedy_decode
    from jrsv_stream.nn.whisper_int8 import int8_decoder_model
    from jrsv_stream.nn.whisper_weights import load_whisper

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whisper", default="base")
    ap.add_argument("--real-voices", default="data/real_voices")
    ap.add_argument("--items", type=int, default=60, help="items of each of test_clean / test_mixed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    wm = load_whisper(a.whisper).eval()
    blocks = int8_decoder_model(wm)
    blocks.decoder.output = None  # int8 blocks, float32 output projection
    proj = int8_decoder_model(wm)
    proj.decoder.blocks = wm.decoder.blocks  # float32 blocks, int8 output projection
    variants = {"float32": wm, "int8": int8_decoder_model(wm), "int8_blocks_only": blocks, "int8_projection_only": proj}
    feats = torch.randn(1, 750, wm.dims.n_audio_state)
    sot = torch.tensor([wm.tokenizer.sot_sequence()])
    step_ms = {}
    with torch.no_grad():
        for k, m in variants.items():
            cache = DecoderCache()
            m.decoder(sot, feats, cache)
            tok = torch.tensor([[440]])
            for _ in range(3):
                m.decoder(tok, None, cache)
            t = time.perf_counter()
            for _ in range(20):
                m.decoder(tok, None, cache)
            step_ms[k] = round((time.perf_counter() - t) / 20 * 1000, 2)
    root = Path(a.real_voices)
    res = {"whisper": a.whisper, "threads": a.threads, "step_ms": step_ms, "sets": {}}
    for name in ("test_clean", "test_mixed"):
        rows = [json.loads(x) for x in (root / f"{name}.jsonl").read_text().splitlines()][: a.items]
        errs = {k: ErrorCounts() for k in variants}
        differ = {k: 0 for k in variants}
        for r in rows:
            audio = torch.from_numpy(load_audio(root / r["mixture"]))
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                f = encode_segment(wm, audio, 2.0, 15.0).float()
            texts = {}
            with torch.no_grad():
                for k, m in variants.items():
                    texts[k] = wm.tokenizer.decode(greedy_decode(m, f, max_tokens=100)[0]).strip()
                    errs[k] += count_errors(r["speech_text"], texts[k])
                    differ[k] += texts[k] != texts["float32"]
        res["sets"][name] = {"items": len(rows), "texts_differing_from_float32": differ,
                             "wer": {k: round(100.0 * c.word_errors / max(1, c.ref_words), 2) for k, c in errs.items()}}
        print(name, res["sets"][name], flush=True)
    print("step ms", step_ms)
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar(list(step_ms), list(step_ms.values()))
    ax.set_ylabel("ms per decoder step (1 token)")
    ax.set_title(f"Whisper {a.whisper} decoder, {a.threads} CPU threads")
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
