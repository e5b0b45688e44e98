"""Train the CTC heads of :class:`jrsv_stream.nn.whisper_ctc.WhisperCTC` on the frozen
Whisper encoder's streaming (windowed) features of the corpus's clean train-split vocals.

The features are exactly what the live steps compute (``all_windows`` + ``encode_windows``
at the chosen chunk), extracted once per utterance and cached under ``--cache`` (not in
git; rebuilt deterministically). Then the small heads train on them in minutes.

    .venv/bin/python -m jrsv_stream.train.whisper_ctc --corpus data/corpus --out models/variants/whisper_ctc_tiny \
        --per-kind 400 --minutes 6 --json bench/results/whisper_ctc_train.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.decode.ctc_prefix_beam import ctc_greedy
from jrsv_stream.decode.hybrid import normalize_text
from jrsv_stream.decode.tokenizer import Tokenizer
from jrsv_stream.nn.whisper_ctc import HeadConfig, WhisperCTC, WhisperCTCConfig


def sources(corpus: Path, split: str, per_kind: int, seed: int = 0) -> list[tuple[Path, str, int]]:
    out = []
    for kind, track in (("speech", 0), ("singing", 1)):
        rows = [json.loads(x) for x in (corpus / "sources" / f"{kind}.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r["split"] == split]
        random.Random(seed).shuffle(rows)
        out += [(corpus / "sources" / kind / split / r["audio"], r["text"], track) for r in rows[:per_kind]]
    return out


def features(model: WhisperCTC, wav: np.ndarray, chunk_samples: int) -> torch.Tensor:
    return model.encode_stream(torch.from_numpy(wav), chunk_samples, batch_windows=32)


def extract(model, items, chunk_samples: int, cache: Path, tag: str) -> list[tuple[torch.Tensor, list[int], int, str]]:
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for path, text, track in items:
        f = cache / f"{tag}_{chunk_samples}_{path.stem}.pt"
        if f.is_file():
            x = torch.load(f, weights_only=True)
        else:
            x = features(model, load_audio(path), chunk_samples).half()
            torch.save(x, f)
        out.append((x, text, track))
    return out


def ctc_wer(model: WhisperCTC, data, tok: Tokenizer) -> float:
    import jiwer

    refs, hyps = [], []
    model.heads.eval()
    with torch.no_grad():
        for x, text, track in data:
            lp = model.ctc_logp(x.float()[None], torch.tensor([track]))[0].numpy()
            hyps.append(tok.decode(list(ctc_greedy(lp, 0).tokens)).strip() or "<empty>")
            refs.append(normalize_text(text))
    return 100 * jiwer.wer(refs, hyps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", required=True)
    ap.add_argument("--whisper", default="tiny.en")
    ap.add_argument("--window-s", type=float, default=2.56)
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--per-kind", type=int, default=400)
    ap.add_argument("--test-per-kind", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--shared", type=int, default=1)
    ap.add_argument("--tokenizer", default="models/asr/tokenizer.model")
    ap.add_argument("--cache", default="data/whisper_feats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = Tokenizer(a.tokenizer)
    cfg = WhisperCTCConfig(whisper=a.whisper, window_s=a.window_s, vocab_size=tok.vocab_size,
                           head=HeadConfig(shared=bool(a.shared)))
    model = WhisperCTC(cfg)
    corpus = Path(a.corpus)
    cs = a.chunk_ms * 16
    t0 = time.time()
    cache = Path(a.cache) / f"{a.whisper}_w{a.window_s}"
    train = extract(model, sources(corpus, "train", a.per_kind), cs, cache, "train")
    test = extract(model, sources(corpus, "test", a.test_per_kind), cs, cache, "test")
    from jrsv_stream.data.real_corpora import read_librivox_testdata

    real = [(features(model, load_audio(p), cs), t, 0) for p, t in read_librivox_testdata()]
    t_feat = time.time() - t0
    print(f"features: {len(train)} train, {len(test)} test utterances in {t_feat:.0f} s", flush=True)
    ys = [tok.encode(normalize_text(t)) for _, t, _ in train]
    opt = torch.optim.AdamW(model.heads.parameters(), lr=2e-3, weight_decay=1e-2)
    t1, step, losses = time.time(), 0, []
    order = list(range(len(train)))
    rng = random.Random(0)
    while time.time() - t1 < 60 * a.minutes:
        rng.shuffle(order)
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            xs = [train[k][0].float() for k in idx]
            lens = torch.tensor([len(x) for x in xs])
            x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
            x = x + 0.05 * torch.randn_like(x) * x.std()  # light feature noise
            tr = torch.tensor([train[k][2] for k in idx])
            model.heads.train()
            lp = model.ctc_logp(x, tr)
            tg = [ys[k] for k in idx]
            loss = torch.nn.functional.ctc_loss(lp.transpose(0, 1), torch.tensor([t for y in tg for t in y]), lens,
                                                torch.tensor([len(y) for y in tg]), blank=0, reduction="sum",
                                                zero_infinity=True) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
            step += 1
            if step % 100 == 0:
                print(f"step {step} loss {np.mean(losses[-100:]):.2f} {time.time() - t1:.0f}s", flush=True)
            if time.time() - t1 >= 60 * a.minutes:
                break
    res = {"whisper": a.whisper, "window_s": a.window_s, "chunk_ms": a.chunk_ms, "shared_head": bool(a.shared),
           "train_utterances": len(train), "steps": step, "feature_s": round(t_feat, 1),
           "train_s": round(time.time() - t1, 1), "final_loss": round(float(np.mean(losses[-50:])), 3),
           "ctc_greedy_wer": {
               "corpus_test_speech_clean": round(ctc_wer(model, [d for d in test if d[2] == 0], tok), 2),
               "corpus_test_singing_clean": round(ctc_wer(model, [d for d in test if d[2] == 1], tok), 2),
               "real_librivox": round(ctc_wer(model, real, tok), 2)}}
    print(json.dumps(res), flush=True)
    model.save_pretrained(a.out, a.tokenizer, extra=res)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
