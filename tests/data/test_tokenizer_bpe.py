"""BytePairTokenizer against GPT-2's references: Hugging Face `tokenizers` / `transformers` and OpenAI's encoder.py.

No downloads: a small byte-level BPE is trained here with `tokenizers`, written
in GPT-2's own layout (byte symbols at ids 0..255 in GPT-2's order, merges,
``<|endoftext|>`` last) as vocab.json + merges.txt and as tokenizer.json, and
every reference loads those files.
"""

import doctest
import importlib
import inspect
import json
import random
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import regex
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keraslm.data import BytePairTokenizer, tokenizer_from_name

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

EOT = "<|endoftext|>"
CORPUS = textwrap.dedent("""\
    It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of
    foolishness. I don't think they'll say "we're done" -- you've seen what I'd do, and I'm sure it's fine.
    The quick brown fox jumps over the lazy dog; the lazy dog doesn't care. THE END? No: the end.
    def tokenize(text, vocab):
        if not text:
            return []
        for i in range(10):
            print(f"step {i}: {text!r}")  # comment
    \t\tindented with tabs\n
    Numbers: 1, 22, 333, 4444, 55555, 3.14159, 2024-01-01, $1,000,000.00 and 100%.
    ====================  ----------  ********  aaaaaaaa  1111111111
    Café naïve résumé façade Ærøskøbing straße Ελληνικά русский текст
    日本語のテキスト 中文文本 한국어 텍스트 🙂🙂 👍🏽 👨‍👩‍👧 e\u0301
    """) * 3
TEXTS = [
    "Hello world", " Hello world", "Hello  world", "Hello   world", "  leading", "trailing  ", " ", "  ", "",
    "\n", "\n\n", "a\n\nb", " \n\t  x", "x \n\t  ", "\t\ttabs\tinside", "line one\r\nline two\r\n",
    "    def f(x):\n        return x  # comment\n", "don't", "I'M", "I'm", "they'll've", " 's", "''s", "'s'", "a  's",
    "a  'sa", "  'd!", "it's 'quoted'", "3.14159 + 2,000 = 42", "2024-01-01T12:00", "x1y22z333",
    "Café naïve résumé", "e\u0301 combining", "日本語のテキスト", "中文 文本", "🙂", "🙂🙂 👍🏽", "👨\u200d👩\u200d👧 family",
    "zero\u200bwidth", "\ufffd replacement \ufffd", "<|endoftext|>", "a<|endoftext|>b", "end<|endoftext|>",
    "<|endoftext|><|endoftext|>", "  <|endoftext|>  x", "text\n\n<|endoftext|>\n\nmore", "<|endoftext",
    "nbsp\u00a0here", "em\u2003space", "ideo\u3000graphic", "nel\u0085line", "vt\u000btab", "ls\u2028sep",
    "a\u00a0\u00a0b", "a \u3000 b", "\u2000\u2001\u200ax", "x\u001cy", "\u1c89new letter 16.0", "\U00010d40 digit",
    "====================", "aaaaaaaaaaaaa", "1111111111111", "$1,000,000.00", "100%!!!", "(a)[b]{c}",
]
_PIECES = ["the", " the", "Hello", " world", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n\t  x", "don't", " 's",
           "''s", "I'M", "'ll", "'", "s", "42", " 3.14", "café", " naïve", "日本", "🙂", "👨\u200d👩\u200d👧",
           "\u00a0", "\u2003", "\u3000", "\u0085", "\u000b", "\u2028", "\u200b", "!!", " ?", "(x)", "\ufffd",
           "e\u0301", EOT, "====", "aaaa", "1111", "    return x\n"]
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
              "\u2028\u2029\u202f\u205f\u3000"
NOT_WHITE_SPACE = "\x1c\x1d\x1e\x1f\u180e\u200b\u2060\ufeff"  # str.isspace() is True for \x1c..\x1f only


def _fuzz(n, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 10))) for _ in range(n)]


