"""Train the recognizer's token n-gram LM and tune its fusion weights:
``jrsv-stream train lm --model models/asr --corpus data/corpus``.

1. Text: the train split of the corpus text pools (fortune sentences and lyric lines,
   split by text hash: no valid or test sentence is ever seen), tokenized with the
   recognizer's own tokenizer.
2. Counting and smoothing: :class:`jrsv_stream.decode.ngram_lm.TokenNgramLM` (interpolated
   Kneser-Ney); perplexity on the valid text is reported.
3. Tuning: the recognizer encodes ``--valid-utts`` clean valid-split utterances (both
   tracks) once at 320 ms chunks; each (weight, token bonus) pair of the grid decodes them
   with the prefix beam search + attention rescoring (weight 0 = the no-LM baseline, always
   run first; a weight of 0 with a bonus is not tried: without an LM the bonus only trades
   deletions for insertions); the pair with the fewest word errors is stored in the LM
   file, which the live path then uses by default.
4. Output: ``MODEL/lm.npz`` and a JSON report (``--json``) with the grid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

DEFAULT_WEIGHTS = (0.3, 0.45, 0.6, 0.8)
DEFAULT_BONUSES = (1.0, 2.0, 3.0, 4.0)


def lm_text(split: str) -> list[str]:
    """Transcript-form lines (lowercase words) of ``split`` from both text pools.

    The pools are split by sentence, but a short lyric phrase cut from a train sentence can
    equal a whole valid/test sentence ("god isn't dead"); for ``train`` such lines are
    dropped, so the LM has seen no line of the evaluation text."""
    from jrsv_stream.data.text import load_lyric_lines, load_sentences

    sents, lines = load_sentences(), load_lyric_lines()

    def text(sp: str) -> list[str]:
        return [" ".join(s.words) for s in sents[sp]] + [" ".join(x.words) for x in lines[sp]]

    if split != "train":
        return text(split)
    held_out = set(text("valid")) | set(text("test"))
    return [t for t in text("train") if t not in held_out]


def _valid_set(model, corpus: str, n: int, chunk_frames: int, seed: int = 0):
    """(reference, logp (T, V), encoder frames) of ``n`` valid utterances, half per track."""
    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.train.asr_data import read_utterances

    utts = read_utterances(corpus, "valid", ["speech", "singing"])
    rng = np.random.default_rng(seed)
    out = []
    for tr in sorted({u.track for u in utts}):
        us = [u for u in utts if u.track == tr]
        for i in sorted(rng.permutation(len(us))[: max(1, n // 2)]):
            u = us[i]
            x = torch.from_numpy(load_audio(u.path))[None]
            with torch.no_grad():
                enc, enc_lens = model.encode(x, torch.tensor([x.shape[1]]), torch.tensor([u.track]), chunk_frames)
                logp = model.ctc_logp(enc)[0, : int(enc_lens[0])].numpy()
            out.append((u.text, logp, enc, enc_lens, tr))
    return out


def decode_set(model, tok, items, beam: int, lm, weight: float, bonus: float, ctc_weight: float = 0.5,
               chunk_frames: int = 8) -> tuple[list[str], list[str]]:
    """Beam-search and rescored hypotheses of ``items`` with the given fusion settings."""
    from jrsv_stream.decode.ctc_prefix_beam import PrefixBeamConfig
    from jrsv_stream.eval.asr_eval import beam_and_rescore

    cfg = PrefixBeamConfig(beam=beam, nbest=beam, lm=lm, lm_weight=weight, token_bonus=bonus)
    beam_h, resc_h = [], []
    for _, logp, enc, enc_lens, _ in items:
        b, r = beam_and_rescore(model, tok, logp, enc, enc_lens, cfg, chunk_frames, ctc_weight)
        beam_h.append(b)
        resc_h.append(r)
    return beam_h, resc_h


def train_lm(model_dir: str | Path, corpus: str | Path, order: int = 8, valid_utts: int = 200, beam: int = 10,
             weights=DEFAULT_WEIGHTS, bonuses=DEFAULT_BONUSES, out: str | Path | None = None) -> dict:
    """Train, tune and write ``out`` (default ``model_dir/lm.npz``); returns the report."""
    from jrsv_stream.decode.ngram_lm import TokenNgramLM
    from jrsv_stream.decode.tokenizer import Tokenizer
    from jrsv_stream.nn.asr import ASRModel

    t0 = time.time()
    model_dir = Path(model_dir)
    tok = Tokenizer(model_dir / "tokenizer.model")
    train_ids = [tok.encode(t) for t in lm_text("train")]
    valid_ids = [tok.encode(t) for t in lm_text("valid")]
    lm = TokenNgramLM.train(train_ids, order, tok.vocab_size, int(tok.eos_id))
    report: dict = {"model": str(model_dir), "corpus": str(corpus), "order": order,
                    "train_lines": len(train_ids), "train_tokens": int(sum(map(len, train_ids))),
                    "valid_perplexity": round(lm.perplexity(valid_ids), 3), "grid": []}
    model = ASRModel.from_pretrained(model_dir).eval()
    items = _valid_set(model, str(corpus), valid_utts, chunk_frames=8)
    refs = [it[0] for it in items]
    best = None
    # (0, 0) first: the no-LM baseline the report compares against
    grid = [(0.0, 0.0)] + [(w, b) for w, b in itertools.product(weights, bonuses) if w > 0.0]
    for w, b in grid:
        beam_h, resc_h = decode_set(model, tok, items, beam, lm, w, b)
        row = {"weight": w, "token_bonus": b,
               "beam_wer": round(100 * jiwer.wer(refs, beam_h), 2), "rescored_wer": round(100 * jiwer.wer(refs, resc_h), 2),
               "rescored_cer": round(100 * jiwer.cer(refs, resc_h), 2)}
        report["grid"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if best is None or row["rescored_wer"] < best["rescored_wer"]:
            best = row
    report["best"] = best
    report["n_valid_utts"] = len(items)
    lm.weight, lm.token_bonus = float(best["weight"]), float(best["token_bonus"])
    out = Path(out) if out else model_dir / "lm.npz"
    lm.save(out)
    report["out"] = str(out)
    report["seconds"] = round(time.time() - t0, 1)
    return report


def _add_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--model", default="models/asr", help="recognizer folder (its tokenizer; lm.npz is written here)")
    p.add_argument("--corpus", default="data/corpus", help="corpus whose valid split tunes the fusion weights")
    p.add_argument("--order", type=int, default=8)
    p.add_argument("--valid-utts", type=int, default=200)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--weights", type=float, nargs="+", default=list(DEFAULT_WEIGHTS))
    p.add_argument("--bonuses", type=float, nargs="+", default=list(DEFAULT_BONUSES))
    p.add_argument("--out", default=None, help="LM file (default MODEL/lm.npz)")
    p.add_argument("--json", default=None, help="write the tuning report here")
    p.set_defaults(fn=_run)
    return p


def _run(a: argparse.Namespace) -> int:
    rep = train_lm(a.model, a.corpus, a.order, a.valid_utts, a.beam, tuple(a.weights), tuple(a.bonuses), a.out)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rep, indent=1))
    print(f"lm {rep['out']}: order {rep['order']}, valid perplexity {rep['valid_perplexity']}, "
          f"best weight {rep['best']['weight']} bonus {rep['best']['token_bonus']}: valid rescored WER "
          f"{rep['best']['rescored_wer']} % (no LM: {rep['grid'][0]['rescored_wer']} %)")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``lm`` on the ``train`` sub-command (``jrsv-stream train lm``)."""
    return _add_args(subparsers.add_parser("lm", help="train the recognizer's token n-gram LM and tune its fusion weights"))
