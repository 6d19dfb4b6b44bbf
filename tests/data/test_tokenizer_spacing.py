"""Word and subword tokenizers keep special tokens whole, keep line ends, give the text back with its spacing,
and report out-of-vocabulary rates (keraslm.data.spacing)."""

import collections
import random
import re

import numpy as np
import pytest
import tensorflow as tf

from keraslm.data import SubwordTokenizer, WordTokenizer, fit_tokenizer
from keraslm.data.spacing import normalized_spacing

# Penn Treebank's format: pretokenized, lowercased, numbers as N, rare words as <unk>, a space at both
# ends of every line. Written here (tests never download PTB).
PTB = (" aer banknote berlitz calloway centrust cluett fromstein gitano guterman \n"
       " pierre <unk> N years old will join the board as a nonexecutive director nov. N \n"
       " mr. <unk> is chairman of <unk> n.v. the dutch publishing group \n"
       " rudolph <unk> N years old and former chairman of consolidated gold fields plc was named a director \n"
       " the company 's shares fell $ N to $ N in new york stock exchange composite trading \n") * 3

VERSE = ("KING RICHARD II:\nMy lord, what's this? \"Peace,\" said he;\n\n"
         "Thy word is current with him for my death,\n  (But dead, he lives.)\n")


def _words(text):
    return text.split()


def test_ptb_format_keeps_unk_and_eos_and_counts_one_token_per_word():
    tok = WordTokenizer(pretokenized=True, line_ends="eos")
    tok.adapt([PTB])
    vocab = tok.vocabulary
    assert vocab[:3] == ["<pad>", "<unk>", "<eos>"]
    assert not {"<", ">", "unk", "eos"} & set(vocab)
    ids = tok.tokenize(PTB).numpy()
    # one token per whitespace word, one <eos> per line: the published convention
    assert ids.size == len(_words(PTB)) + PTB.count("\n")
    assert (ids == tok.token_to_id("<eos>")).sum() == PTB.count("\n")
    assert (ids == tok.unk_id).sum() == _words(PTB).count("<unk>")
    assert tok.detokenize(ids).numpy().decode() == normalized_spacing(PTB)
    assert tok.detokenize(ids).numpy().decode().splitlines() == [" ".join(line.split()) for line in
                                                                PTB.splitlines()]
    assert tok.adapted_oov_rate == pytest.approx(_words(PTB).count("<unk>") / ids.size)
    # case is kept; unknown words and the literal <unk> share the unknown id
    assert [tok.id_to_token(i) for i in tok.tokenize("The <unk> zebra\n").numpy()] == ["<unk>", "<unk>", "<unk>",
                                                                                       "<eos>"]
    with pytest.raises(ValueError, match="lowercase must be False, got True"):
        WordTokenizer(pretokenized=True, lowercase=True)
    with pytest.raises(ValueError, match="split_punctuation must be False or None, got True"):
        WordTokenizer(pretokenized=True, split_punctuation=True)


@pytest.mark.parametrize("options", [
    dict(), dict(lowercase=True), dict(split_punctuation=False), dict(normalize="NFKC", lowercase=True),
    dict(line_ends="space"), dict(line_ends="eos"), dict(pretokenized=True), dict(special_tokens=["<Speaker>"]),
])
@pytest.mark.parametrize("cls", [WordTokenizer, SubwordTokenizer])
def test_special_tokens_survive_every_option(cls, options):
    if cls is SubwordTokenizer:
        options = {k: v for k, v in options.items() if k not in ("split_punctuation", "pretokenized")}
        options["target_vocab_size"] = 200
    tok = cls(**options)
    text = "The cat <unk> sat <eos> on the <Speaker> mat.\nThe <unk> dog sat\n"
    tok.adapt([text * 3])
    tokens = [tok.id_to_token(i) for i in tok.tokenize("the <unk> dog <eos>").numpy()]
    assert tokens[1:] == ["<unk>", "dog", "<eos>"]
    assert not {"unk", "eos", "##unk", "##eos"} & set(tok.vocabulary)
    if options.get("special_tokens"):
        tokens = [tok.id_to_token(i) for i in tok.tokenize("<Speaker>said").numpy()]
        assert tokens[0] == "<Speaker>" and "<Speaker>" in tok.vocabulary[:4]   # case kept, always present


@pytest.mark.parametrize("cls, extra", [(WordTokenizer, {}), (SubwordTokenizer, {"target_vocab_size": 300})])
@pytest.mark.parametrize("lowercase", [False, True])
def test_verse_round_trips_with_newline_tokens(cls, extra, lowercase):
    tok = cls(lowercase=lowercase, **extra)
    tok.adapt([VERSE])
    ids = tok.tokenize(VERSE)
    assert (ids.numpy() == tok.token_to_id("\n")).sum() == VERSE.count("\n")
    expected = normalized_spacing(VERSE.lower() if lowercase else VERSE)
    assert tok.detokenize(ids).numpy().decode() == expected
    # the example of the faithful-text issue, exactly
    line = "KING RICHARD:\nMy lord, what's this?"
    assert tok.detokenize(tok.tokenize(line)).numpy().decode() == (line.lower() if lowercase else line)