def _byte_symbols():
    """OpenAI's bytes_to_unicode (gpt-2/src/encoder.py): {byte: symbol} in GPT-2's id order."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class OpenAIEncoder:
    """OpenAI's gpt-2 encoder.py with the original regex (`regex` module), special tokens split out first."""

    def __init__(self, vocab, merges):
        self.encoder = vocab
        self.bpe_ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
        self.byte_encoder = _byte_symbols()
        self.pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return word

    def encode(self, text):
        ids = []
        for k, part in enumerate(regex.split(f"({regex.escape(EOT)})", text)):
            if k % 2:
                ids.append(self.encoder[EOT])
                continue
            for token in self.pat.findall(part):
                token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(token))
        return ids


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A BPE trained on CORPUS, in GPT-2's layout: {"dir", "vocab", "merges", "json", "tokens", "merge_list"}."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=700, show_progress=False, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    trained.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    merges = [" ".join(m) if isinstance(m, list) else m for m in json.loads(trained.to_str())["model"]["merges"]]
    tokens = list(_byte_symbols().values()) + [m.replace(" ", "") for m in merges] + [EOT]  # GPT-2's order
    assert len(set(tokens)) == len(tokens) and tokens[0] == "!" and tokens[220] == "Ġ"
    folder = tmp_path_factory.mktemp("gpt2_files")
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    gpt2 = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    gpt2.decoder = decoders.ByteLevel()
    gpt2.add_special_tokens([AddedToken(EOT, special=True)])
    json_dir = tmp_path_factory.mktemp("gpt2_json")
    gpt2.save(str(json_dir / "tokenizer.json"))
    return {"dir": folder, "vocab": folder / "vocab.json", "merges": folder / "merges.txt",
            "json": json_dir / "tokenizer.json", "tokens": tokens, "merge_list": merges}


@pytest.fixture(scope="module")
def tok(files):
    return BytePairTokenizer.from_files(files["vocab"], files["merges"])


@pytest.fixture(scope="module")
def references(files):
    """Each reference's encode(text) -> list of ids."""
    hf = tokenizers.Tokenizer.from_file(str(files["json"]))
    fast = transformers.GPT2TokenizerFast(vocab=str(files["vocab"]), merges=str(files["merges"]))
    openai = OpenAIEncoder({t: i for i, t in enumerate(files["tokens"])}, files["merge_list"])
    return {"tokenizers": lambda t: hf.encode(t).ids,
            "transformers": lambda t: fast(t, add_special_tokens=False)["input_ids"],
            "openai": openai.encode}


def _ids(tok, texts):
    return tok.tokenize(tf.constant(texts)).to_list()


def test_gpt2_id_layout(tok, files):
    assert tok.vocab_size == len(files["tokens"]) and tok.vocabulary == files["tokens"]
    assert tok.id_to_token(0) == "!" and tok.token_to_id(EOT) == tok.vocab_size - 1
    assert tok.pad_id == tok.vocab_size - 1 and tok.unk_id is None and tok.special_tokens == [EOT]
    assert "<pad>" not in tok.vocabulary and "<unk>" not in tok.vocabulary
    assert tok.token_to_id("\n") == tok.token_to_id("Ċ") == 198  # raw text or GPT-2's spelling
    with pytest.raises(ValueError, match="not a token"):
        tok.token_to_id("no such token")


def test_ids_equal_the_references(tok, references):
    texts = TEXTS + _fuzz(300)
    ours = _ids(tok, texts)
    for name, encode in references.items():
        bad = [(t, o, encode(t)) for t, o in zip(texts, ours) if o != encode(t)]
        assert not bad, f"{len(bad)} texts differ from {name}; first: {bad[0]}"
    assert sum(len(o) for o in ours) > 3 * len(texts)  # the merges did something


def test_unicode_whitespace_matches_tokenizers(tok, references):
    texts = [f"{a}{c * n}{b}" for c in WHITE_SPACE + NOT_WHITE_SPACE for n in (1, 2, 3)
             for a, b in (("a", "b"), ("", "x"), ("x", ""), (" ", "'s"), ("1", " 2"))]
    ours = _ids(tok, texts)
    bad = [t for t, o in zip(texts, ours) if o != references["tokenizers"](t)]
    assert not bad, f"{len(bad)} whitespace texts differ from tokenizers, e.g. {bad[0]!r}"


