"""WordTokenizer: splitting options, frequency vocabulary, unknowns, detokenize."""

import pytest
import tensorflow as tf

from keraslm.data import WordTokenizer, tokenizer_from_name


def test_frequency_vocabulary_with_deterministic_ties():
    tok = WordTokenizer()
    tok.adapt(["b a c b", "a d b c"])
    # counts: b=3, a=2, c=2, d=1; ties broken by the token string
    assert tok.vocabulary == ["<pad>", "<unk>", "b", "a", "c", "d"]


def test_lowercase_and_punctuation_split():
    tok = WordTokenizer(lowercase=True)
    tok.adapt(["Hello, World! hello world."])
    # punctuation carries where it touched its neighbour ("##": no space before, "@@": none after)
    assert set(tok.vocabulary[2:]) == {"hello", "world", "##,", "##!", "##."}
    assert tok.detokenize(tok.tokenize(["Hello, World!"])).numpy().tolist() == [b"hello, world!"]
    # ",@@" glued on both sides was never seen: the less marked "##," stands in (the space after comes back)
    assert tok.detokenize(tok.tokenize(["HELLO,world!"])).numpy().tolist() == [b"hello, world!"]
    keep = WordTokenizer(split_punctuation=False)
    keep.adapt(["Hello, World! hello world."])
    assert keep.vocabulary[2:] == ["Hello,", "World!", "hello", "world."]
    assert keep.tokenize("hello  \t world.\n").numpy().tolist() == [4, 5]


def test_unicode_normalization_and_whitespace():
    tok = WordTokenizer(normalize="NFKC", lowercase=True)
    tok.adapt(["ﬁne Ｆｉｎｅ"])  # ligature and full-width letters fold to "fine"
    assert tok.vocabulary == ["<pad>", "<unk>", "fine"]
    assert tok.tokenize("FINE\u00a0fine").numpy().tolist() == [2, 2]  # no-break space separates words
    raw = WordTokenizer()
    raw.adapt(["ﬁne Ｆｉｎｅ"])
    assert raw.vocab_size == 4


def test_unknown_words_and_reserved_literals_map_to_unk():
    tok = WordTokenizer(vocabulary=["the", "cat"], split_punctuation=False)
    ids = tok.tokenize(["the dog", "<pad> <unk> cat"])
    assert ids.to_list() == [[2, 1], [1, 1, 3]]
    assert tok.detokenize(ids).numpy().tolist() == [b"the <unk>", b"<unk> <unk> cat"]
    assert tok.detokenize(tf.constant([[2, 0, 3, 0]])).numpy().tolist() == [b"the cat"]


def test_max_tokens_and_min_count():
    corpus = ["a a a a b b b c c d"]
    capped = WordTokenizer(max_tokens=4)
    capped.adapt(corpus)
    assert capped.vocabulary == ["<pad>", "<unk>", "a", "b"]
    frequent = WordTokenizer(min_count=2)
    frequent.adapt(corpus)
    assert frequent.vocabulary == ["<pad>", "<unk>", "a", "b", "c"]


def test_bad_arguments_quote_the_value():
    with pytest.raises(ValueError, match="'NFX'"):
        WordTokenizer(normalize="NFX")
    with pytest.raises(ValueError, match="got 2"):
        WordTokenizer(max_tokens=2)
    with pytest.raises(ValueError, match="got 0"):
        WordTokenizer(min_count=0)
    with pytest.raises(ValueError, match="'a b'"):
        WordTokenizer(vocabulary=["a b"])
    with pytest.raises(ValueError, match="adapt"):
        WordTokenizer().tokenize(["x"])


def test_factory_passes_options():
    tok = tokenizer_from_name("word", lowercase=True, max_tokens=10)
    assert isinstance(tok, WordTokenizer) and tok.lowercase and tok.max_tokens == 10
