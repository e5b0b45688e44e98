"""Train the CTC heads of :class:`jrsv_stream.nn.whisper_ctc.WhisperCTC` on the frozen
Whisper encoder's streaming (windowed) features of the corpus's clean train-split vocals.

The features are exactly what the live steps compute (``all_windows`` + ``encode_windows``
at the chosen chunk), extracted once per utterance and cached under ``--cache`` (not in
git; rebuilt deterministically). Then the small heads train on them in minutes. Each cache file holds the last two chunks' frames of every window
(:func:`features_two`), so one extraction serves both ``--lookahead-chunks 0`` and ``1``.
The encoder runs under bfloat16 autocast, as live. The best head by valid-split CTC WER
is kept; the report adds corpus test and every real recording (``data real-voices``).

    .venv/bin/python -m jrsv_stream.train.whisper_ctc --whisper base --out models/whisper_ctc \
        --minutes 10 --json bench/results/whisper_ctc_train_base.json

``--separated N`` adds the separated tracks of N train mixtures (the separator's streaming
path at its calibrated gain, as live) to the clean vocals; the report always adds the
separated tracks of the valid and test mixtures and of the real voices at 0 dB.
``--minutes 0`` with ``--init DIR`` only evaluates that head.
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


@torch.no_grad()
def features_two(model: WhisperCTC, wav: np.ndarray, chunk_samples: int, batch_windows: int = 32) -> torch.Tensor:
    """The last two chunks' encoder frames of every window of ``wav`` plus one window past
    its end: (n_chunks + 1, 2 * n, D) float16. ``[:-1, n:]`` are the no-lookahead live
    frames of each chunk, ``[1:, :n]`` the frames each chunk gets one chunk later
    (``lookahead_chunks=1``)."""
    n = chunk_samples // 320
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32))
    T = x.shape[0]
    x = torch.nn.functional.pad(x, (0, -(-T // chunk_samples) * chunk_samples - T + chunk_samples))
    win = model.all_windows(x, chunk_samples)
    enc = [model.encode_windows(win[i:i + batch_windows], 2 * n) for i in range(0, len(win), batch_windows)]
    return torch.cat(enc).half()


def live_frames(x2: torch.Tensor, lookahead_chunks: int) -> torch.Tensor:
    """(n_chunks + 1, 2n, D) from :func:`features_two` -> the frames the live steps emit
    (n_chunks * n, D)."""
    n = x2.shape[1] // 2
    y = x2[:-1, n:] if lookahead_chunks == 0 else x2[1:, :n]
    return y.reshape(-1, x2.shape[-1])


def ctc_wer(model: WhisperCTC, data, tok: Tokenizer) -> float:
    import jiwer

    if not data:  # a set that is not built here (e.g. no data real-voices)
        return float("nan")
    refs, hyps = [], []
    model.heads.eval()
    with torch.no_grad():
        for x, text, track in data:
            lp = model.ctc_logp(x.float()[None], torch.tensor([track]))[0].numpy()
            hyps.append(tok.decode(list(ctc_greedy(lp, 0).tokens)).strip() or "<empty>")
            refs.append(normalize_text(text))
    return 100 * jiwer.wer(refs, hyps)


def load_cached(model: WhisperCTC, cache: Path, split: str, items, lookahead_chunks: int, chunk_samples: int
                ) -> list[tuple[torch.Tensor, str, int]]:
    """(live frames float16, text, track) of each item (key, load() -> audio, text, track),
    from the ``features_two`` cache ``cache/<split>_<key>.pt``, extracted when missing."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for key, load, text, track in items:
        f = cache / f"{split}_{key}.pt"
        if f.is_file():
            x2 = torch.load(f, weights_only=True)
        else:
            x2 = features_two(model, load(), chunk_samples)
            torch.save(x2, f.with_suffix(".part"))
            f.with_suffix(".part").rename(f)
        out.append((live_frames(x2, lookahead_chunks), text, track))
    return out


def corpus_items(corpus: Path, split: str, per_kind: int = 100000) -> list:
    return [(p.stem, lambda p=p: load_audio(p), t, k) for p, t, k in sources(corpus, split, per_kind)]