def test_words_match_the_reference_pre_tokenizers():
    """GPT-2's regex words (OpenAI's pattern in `regex`, and tokenizers' ByteLevel) for text and sampled code points."""
    from keraslm.data.bpe_pretokenize import pretokenize

    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    symbols = _byte_symbols()
    rng = random.Random(5)
    unicode_16 = [0x1C89, 0xA7CB, 0x105C0, 0x10D4A, 0x11380, 0x13460, 0x143FA, 0x16100, 0x1E5F0, 0x2EBF0, 0x2EE5D,
                  0x10D40, 0x116D0, 0x11BF0, 0x16130, 0x16D70, 0x1CCF0, 0x1E5FA]  # letters / digits new in 16.0
    sampled = [c for c in (rng.randrange(0x110000) for _ in range(1500)) if not 0xD800 <= c < 0xE000]

    def probe(c):
        return f"a{chr(c)}b 1{chr(c)}2 {chr(c)}{chr(c)}!  {chr(c)}x"

    texts = [t for t in TEXTS + _fuzz(200, seed=6) if EOT not in t] + [probe(c) for c in unicode_16]
    sampled_texts = [probe(c) for c in sampled]  # `regex` knows Unicode 17: only tokenizers (16.0) is the reference
    words = pretokenize(tf.constant(texts + sampled_texts)).to_list()
    pattern = OpenAIEncoder({}, []).pat
    for i, (text, ours) in enumerate(zip(texts + sampled_texts, words)):
        if i < len(texts):
            assert [w.decode() for w in ours] == pattern.findall(text), text
        spelled = ["".join(symbols[b] for b in w) for w in ours]
        assert spelled == [w for w, _ in byte_level.pre_tokenize_str(text)], f"{text!r}: {spelled}"


def test_special_token_in_text_is_one_id(tok):
    ids = tok.tokenize("a<|endoftext|>b").numpy().tolist()
    assert ids == [tok.token_to_id("a"), tok.pad_id, tok.token_to_id("b")]
    assert tok.detokenize(ids).numpy() == b"a<|endoftext|>b"  # the pad id (eot) is not dropped


def test_round_trip_is_exact_for_any_utf8(tok):
    rng = random.Random(1)
    code_points = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    random_text = ["".join(chr(rng.choice(code_points)) for _ in range(rng.randint(1, 20))) for _ in range(100)]
    texts = TEXTS + _fuzz(200, seed=2) + random_text + [CORPUS]
    back = tok.detokenize(tok.tokenize(tf.constant(texts))).numpy().tolist()
    assert back == [t.encode("utf-8") for t in texts]
    assert tok.detokenize(tok.tokenize("a\u00a0 <|endoftext|>\n")).numpy() == "a\u00a0 <|endoftext|>\n".encode()


def test_invalid_utf8_and_out_of_range_ids_do_not_crash(tok):
    raw = [b"a\xff b\x80c", b"\xe2\x82", b"ok"]
    assert tok.detokenize(tok.tokenize(tf.constant(raw))).numpy().tolist() == raw
    text = tok.detokenize(tf.ragged.constant([[tok.token_to_id("a"), -1, tok.vocab_size, 10**6]])).numpy()
    assert text.tolist() == ["a\ufffd\ufffd\ufffd".encode()]


def test_merges_by_rank_and_cache_only_reachable_tokens():
    # "abc" is a token but BPE never makes it from a b c ("b c" ranks first), so it must not be cached.
    tokens = list(_byte_symbols().values()) + ["bc", "ab", "abc", "aa", "aaa"]
    merges = ["b c", "a b", "ab c", "a a", "aa a"]
    tok = BytePairTokenizer(tokens, merges)
    ref = OpenAIEncoder({t: i for i, t in enumerate(tokens)}, merges)
    model = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                                       merges=[tuple(m.split(" ")) for m in merges]))
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = ["abc", "ab", "aaaaa", "aaaa", "aaaaaaa", "abcabc aab"]
    assert _ids(tok, texts) == [ref.encode(t) for t in texts] == [model.encode(t).ids for t in texts]
    assert _ids(tok, ["abc"]) == [[tokens.index("a"), tokens.index("bc")]]


