"""Can an encoder memorize a few clean utterances? A learnability check for the recognizer.

The chunked conformer never left the CTC all-blank plateau on the full corpus on this CPU
while the LSTM did. This trains one encoder family from scratch, CTC only, full context, no
augmentation, on the first ``--utts`` train utterances of the corpus (one fixed batch), and
logs the CTC loss and the greedy CER on that same batch. A model with a broken learning
path (masking, normalization, CTC lengths) cannot memorize; one that memorizes but stays on
the plateau on the corpus has an optimization / generalization problem instead.

    .venv/bin/python bench/asr_overfit.py --encoder conformer --utts 8 --steps 300 --json bench/results/asr_overfit_conformer.json
    .venv/bin/python bench/asr_overfit.py --encoder lstm --utts 8 --steps 300 --json bench/results/asr_overfit_lstm.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit  # noqa: E402

CONFIGS = {"conformer": "configs/asr_conformer_stack.yaml", "lstm": "configs/asr_lstm_stage1.yaml"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", choices=sorted(CONFIGS), required=True)
    p.add_argument("--config", default=None, help="training config whose model is used (default: per encoder)")
    p.add_argument("--utts", type=int, default=8)
    p.add_argument("--max-utt-s", type=float, default=6.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokenizer", default="models/asr/tokenizer.model")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    import torch

    from jrsv_stream.decode.tokenizer import Tokenizer
    from jrsv_stream.eval.system_eval import count_errors
    from jrsv_stream.nn.asr import ASRModel
    from jrsv_stream.train.asr import _model_config, ctc_greedy, load_config
    from jrsv_stream.train.asr_data import ASRDataset, read_utterances

    torch.set_num_threads(a.threads)
    cfg = load_config(a.config or CONFIGS[a.encoder])
    tok = Tokenizer(a.tokenizer)
    utts = read_utterances(cfg.data.corpus, "train", cfg.data.track_names(), a.max_utt_s)[: a.utts]
    if len(utts) < a.utts:
        p.error(f"only {len(utts)} train utterances of <= {a.max_utt_s} s in {cfg.data.corpus}")
    batch = ASRDataset(utts, [tok.encode(u.text) for u in utts], [list(range(len(utts)))], cfg.data, augment=False,
                       n_mels=cfg.model.features.n_mels)[0]
    torch.manual_seed(0)
    model = ASRModel(_model_config(cfg, tok))
    if model.cfg.ctc_weight != 1.0:
        p.error("the check is CTC only: use a config with ctc_weight 1.0")
    with torch.no_grad():
        f, _ = model.features(batch.wav, batch.wav_lens)
    model.features.set_normalization(f.mean((0, 1)), f.std((0, 1)))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    log, t0 = [], time.perf_counter()
    for step in range(a.steps + 1):
        model.train()
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / a.warmup)
        feats, lens = model.features(batch.wav, batch.wav_lens)
        out = model.loss(feats, lens, batch.tokens, batch.tracks, None, -1)
        opt.zero_grad()
        out["ctc"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if step % a.every == 0:
            model.eval()
            with torch.no_grad():
                enc, enc_lens = model.encoder(feats, lens, None, -1, batch.tracks)
                hyps = ctc_greedy(model.ctc_logp(enc), enc_lens)
            errs = [count_errors(u.text, tok.decode(h)) for h, u in zip(hyps, utts)]
            cer = 100.0 * sum(e.char_errors for e in errs) / max(1, sum(e.ref_chars for e in errs))
            log.append({"step": step, "ctc": round(out["ctc"].item(), 3), "cer": round(cer, 2),
                        "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
    res = {"encoder": a.encoder, "config": a.config or CONFIGS[a.encoder], "utts": a.utts, "audio_s": round(
        sum(u.duration_s for u in utts), 2), "steps": a.steps, "lr": a.lr, "warmup": a.warmup, "n_params": model.n_params(),
        "log": log, "commit": git_commit(), "device": device_name("cpu")}
    if a.json:
        out_path = Path(a.json)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=1))
        _plot(res, out_path.with_suffix(".png"))
    return 0


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["step"] for r in res["log"]], [r["cer"] for r in res["log"]], marker="o")
    ax.set_xlabel("step (one fixed batch)")
    ax.set_ylabel("greedy CER % on that batch")
    ax.set_title(f"{res['encoder']}: memorizing {res['utts']} utterances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
