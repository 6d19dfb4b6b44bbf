"""Checkpoints of the foreign formats, made here with random weights by the real libraries (no downloads).

* GPT-2 tokenizer files: a byte-level BPE trained with `tokenizers` on CORPUS, written in
  GPT-2's layout (byte symbols at ids 0..255 in GPT-2's order, merges, ``<|endoftext|>`` last).
* Hugging Face: ``transformers.GPT2LMHeadModel(GPT2Config(...)).save_pretrained``.
* nanoGPT: an HF GPT-2 model's weights renamed to nanoGPT's ``GPT`` (``nn.Linear`` weights
  ``[out, in]``) and saved with ``torch.save`` in ``train.py``'s checkpoint dict.
"""

import json
import os

import numpy as np
import torch
import transformers

import keraslm

EOT = "<|endoftext|>"
CORPUS = """\
It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of
foolishness. I don't think they'll say "we're done" -- you've seen what I'd do, and I'm sure it's fine.
The quick brown fox jumps over the lazy dog; the lazy dog doesn't care. THE END? No: the end.
def tokenize(text, vocab):
    for i in range(10):
        print(f"step {i}: {text!r}")  # comment
Numbers: 1, 22, 333, 4444, 55555, 3.14159, 2024-01-01, $1,000,000.00 and 100%.
Café naïve résumé façade straße Ελληνικά русский текст 日本語のテキスト 🙂
""" * 3
SAMPLE = "It was the age of wisdom, said the quick fox. Café 🙂 and 3.14159<|endoftext|>\n  def f(x): 42"

IMPLS = ["reference"] + (["custom"] if keraslm.ops.custom_ops_available() else [])


def byte_symbols():
    """OpenAI's bytes_to_unicode: the 256 byte symbols in GPT-2's id order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]  # id k is the symbol of byte bs[k]


def write_bpe_files(folder, vocab_size=400, pad_to=None, names=("vocab.json", "merges.txt")):
    """Trains a byte-level BPE on CORPUS and writes GPT-2's files; returns the number of tokens.

    ``pad_to`` adds unused tokens before ``<|endoftext|>`` up to that many (GPT-2's 50257).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    trained.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    merges = [" ".join(m) if isinstance(m, list) else m for m in json.loads(trained.to_str())["model"]["merges"]]
    tokens = byte_symbols() + [m.replace(" ", "") for m in merges]
    if pad_to:
        tokens += [f"<|unused{i}|>" for i in range(pad_to - 1 - len(tokens))]
    tokens.append(EOT)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, names[0]), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(os.path.join(folder, names[1]), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(tokens)


def hf_model(seed=0, **config):
    """A random-weight ``GPT2LMHeadModel`` in eval mode (float32)."""
    torch.manual_seed(seed)
    config.setdefault("bos_token_id", config.get("vocab_size", 50257) - 1)
    config.setdefault("eos_token_id", config.get("vocab_size", 50257) - 1)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(ids), dtype=torch.long)).logits.float().numpy()


def keraslm_logits(model, ids, impl):
    import tensorflow as tf

    with keraslm.ops.implementation_scope(impl):
        return model(tf.constant(np.asarray(ids), tf.int32)).numpy()


def nanogpt_state(hf, bias=True, prefix=""):
    """nanoGPT's state dict of an HF GPT-2 model: ``transformer.*`` names, Linear weights ``[out, in]``, tied head.

    With ``bias=False`` the HF biases must be zero (see ``zero_biases``); they are left out.
    """
    sd = hf.state_dict()
    out = {}
    for name, value in sd.items():
        if name == "lm_head.weight":
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias" and not bias and ".attn.bias" not in name:
            assert not value.any(), f"{name} must be zero for a bias=False nanoGPT"
            continue
        if any(name.endswith(f"{k}.weight") for k in ("c_attn", "c_proj", "c_fc")):
            value = value.t()  # Conv1D [in, out] -> nn.Linear [out, in]
        out[prefix + name] = value.clone().contiguous()
    out[prefix + "lm_head.weight"] = out[prefix + "transformer.wte.weight"]  # tied, as nanoGPT's GPT
    return out


def zero_biases(hf):
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
    return hf


def save_nanogpt(path, hf, bias=True, compiled=False, dataset="openwebtext", vocab_size=None):
    """Writes ``path`` (ckpt.pt) as nanoGPT's train.py does."""
    c = hf.config
    model_args = dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.n_positions, bias=bias,
                      vocab_size=vocab_size or c.vocab_size, dropout=0.0)
    ckpt = {"model": nanogpt_state(hf, bias, "_orig_mod." if compiled else ""), "optimizer": {},
            "model_args": model_args, "iter_num": 10, "best_val_loss": torch.tensor(2.5),
            "config": {"dataset": dataset, "batch_size": 12, "compile": compiled}}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(ckpt, path)
    return path


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message