def test_special_tokens_with_spaces_and_overlaps_match_tokenizers():
    special = ["<|a|>", "<|a|>b", "< s >", EOT]
    tokens = list(_byte_symbols().values()) + ["ab"] + special
    tok = BytePairTokenizer(tokens, ["a b"], special_tokens=special)
    model = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                                       merges=[("a", "b")]))
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in special])
    texts = ["x <|a|>b  < s >  y<|a|>", "<|a|><|a|>bb", "ab  < s >", "< s  >< s >", "  <|endoftext|>  ab"]
    assert _ids(tok, texts) == [model.encode(t).ids for t in texts]
    assert tok.detokenize(tok.tokenize(tf.constant(texts))).numpy().tolist() == [t.encode() for t in texts]


@pytest.mark.parametrize("kwargs, match", [
    (dict(vocab_size=3), "vocab_size must be an integer > 256 or None, got 3"),
    (dict(vocabulary=["a", "b"], merges=[]), "all 256 byte symbols; missing 'Ā' .byte 0x00. and 253 more"),
    (dict(vocabulary=list(_byte_symbols().values())), "pass vocabulary and merges together"),
    (dict(vocabulary=list(_byte_symbols().values()), merges=["a q"]), "merge 0 'a q': 'aq' is not in"),
    (dict(vocabulary=list(_byte_symbols().values()) + ["ab"], merges=["a b", "a b"]), "'a b' appears twice"),
    (dict(vocabulary=list(_byte_symbols().values()), merges=[], special_tokens=["<s>"]), "'<s>' is not in"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BytePairTokenizer(**kwargs)


def test_tf_function_tf_data_and_dense_output(tok):
    texts = tf.constant(TEXTS[:20])
    expected = tok.tokenize(texts)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(strings):
        return tok.tokenize(strings)

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)])
    def decode(ids):
        return tok.detokenize(ids)

    assert encode(texts).to_list() == expected.to_list()
    assert decode(expected).numpy().tolist() == texts.numpy().tolist()
    data = tf.data.Dataset.from_tensor_slices(texts).batch(7).map(tok.tokenize)
    assert [row for batch in data for row in batch.to_list()] == expected.to_list()
    dense = BytePairTokenizer.from_config({**tok.get_config(), "sequence_length": 6})(texts)  # [B, 6]
    assert dense.shape == (20, 6)
    assert dense.numpy().tolist() == expected.to_tensor(default_value=tok.pad_id, shape=[20, 6]).numpy().tolist()


def test_config_is_constructor_arguments_and_keras_round_trip(tok, tmp_path):
    config = tok.get_config()
    params = set(inspect.signature(BytePairTokenizer.__init__).parameters) - {"self", "kwargs"}
    assert set(config) == params | {"name", "trainable", "dtype"}
    clone = BytePairTokenizer.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config and clone.merges == tok.merges
    serialized = keras.saving.serialize_keras_object(tok)
    assert serialized["registered_name"] == "keraslm>BytePairTokenizer"
    inputs = keras.Input(shape=(), dtype="string")
    model = keras.Model(inputs, tok(inputs))
    model.save(tmp_path / "bpe.keras")
    loaded = keras.models.load_model(tmp_path / "bpe.keras")
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    probe = tf.constant(TEXTS[:12])
    assert loaded(probe).to_list() == model(probe).to_list() == tok.tokenize(probe).to_list()


class _Serving(tf.Module):
    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def encode(self, text):
        ids = self.tokenizer(text)
        return {"ids": ids.to_tensor(default_value=self.tokenizer.pad_id), "lengths": ids.row_lengths()}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids"),
                                  tf.TensorSpec([None], tf.int64, name="lengths")])
    def decode(self, ids, lengths):
        return {"text": self.tokenizer.detokenize(tf.RaggedTensor.from_tensor(ids, lengths=lengths))}


