"""`jrsv-stream train lm`: trains on train-split text only, tunes on valid audio, writes
the LM the pipeline then loads, with the tuned weights."""

import json

from jrsv_stream.cli import main
from jrsv_stream.data.text import load_lyric_lines, load_sentences
from jrsv_stream.decode.ngram_lm import load_model_lm
from jrsv_stream.decode.tokenizer import Tokenizer
from jrsv_stream.train.lm import lm_text
from tests.test_asr_train import _corpus
from tests.tiny_models import save_tiny_pipeline


def test_train_lm_cli_writes_a_tuned_lm_into_the_model_folder(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    asr = save_tiny_pipeline(tmp_path / "models", encoder="lstm") / "asr"
    rc = main(["train", "lm", "--model", str(asr), "--corpus", str(corpus), "--order", "3", "--valid-utts", "4",
               "--weights", "0.5", "--bonuses", "1.0", "2.0", "--json", str(tmp_path / "rep.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert [(r["weight"], r["token_bonus"]) for r in rep["grid"]] == [(0.0, 0.0), (0.5, 1.0), (0.5, 2.0)]
    assert rep["best"] == min(rep["grid"], key=lambda r: r["rescored_wer"])
    assert rep["n_valid_utts"] == 4 and rep["valid_perplexity"] > 1.0
    lm = load_model_lm(asr)
    assert (lm.order, lm.weight, lm.token_bonus) == (3, rep["best"]["weight"], rep["best"]["token_bonus"])
    assert lm.vocab_size == Tokenizer(asr / "tokenizer.model").vocab_size


def test_lm_text_never_holds_a_valid_or_test_line():
    train = lm_text("train")
    assert len(train) > 40000
    for split in ("valid", "test"):
        held_out = set(lm_text(split))
        assert len(held_out) > 1000 and not set(train) & held_out
    # the raw pools do overlap a little (train lyric phrases equal to short test sentences)
    raw = {" ".join(x.words) for x in load_lyric_lines()["train"]}
    assert raw & {" ".join(x.words) for x in load_sentences()["test"]}
