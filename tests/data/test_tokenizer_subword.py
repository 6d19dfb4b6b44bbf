"""SubwordTokenizer: WordPiece vocabulary learned with tensorflow-text, tokenize/detokenize."""

import random

import pytest
import tensorflow as tf

from keraslm.data import SubwordTokenizer, tokenizer_from_name

_rng = random.Random(0)
STEMS = ["".join(_rng.choice("bcdfgklmnprstvw") + _rng.choice("aeiou") for _ in range(2)) for _ in range(60)]
# Rare words that share frequent suffixes, plus frequent whole words (a Zipf-like spread of counts).
CORPUS = [" ".join(s + suffix for s in STEMS for suffix in ("", "ing", "ed", "s")) + " The the, the!" * 20]


@pytest.fixture(scope="module")
def tok():
    t = SubwordTokenizer(target_vocab_size=80, lowercase=True)
    t.adapt(CORPUS)
    return t


def test_vocabulary_has_reserved_chars_and_suffix_pieces(tok):
    vocab = tok.vocabulary
    assert vocab[:2] == ["<pad>", "<unk>"]
    assert len(vocab) <= 80 and tok.vocab_size == len(vocab)
    assert {"the", "p", "##s", "!", ","} <= set(vocab)
    assert any(t.startswith("##") and len(t) > 3 for t in vocab)  # multi-character suffix pieces


def test_round_trip_merges_pieces_and_spaces_words(tok):
    text = [f"The {STEMS[0]}ing, THE {STEMS[1]}s!", STEMS[2]]
    ids = tok.tokenize(text)
    assert ids.dtype == tf.int32 and ids.shape.rank == 2
    assert tok.detokenize(ids).numpy().tolist() == [f"the {STEMS[0]}ing, the {STEMS[1]}s!".encode(),
                                                    STEMS[2].encode()]
    # a word never seen whole is spelled with several pieces
    unseen = STEMS[3] + STEMS[4] + "ing"
    pieces = [tok.id_to_token(i) for i in tok.tokenize(unseen).numpy()]
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])
    assert "".join(p.removeprefix("##") for p in pieces) == unseen


def test_unknown_characters_make_the_word_unk(tok):
    ids = tok.tokenize(f"{STEMS[0]} zebra€").numpy().tolist()  # no "z" in the corpus; "€" is its own word
    assert ids[-2:] == [tok.unk_id, tok.unk_id] and tok.unk_id not in ids[:-2]
    assert tok.detokenize([ids]).numpy()[0] == f"{STEMS[0]} <unk> <unk>".encode()


def test_dense_detokenize_drops_padding(tok):
    ids = tok(tf.constant(["the", f"{STEMS[5]}ed the"]))
    dense = ids.to_tensor()
    assert tok.detokenize(dense).numpy().tolist() == [b"the", f"{STEMS[5]}ed the".encode()]


def test_arguments():
    with pytest.raises(ValueError, match="target_vocab_size.*got 1"):
        SubwordTokenizer(target_vocab_size=1)
    with pytest.raises(ValueError, match="'a b'"):
        SubwordTokenizer(vocabulary=["a b"])
    with pytest.raises(ValueError, match="adapt"):
        SubwordTokenizer().tokenize("x")
    assert isinstance(tokenizer_from_name("subword", target_vocab_size=100), SubwordTokenizer)