_LOAD_ONLY_TF = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tf-text ops)
texts = json.loads(sys.stdin.read())
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](text=tf.constant(texts))
back = model.signatures["decode"](ids=out["ids"], lengths=out["lengths"])["text"]
assert not any(m.startswith("keraslm") for m in sys.modules)
print(json.dumps({"ids": tf.RaggedTensor.from_tensor(out["ids"], lengths=out["lengths"]).to_list(),
                  "text": [t.decode("utf-8") for t in back.numpy().tolist()]}))
"""


def test_saved_model_runs_with_only_tensorflow_and_tf_text(tok, tmp_path):
    module = _Serving(tok)
    export_dir = tmp_path / "export"
    tf.saved_model.save(module, str(export_dir),
                        signatures={"serving_default": module.encode, "decode": module.decode})
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"} and not any(o.startswith("Keraslm") for o in ops)
    texts = TEXTS[:30] + _fuzz(20, seed=3)
    result = subprocess.run([sys.executable, "-P", "-c", _LOAD_ONLY_TF, str(export_dir)], input=json.dumps(texts),
                            capture_output=True, text=True, timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ids"] == _ids(tok, texts) and out["text"] == texts


def test_from_directory_and_tokenizer_json(files, tok, tmp_path):
    probe = tf.constant(TEXTS)
    from_json = BytePairTokenizer.from_tokenizer_json(files["json"])
    assert from_json.vocabulary == tok.vocabulary and from_json.merges == tok.merges
    assert BytePairTokenizer.from_directory(files["json"].parent).tokenize(probe).to_list() == _ids(tok, TEXTS)
    assert BytePairTokenizer.from_directory(files["dir"]).merges == tok.merges
    preset = tmp_path / "preset" / "assets" / "tokenizer"  # keras-hub: vocabulary.json + merges.txt
    preset.mkdir(parents=True)
    (preset / "vocabulary.json").write_bytes(files["vocab"].read_bytes())
    (preset / "merges.txt").write_bytes(files["merges"].read_bytes())
    assert BytePairTokenizer.from_directory(tmp_path / "preset").vocabulary == tok.vocabulary
    (preset / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="missing merges.txt"):
        BytePairTokenizer.from_directory(preset)
    (preset / "merges.txt").write_bytes(files["merges"].read_bytes())
    (preset / "vocabulary.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing vocab.json \(or vocabulary.json\)"):
        BytePairTokenizer.from_directory(preset)
    with pytest.raises(FileNotFoundError, match="missing tokenizer.json, or vocab.json"):
        BytePairTokenizer.from_directory(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BytePairTokenizer.from_directory(tmp_path / "nowhere")


def test_adapt_learns_what_tokenizers_learns(files):
    from tokenizers import ByteLevelBPETokenizer

    lines = CORPUS.splitlines(keepends=True)
    tok = tokenizer_from_name("bpe", vocab_size=400)
    tok.adapt(lines)
    reference = ByteLevelBPETokenizer()
    reference.train_from_iterator(lines, vocab_size=400, min_frequency=2, special_tokens=[EOT], show_progress=False)
    assert tok.vocab_size == 400 and tok.vocabulary == [t for t, _ in sorted(reference.get_vocab().items(),
                                                                             key=lambda kv: kv[1])]
    texts = TEXTS + _fuzz(100, seed=4)
    assert _ids(tok, texts) == [e.ids for e in reference.encode_batch(texts)]
    assert tok.pad_id == tok.token_to_id(EOT) == 0
    with pytest.raises(ValueError, match="vocab_size must be an integer > 256"):
        BytePairTokenizer(vocab_size=256)


@pytest.mark.parametrize("name", ["bpe_tokenizer", "bpe_pretokenize", "bpe_merges", "bpe_files"])
def test_docstring_examples(name):
    module = importlib.import_module(f"keraslm.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_registered_kind():
    from keraslm.data.tokenizers import TOKENIZERS

    assert TOKENIZERS["bpe"] is BytePairTokenizer
    np.testing.assert_equal(tokenizer_from_name("bpe", vocab_size=300).get_config()["vocab_size"], 300)
