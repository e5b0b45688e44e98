"""Recognizer accuracy for the model card: WER/CER per track on clean test-split sources
(unseen voices) for full context and 160/320/640 ms chunks (greedy CTC), and at 320 ms for
CTC prefix beam search and attention rescoring, each without and (when the model folder has
``lm.npz``) with the token n-gram LM fused; plus real read speech (Debian
``pocketsphinx-testdata`` librivox) reported as it is.

Chunked offline encoding equals the streaming ``step`` path (tests/test_asr_encoder.py), so
these are the streaming figures.

    python -m jrsv_stream.eval.asr_eval --model models/asr --corpus data/corpus --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

from jrsv_stream.audio.io import load_audio
from jrsv_stream.decode.ctc_prefix_beam import PrefixBeamConfig, ctc_greedy, nbest, prefix_beam_search
from jrsv_stream.decode.ngram_lm import TokenNgramLM, load_model_lm
from jrsv_stream.decode.rescoring import attention_rescore
from jrsv_stream.decode.tokenizer import Tokenizer
from jrsv_stream.nn.asr import TRACKS, ASRModel
from jrsv_stream.train.asr_data import read_utterances

CHUNKS = {"full": None, "160ms": 4, "320ms": 8, "640ms": 16}


def librivox_utterances() -> list[tuple[str, str]]:
    """(wav path, reference text) of the 5 real read-speech utterances, if installed."""
    from jrsv_stream.data.real_corpora import CorpusError, read_librivox_testdata

    try:
        return [(str(p), t) for p, t in read_librivox_testdata()]
    except CorpusError:
        return []


@torch.no_grad()
def beam_and_rescore(model: ASRModel, tok: Tokenizer, logp: np.ndarray, enc: torch.Tensor, enc_lens: torch.Tensor,
                     cfg: PrefixBeamConfig, chunk_frames: int | None, ctc_weight: float = 0.5) -> tuple[str, str]:
    """Texts of the prefix beam search's best and of the attention-rescored best (one utterance)."""
    hyps = nbest(prefix_beam_search(logp, cfg, chunk_frames=chunk_frames), cfg.beam, cfg)
    res = attention_rescore(hyps, ctc_weight, lambda h: model.score(enc, enc_lens, h))
    return tok.decode(hyps[0].tokens), tok.decode(res[0].tokens)


@torch.no_grad()
def decode_all(model: ASRModel, tok: Tokenizer, wav: np.ndarray, track: int, beam: int = 10,
               ctc_weight: float = 0.5, lm: TokenNgramLM | None = None) -> dict[str, str]:
    """Hypothesis text for every (chunking, search) setting of one utterance; with ``lm``
    also ``beam+lm`` / ``rescored+lm`` (shallow fusion at the LM's tuned weights)."""
    x = torch.from_numpy(wav)[None]
    lens = torch.tensor([x.shape[1]])
    tracks = torch.tensor([track])
    out = {}
    for name, c in CHUNKS.items():
        enc, enc_lens = model.encode(x, lens, tracks, c)
        logp = model.ctc_logp(enc)[0, : int(enc_lens[0])].numpy()
        out[f"greedy@{name}"] = tok.decode(ctc_greedy(logp).tokens)
        if name == "320ms":
            for tag, fuse in (("", None), ("+lm", lm)) if lm is not None else (("", None),):
                out[f"beam{tag}@{name}"], out[f"rescored{tag}@{name}"] = beam_and_rescore(
                    model, tok, logp, enc, enc_lens, PrefixBeamConfig(beam=beam, nbest=beam, lm=fuse), c, ctc_weight)
    return out


def evaluate_asr(model_dir: str | Path, corpus: str | Path, split: str = "test", max_utts: int | None = None,
                 use_lm: bool = True) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = ASRModel.from_pretrained(model_dir).eval()
    tok = Tokenizer(Path(model_dir) / "tokenizer.model")
    lm = load_model_lm(model_dir) if use_lm else None
    names = {v: k for k, v in TRACKS.items()}
    refs: dict[str, list[str]] = {}
    hyps: dict[str, dict[str, list[str]]] = {}
    t0 = time.time()
    utts = read_utterances(corpus, split, ["speech", "singing"])
    if max_utts:
        utts = utts[:max_utts]
    for u in utts:
        tr = names[u.track]
        refs.setdefault(tr, []).append(u.text)
        for k, h in decode_all(model, tok, load_audio(u.path), u.track, lm=lm).items():
            hyps.setdefault(tr, {}).setdefault(k, []).append(h)
    res: dict = {"model": str(model_dir), "corpus": str(corpus), "split": split, "n_utts": {t: len(r) for t, r in refs.items()},
                 "lm": None if lm is None else {"order": lm.order, "weight": lm.weight, "token_bonus": lm.token_bonus}}
    shown = "rescored+lm@320ms" if lm is not None else "rescored@320ms"
    for tr in refs:
        res[tr] = {k: {"wer": round(100 * jiwer.wer(refs[tr], h), 2), "cer": round(100 * jiwer.cer(refs[tr], h), 2)}
                   for k, h in hyps[tr].items()}
        res[tr]["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(refs[tr], hyps[tr][shown]))[:3]]
    lv = librivox_utterances()
    if lv:
        lv_refs, lv_hyps = [], {}
        for path, ref in lv:
            lv_refs.append(ref)
            for k, h in decode_all(model, tok, load_audio(path), TRACKS["speech"], lm=lm).items():
                lv_hyps.setdefault(k, []).append(h)
        res["librivox_real_speech"] = {k: {"wer": round(100 * jiwer.wer(lv_refs, h), 2), "cer": round(100 * jiwer.cer(lv_refs, h), 2)}
                                       for k, h in lv_hyps.items()}
        res["librivox_real_speech"]["examples"] = [{"ref": r, "hyp": h} for r, h in zip(lv_refs, lv_hyps[shown])][:2]
    res["seconds"] = round(time.time() - t0, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/asr")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-utts", type=int, default=None)
    ap.add_argument("--json", required=True)
    ap.add_argument("--no-lm", action="store_true", help="leave out the +lm rows even when MODEL/lm.npz exists")
    a = ap.parse_args(argv)
    res = evaluate_asr(a.model, a.corpus, a.split, a.max_utts, use_lm=not a.no_lm)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ("speech", "singing")} | {
        t: {k: v for k, v in res[t].items() if k != "examples"} for t in ("speech", "singing") if t in res}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