def test_word_tokens_of_the_verse():
    tok = WordTokenizer()
    tok.adapt([VERSE])
    tokens = [tok.id_to_token(i) for i in tok.tokenize("My lord, what's this? (But dead)").numpy()]
    assert tokens == ["My", "lord", "##,", "what", "##'@@", "s", "this", "##?", "(@@", "But", "dead", "##)"]
    # the words keep one id whatever punctuation touches them
    assert tok.tokenize("(But").numpy()[1] == tok.tokenize("But").numpy()[0]


def test_line_end_policies():
    text = "one two\nthree\n"
    newline, eos, space = (WordTokenizer(line_ends=p) for p in ("newline", "eos", "space"))
    for tok in (newline, eos, space):
        tok.adapt([text])
    assert [newline.id_to_token(i) for i in newline.tokenize(text).numpy()] == ["one", "two", "\n", "three", "\n"]
    assert [eos.id_to_token(i) for i in eos.tokenize(text).numpy()] == ["one", "two", "<eos>", "three", "<eos>"]
    assert [space.id_to_token(i) for i in space.tokenize(text).numpy()] == ["one", "two", "three"]
    assert eos.detokenize(eos.tokenize(text)).numpy().decode() == text
    assert space.detokenize(space.tokenize(text)).numpy().decode() == "one two three"
    # a line end the vocabulary never saw is read as a space (not <unk>)
    flat = WordTokenizer()
    flat.adapt(["one two three"])
    assert flat.tokenize("one\ntwo").numpy().tolist() == flat.tokenize("one two").numpy().tolist()
    with pytest.raises(ValueError, match="line_ends must be one of 'newline', 'eos', 'space', got 'cr'"):
        WordTokenizer(line_ends="cr")


def _random_text(rng, n):
    words = ["the", "king", "lord", "what", "s", "hello", "N", "über", "日本"]
    puncts = [",", ".", "'", "(", ")", "!", "?", "#", "@", "--", "\"", "$"]
    spaces = [" ", " ", " ", "  ", "\t", "\n", "\n\n", " \n ", ""]
    parts = []
    for _ in range(n):
        parts.append(rng.choice(words) if rng.random() < 0.6 else rng.choice(puncts))
        parts.append(rng.choice(spaces))
    return "".join(parts)


@pytest.mark.parametrize("cls, extra", [(WordTokenizer, {}), (SubwordTokenizer, {"target_vocab_size": 400})])
@pytest.mark.parametrize("line_ends", ["newline", "space"])
def test_detokenize_tokenize_is_the_normalized_text(cls, extra, line_ends):
    rng = random.Random(7)
    texts = [_random_text(rng, rng.randint(0, 30)) for _ in range(60)]
    tok = cls(line_ends=line_ends, **extra)
    tok.adapt(texts)
    back = tok.detokenize(tok.tokenize(tf.constant(texts))).numpy().tolist()
    for text, got in zip(texts, back):
        assert got.decode() == normalized_spacing(text, line_ends), repr(text)


def test_oov_rates_match_a_count_by_hand():
    corpus = "a a a a b b b c c d\nzz e\n"
    tok = WordTokenizer(max_tokens=5)                      # <pad> <unk> + 3 learned: "\n" "a" "b"
    tok.adapt([corpus])
    assert tok.vocabulary == ["<pad>", "<unk>", "a", "b", "\n"]
    units = corpus.split() + ["\n", "\n"]                  # every word and line end is one token
    known = collections.Counter(units)
    unknown = sum(n for u, n in known.items() if u not in tok.vocabulary)
    assert tok.adapted_oov_rate == pytest.approx(unknown / len(units))
    text = "a zebra b\nc"
    assert tok.oov_rate([text]) == pytest.approx(2 / 5)
    assert tok.oov_rate([text]) == pytest.approx(float(np.mean(tok.tokenize(text).numpy() == tok.unk_id)))


def test_subword_oov_rate_counts_unspellable_words():
    tok = SubwordTokenizer(target_vocab_size=40)
    tok.adapt(["abc abd abe ab, ab\n"] * 4)
    assert tok.adapted_oov_rate == 0.0
    ids = tok.tokenize("abc xyz ab\n").numpy()             # no "x", "y", "z": one <unk> for the word
    assert tok.oov_rate(["abc xyz ab\n"]) == pytest.approx(float(np.mean(ids == tok.unk_id)))
    assert (ids == tok.unk_id).sum() == 1


def test_fit_tokenizer_reports_the_train_split_oov_rate(tmp_path):
    path = tmp_path / "ptb.txt"
    path.write_text(PTB)
    tok = fit_tokenizer("word", [str(path)], validation_fraction=0.0, pretokenized=True, line_ends="eos")
    ids = tok.tokenize(PTB).numpy()
    assert tok.adapted_oov_rate == pytest.approx(float(np.mean(ids == tok.unk_id)))
    assert re.search(r"<unk>", PTB) and tok.adapted_oov_rate > 0