def manifest_rows(path: Path, n: int | None = None, seed: int = 0) -> list[dict]:
    """The rows of a mixture manifest (``n`` of them, a seeded draw; None: all, in order)."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if n is not None:
        random.Random(seed).shuffle(rows)
        rows = rows[:n]
    return rows


def separated_items(root: Path, rows: list[dict], separator: str) -> list:
    """The separated tracks of mixtures (manifest ``rows``, paths relative to ``root``) as
    the live pipeline hears them (the separator's streaming path at its calibrated gain):
    (key, load, text, track) per mixture and voice with a text (speech -> track 0, singing
    -> track 1). Each mixture is separated once, on its first load."""
    from jrsv_stream.separate import calibrated_separator

    state: dict = {}

    def tracks(r: dict) -> np.ndarray:
        if state.get("id") != r["id"]:
            if "run" not in state:
                state["run"] = calibrated_separator(separator)
            state["id"], state["tracks"] = r["id"], state["run"](load_audio(root / r["mixture"]))[1]
        return state["tracks"]

    out = []
    for r in rows:
        for text_key, track in (("speech_text", 0), ("singing_text", 1)):
            if r.get(text_key):
                out.append((f"sep_{r['id']}_{track}", lambda r=r, k=track: tracks(r)[k], r[text_key], track))
    return out


def stem_items(root: Path, rows: list[dict]) -> list:
    """The clean voice stems of mixtures (manifest ``rows``, paths relative to ``root``):
    (key, load, text, track) per mixture and voice with a text."""
    out = []
    for r in rows:
        for stem, text_key, track in (("speech", "speech_text", 0), ("singing", "singing_text", 1)):
            if r.get(text_key) and r.get(stem):
                out.append((f"stem_{r['id']}_{track}", lambda p=root / r[stem]: load_audio(p), r[text_key], track))
    return out


def real_voices_separated(separator: str, manifest: str = "data/real_voices/test_mixed.jsonl", snr: str = "snr+0") -> list:
    """The separated speech of the real voices over test music at 0 dB (``data real-voices``;
    empty when that manifest is not built)."""
    man = Path(manifest)
    if not man.is_file():
        return []
    rows = [r for r in manifest_rows(man) if r["id"].endswith(snr)]
    return [x for x in separated_items(man.parent, rows, separator) if x[3] == 0]


def time_mask(x: torch.Tensor, rng: random.Random, n: int = 2, width: int = 10) -> torch.Tensor:
    """Zero ``n`` random spans of up to ``width`` frames of x (T, D) (SpecAugment-style,
    on encoder features)."""
    x = x.clone()
    for _ in range(n):
        w = rng.randint(0, width)
        a = rng.randint(0, max(0, x.shape[0] - w))
        x[a:a + w] = 0
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", required=True)
    ap.add_argument("--whisper", default="base")
    ap.add_argument("--window-s", type=float, default=2.56)
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--lookahead-chunks", type=int, default=0)
    ap.add_argument("--per-kind", type=int, default=100000)
    ap.add_argument("--minutes", type=float, default=10.0, help="training time (0: only evaluate the --init head)")
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--shared", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--rnn", type=int, default=0, help="causal LSTM size in the head (0: per-frame MLP)")
    ap.add_argument("--init", default=None, help="start from this model folder's head (resume / fine-tune)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--separated", type=int, default=0,
                    help="also train on the separated tracks of this many train mixtures (0: clean vocals only)")
    ap.add_argument("--separator", default="models/separator_real", help="the separator of --separated and the separated test sets")
    ap.add_argument("--select-on", choices=("clean", "both"), default="clean",
                    help="keep the head with the best valid WER on the clean vocals, or on those and the valid mixtures' separated tracks")
    ap.add_argument("--tokenizer", default="models/asr/tokenizer.model")
    ap.add_argument("--cache", default="data/whisper_feats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = Tokenizer(a.tokenizer)
    cfg = WhisperCTCConfig(whisper=a.whisper, window_s=a.window_s, vocab_size=tok.vocab_size,
                           lookahead_chunks=a.lookahead_chunks,
                           head=HeadConfig(shared=bool(a.shared), hidden=a.hidden, dropout=a.dropout, rnn=a.rnn))
    model = WhisperCTC(cfg)
    if a.init:
        model.heads.load_state_dict(torch.load(Path(a.init) / "ctc_head.pt", weights_only=True))
    corpus = Path(a.corpus)
    cache = Path(a.cache) / f"{a.whisper}_w{a.window_s}_c{a.chunk_ms}_bf16_x2"
    t0 = time.time()
    L = a.lookahead_chunks
    cs = a.chunk_ms * 16
    train = load_cached(model, cache, "train", corpus_items(corpus, "train", a.per_kind), L, cs)
    sep_tag = "sep" + Path(a.separator).name  # the separated tracks' cache depends on the separator
    if a.separated:
        train += load_cached(model, cache, sep_tag + "_train", separated_items(corpus, manifest_rows(corpus / "train.jsonl", a.separated), a.separator), L, cs)
    valid = load_cached(model, cache, "valid", corpus_items(corpus, "valid"), L, cs)
    valid_sep = load_cached(model, cache, sep_tag + "_valid", separated_items(corpus, manifest_rows(corpus / "valid.jsonl"), a.separator), L, cs)
    # the test split's clean voices from its mixtures' stems (a corpus built split by split
    # lists only its last build's sources)
    test = load_cached(model, cache, "test", stem_items(corpus, manifest_rows(corpus / "test.jsonl")), L, cs)
    test_sep = load_cached(model, cache, sep_tag + "_test", separated_items(corpus, manifest_rows(corpus / "test.jsonl"), a.separator), L, cs)
    from jrsv_stream.data.real_voices import real_voice_items

    rv = real_voice_items()
    real = load_cached(model, cache, "real", [(v.id, v.load, v.text, 0) for v in rv], L, cs)
    real0 = load_cached(model, cache, sep_tag + "_real0", real_voices_separated(a.separator), L, cs)
    print(f"features: {len(train)} train, {len(valid)} valid, {len(test)} test, {len(real)} real in {time.time() - t0:.0f} s",
          flush=True)
    ys = [tok.encode(normalize_text(t)) for _, t, _ in train]

    def valid_score() -> tuple[float, float, float]:
        """(the selection score, valid clean WER, valid separated WER) of the head now."""
        vc, vs = ctc_wer(model, valid, tok), ctc_wer(model, valid_sep, tok)
        return (vc if a.select_on == "clean" else (vc + vs) / 2), vc, vs

    opt = torch.optim.AdamW(model.heads.parameters(), lr=a.lr, weight_decay=1e-2)
    total_s = 60 * a.minutes
    t1, step, losses, history = time.time(), 0, [], []
    best = (float("inf"), None)
    order = list(range(len(train)))
    rng = random.Random(0)
    done = total_s <= 0  # --minutes 0: evaluate the --init head as it is
    while not done:
        rng.shuffle(order)
        for i in range(0, len(order), a.batch):
            idx = order[i:i + a.batch]
            xs = [time_mask(train[k][0].float(), rng) for k in idx]
            lens = torch.tensor([len(x) for x in xs])
            x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
            x = x + 0.05 * torch.randn_like(x) * x.std()  # light feature noise
            tr = torch.tensor([train[k][2] for k in idx])
            model.heads.train()
            frac = min(1.0, (time.time() - t1) / total_s)
            for g in opt.param_groups:  # linear warm-up then cosine decay over the time budget
                g["lr"] = a.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * frac))
            lp = model.ctc_logp(x, tr)
            tg = [ys[k] for k in idx]
            loss = torch.nn.functional.ctc_loss(lp.transpose(0, 1), torch.tensor([t for y in tg for t in y]), lens,
                                                torch.tensor([len(y) for y in tg]), blank=0, reduction="sum",
                                                zero_infinity=True) / len(idx)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.heads.parameters(), 5.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % a.eval_every == 0 or time.time() - t1 >= total_s:
                v, vc, vs = valid_score()
                history.append({"step": step, "s": round(time.time() - t1), "loss": round(float(np.mean(losses[-100:])), 2),
                                "valid_wer": round(vc, 2), "valid_separated_wer": round(vs, 2)})
                print(history[-1], flush=True)
                if v < best[0]:
                    best = (v, {k: t.detach().clone() for k, t in model.heads.state_dict().items()})
            if time.time() - t1 >= total_s:
                done = True
                break
    if best[1] is None:
        v, vc, vs = valid_score()
        best = (v, model.heads.state_dict())
        history.append({"step": 0, "valid_wer": round(vc, 2), "valid_separated_wer": round(vs, 2)})
    model.heads.load_state_dict(best[1])
    by_source: dict[str, list] = {}
    for v, d in zip(rv, real):
        by_source.setdefault(v.source, []).append(d)
    res = {"whisper": a.whisper, "window_s": a.window_s, "chunk_ms": a.chunk_ms, "lookahead_chunks": L,
           "shared_head": bool(a.shared), "hidden": a.hidden, "rnn": a.rnn, "train_utterances": len(train),
           "separated_train_mixtures": a.separated, "separator": a.separator, "select_on": a.select_on, "init": a.init,
           "lr": a.lr, "steps": step,
           "train_s": round(time.time() - t1, 1), "best_valid_wer": round(best[0], 2), "history": history,
           "ctc_greedy_wer": {
               "corpus_test_speech_clean": round(ctc_wer(model, [d for d in test if d[2] == 0], tok), 2),
               "corpus_test_singing_clean": round(ctc_wer(model, [d for d in test if d[2] == 1], tok), 2),
               "corpus_test_speech_separated": round(ctc_wer(model, [d for d in test_sep if d[2] == 0], tok), 2),
               "corpus_test_singing_separated": round(ctc_wer(model, [d for d in test_sep if d[2] == 1], tok), 2),
               "real_voices_0db_separated": round(ctc_wer(model, real0, tok), 2),
               "real_voices_clean_all": round(ctc_wer(model, real, tok), 2),
               **{f"real_{k}": round(ctc_wer(model, d, tok), 2) for k, d in by_source.items()}}}
    res["ctc_greedy_wer"] = {k: (None if v != v else v) for k, v in res["ctc_greedy_wer"].items()}  # NaN -> null
    print(json.dumps(res["ctc_greedy_wer"]), flush=True)
    model.save_pretrained(a.out, a.tokenizer, extra={k: v for k, v in res.items() if k != "history"})
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
