"""What a separator does to real voices with nothing to remove: every clean real recording of
``jrsv-stream data real-voices`` (``test_clean.jsonl``, no music) through each separator, offline.

Per model: SI-SDR of the speech track against the input itself (the voice is the whole input,
so any loss is damage), each track's share of the output energy, and the mean speech / singing
activity over the voiced frames (frames within 13 dB of the item's loudest). The SI-SDRi sets
of ``bench/separator_eval.py`` all have music under the voice; this is the case they miss.

    .venv/bin/python bench/separator_clean_voices.py --model models/separator_real --model models/variants/separator_deep \
        --json bench/results/separator_clean_voices_s24.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from bench.common import device_name, git_commit  # noqa: E402
from jrsv_stream.eval.metrics import si_sdr  # noqa: E402
from jrsv_stream.nn.separator import SOURCES, load_separator  # noqa: E402


@torch.inference_mode()
def measure(model_dir: str, rows: list[dict], root: Path) -> dict:
    model, _, _ = load_separator(model_dir)
    hop, delay = model.hop_samples, model.output_delay_samples
    per_item = []
    for r in rows:
        x, sr = sf.read(root / r["mixture"], dtype="float32")
        if sr != 16000:
            raise ValueError(f"{r['id']}: {sr} Hz, expected 16000")
        n = len(x) // hop * hop
        out = model(torch.from_numpy(x[:n])[None])
        est = out.sources[0, :, delay:].numpy()
        energy = (est.astype(np.float64) ** 2).sum(1)
        act = out.activity_probs[0].numpy()
        frame_e = (x[:n].reshape(-1, hop).astype(np.float64) ** 2).mean(1)[: act.shape[1]]
        voiced = frame_e > 0.05 * frame_e.max()
        per_item.append({"id": r["id"], "si_sdr_speech": float(si_sdr(est[0], x[: n - delay])),
                         "energy_share": dict(zip(SOURCES, (energy / energy.sum()).tolist())),
                         "p_speech": float(act[0][voiced].mean()), "p_singing": float(act[1][voiced].mean())})
    s = np.array([p["si_sdr_speech"] for p in per_item])
    return {"model": model_dir, "items": len(per_item), "si_sdr_speech_mean": float(s.mean()),
            "si_sdr_speech_median": float(np.median(s)), "si_sdr_speech_min": float(s.min()),
            "energy_share": {k: float(np.mean([p["energy_share"][k] for p in per_item])) for k in SOURCES},
            "p_speech_voiced": float(np.mean([p["p_speech"] for p in per_item])),
            "p_singing_voiced": float(np.mean([p["p_singing"] for p in per_item])), "per_item": per_item}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="separator folder (repeatable)")
    ap.add_argument("--real-voices", default="data/real_voices")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(a.real_voices)
    manifest = root / "test_clean.jsonl"
    if not manifest.is_file():
        sys.exit(f"{manifest} not found: run `jrsv-stream data real-voices --corpus data/corpus --out {root}` first")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    results = [measure(m, rows, root) for m in a.model]
    for r in results:
        print(f"{r['model']}: {r['items']} clean real voices, speech SI-SDR vs input mean {r['si_sdr_speech_mean']:.2f} "
              f"(median {r['si_sdr_speech_median']:.2f}, min {r['si_sdr_speech_min']:.2f}) dB; "
              f"p(speech) {r['p_speech_voiced']:.3f}, p(singing) {r['p_singing_voiced']:.3f} over voiced frames")
    out = {"bench": "separator_clean_voices", "commit": git_commit(), "device": device_name("cpu"),
           "manifest": str(manifest), "results": results}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
