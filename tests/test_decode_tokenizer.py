"""Sentencepiece wrapper: id layout (blank 0), round trip, word starts, clear errors."""

from __future__ import annotations

import pytest

from jrsv_stream.decode.tokenizer import BLANK_ID, SOS_EOS_ID, Tokenizer, TokenizerError, train_tokenizer

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "fortune favors the bold and the brave",
    "every cloud has a silver lining",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return train_tokenizer(TEXTS, tmp_path_factory.mktemp("sp") / "tok", vocab_size=60)


def test_layout_and_round_trip(tok):
    assert tok.blank_id == BLANK_ID == 0
    assert tok.piece(0) == "<blank>" and tok.piece(SOS_EOS_ID) == "<sos/eos>"
    assert tok.sos_id == tok.eos_id == SOS_EOS_ID
    assert 10 < tok.vocab_size <= 60
    for text in ["the lazy dog saves nine", "every bird is gold"]:
        ids = tok.encode(text)
        assert ids and all(3 <= i < tok.vocab_size for i in ids)  # never blank / specials
        assert tok.decode(ids) == text
        # Blank and sos/eos inside a sequence are dropped when decoding.
        assert tok.decode([0] + ids + [SOS_EOS_ID]) == text


def test_word_starts(tok):
    ids = tok.encode("the quick brown fox")
    starts = [tok.is_word_start(i) for i in ids]
    assert starts[0] and sum(starts) == 4
    assert not tok.is_word_start(tok.blank_id) and not tok.is_word_start(tok.eos_id)
    assert tok.is_special(0) and tok.is_special(tok.unk_id) and not tok.is_special(ids[0])


@pytest.mark.parametrize("model_type", ["bpe"])
def test_bpe(tmp_path, model_type):
    t = train_tokenizer(TEXTS, tmp_path / "bpe", vocab_size=50, model_type=model_type)
    assert t.blank_id == 0 and t.decode(t.encode("the bold worm")) == "the bold worm"


def test_errors(tmp_path, tok):
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(TokenizerError, match="cannot load"):
        Tokenizer(bad)
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([tok.vocab_size])
    with pytest.raises(TokenizerError):
        tok.piece(-1)
    with pytest.raises(ValueError):
        train_tokenizer(TEXTS, tmp_path / "x", vocab_size=50, model_type="word")
    with pytest.raises(ValueError):
        train_tokenizer(["", "  "], tmp_path / "y", vocab_size=50)


def test_rejects_model_without_reserved_blank(tmp_path):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_prefix=str(tmp_path / "plain"),
                                   vocab_size=40, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    with pytest.raises(TokenizerError, match="reserved blank"):
        Tokenizer(tmp_path / "plain.model")
