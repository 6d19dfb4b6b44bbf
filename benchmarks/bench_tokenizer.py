"""Throughput of the in-graph GPT-2 byte-level BPE tokenizer against the `tokenizers` package (Rust).

Tokenizes a few MB of text (tinyshakespeare when present, else generated
text) split into lines, ``--batch`` lines per call, three ways:

* ``eager``     ``BytePairTokenizer.tokenize`` on each batch from Python (the
  tokenizer runs one compiled tf.function per call);
* ``tf.data``   the same inside ``Dataset.batch(...).map(tokenize)`` with
  parallel calls and prefetch, as a training input pipeline runs it;
* ``tokenizers`` ``Tokenizer.encode_batch`` of the `tokenizers` package on the
  same batches (its own thread pool), loaded from the same vocabulary and merges;
  ``tokenizers-fast`` its ``encode_batch_fast`` (no offsets), when present.
  Ratios are against the faster of the two.

The tokenizer is ``--files DIR`` (GPT-2's vocab.json + merges.txt or a
tokenizer.json) or, by default, learned from the text itself by ``adapt``
(``--vocab-size``). Ids are checked equal on the first batches before timing.
Figures are medians over ``--repeats`` passes; MB are 10^6 bytes of UTF-8.

Usage:
    python benchmarks/bench_tokenizer.py [--data FILE] [--mb 3] [--batch 1024] [--vocab-size 50257]
        [--files DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_model, header, median_time  # noqa: E402

from keraslm.data import BytePairTokenizer, sources  # noqa: E402

DEFAULT_DATA = sources.builtin_dataset("tinyshakespeare")


def generated_text(n_bytes, seed=0):
    """Prose-like lines with code, digits, accents, CJK and emoji, about ``n_bytes`` long."""
    rng = random.Random(seed)
    words = ["the", "king", "queen", "speak", "thou", "art", "lord", "night", "love", "don't", "we'll", "café",
             "naïve", "日本語", "🙂", "1999", "3.14", "x = f(y)", "    return x", "====", "hello,", "world!"]
    lines, size = [], 0
    while size < n_bytes:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
        lines.append(line)
        size += len(line.encode()) + 1
    return "\n".join(lines) + "\n"


def reference_tokenizer(tok):
    """A `tokenizers` Tokenizer with the same vocabulary, merges and special tokens (GPT-2 settings)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model = models.BPE(vocab={t: i for i, t in enumerate(tok.vocabulary)},
                       merges=[tuple(m.split(" ")) for m in tok.merges])
    ref = Tokenizer(model)
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([AddedToken(t, special=True) for t in tok.special_tokens])
    return ref


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA if os.path.exists(DEFAULT_DATA) else None,
                        help="UTF-8 text file (default: tinyshakespeare when present, else generated text)")
    parser.add_argument("--mb", type=float, default=3.0, help="MB of text to tokenize (the file repeats)")
    parser.add_argument("--batch", type=int, default=1024, help="lines per tokenize call")
    parser.add_argument("--vocab-size", type=int, default=50257,
                        help="vocabulary adapt learns (at most; GPT-2's size by default)")
    parser.add_argument("--files", help="a folder with GPT-2's tokenizer files instead of adapt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    header("in-graph byte-level BPE tokenizer vs the tokenizers package")
    import tokenizers

    print(f"# CPU: {cpu_model()}; tokenizers {tokenizers.__version__} "
          f"(RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'default')})")
    if args.data:
        with open(args.data, encoding="utf-8") as f:
            text = f.read()
    else:
        text = generated_text(1_100_000)
    source = args.data or "generated text"
    lines = text.splitlines(keepends=True)
    if args.files:
        tok = BytePairTokenizer.from_directory(args.files)
    else:
        tok = BytePairTokenizer(vocab_size=args.vocab_size)
        tok.adapt(lines)
    copies = max(1, round(args.mb * 1e6 / len(text.encode())))
    lines = lines * copies
    n_bytes = len(text.encode()) * copies
    print(f"# text: {source}, {n_bytes / 1e6:.2f} MB in {len(lines)} lines ({copies} copies), "
          f"{args.batch} lines per call; vocabulary {tok.vocab_size} tokens, {len(tok.merges)} merges\n")

    batches = [lines[i:i + args.batch] for i in range(0, len(lines), args.batch)]
    tensors = [tf.constant(b) for b in batches]
    ref = reference_tokenizer(tok)
    for b, t in zip(batches[:3], tensors[:3]):
        assert tok.tokenize(t).to_list() == [e.ids for e in ref.encode_batch(b)], "ids differ from tokenizers"

    dataset = (tf.data.Dataset.from_tensor_slices(tf.constant(lines)).batch(args.batch)
               .map(tok.tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))

    def eager():
        for t in tensors:
            tok.tokenize(t)

    def pipeline():
        for _ in dataset:
            pass

    def rust():
        for b in batches:
            ref.encode_batch(b)

    def rust_fast():
        for b in batches:
            ref.encode_batch_fast(b)

    paths = [("eager", eager), ("tf.data", pipeline), ("tokenizers", rust)]
    if hasattr(ref, "encode_batch_fast"):
        paths.append(("tokenizers-fast", rust_fast))
    results = {}
    for name, fn in paths:
        seconds = median_time(fn, repeats=args.repeats, warmup=1)
        results[name] = n_bytes / seconds / 1e6
    base = max(v for k, v in results.items() if k.startswith("tokenizers"))
    print(f"{'path':16} {'MB/s':>8} {'vs tokenizers':>14}")
    for name, mbs in results.items():
        print(f"{name:16} {mbs:8.2f} {mbs / base:13.2f}x")
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
