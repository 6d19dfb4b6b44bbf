"""Decoding with bfloat16 copies of the block weights (``generate(..., precision="bfloat16")``).

The fused step with bfloat16 kernels is held to float64 numpy run on the same bfloat16-rounded
weights (so only float32 arithmetic separates them), on the custom op, its pure-TF reference and
its XLA lowering; the whole model to its float32 self within the documented tolerance; and the
shipped model's greedy text must not change.
"""

import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.models import RecurrentLM, TransformerLM
from np_reference import assert_close
from ops.test_decoder_step import check_against_float64, make_inputs, np_block

KERNELS = ("c_attn", "c_proj", "mlp_c_fc", "mlp_c_proj")


def bf16_rounded(w):
    """The weights with the four kernels as bfloat16 tensors, and the same values as float32 numpy."""
    as_bf16, as_f32 = dict(w), dict(w)
    for name in KERNELS:
        kernel, bias = w[name]
        b16 = tf.cast(tf.constant(kernel), tf.bfloat16)
        as_bf16[name] = (b16, bias)
        as_f32[name] = (tf.cast(b16, tf.float32).numpy(), bias)
    return as_bf16, as_f32


@pytest.mark.parametrize("impl", ["custom", "reference"])
@pytest.mark.parametrize("B, S, H, Hkv, D, F, use_bias", [
    (1, 40, 6, 6, 64, 1536, False),   # gpt-mini's block, one row (weights split by rows)
    (3, 37, 6, 2, 16, 100, True),     # grouped heads, odd sizes
    (6, 25, 4, 1, 24, 70, True),      # more rows than the row split takes (split by columns)
])
def test_bfloat16_kernels_match_float64_on_the_rounded_weights(impl, B, S, H, Hkv, D, F, use_bias, rng):
    x, kc, vc, index, lengths, w = make_inputs(rng, B, S, H, Hkv, D, F, use_bias)
    w16, w32 = bf16_rounded(w)
    check_against_float64(impl, x, kc, vc, index, lengths, w16, w32, H, F)


def test_bfloat16_kernels_under_xla(rng):
    B, S, H, Hkv, D, F = 2, 30, 4, 2, 16, 96
    x, kc, vc, index, lengths, w = make_inputs(rng, B, S, H, Hkv, D, F, True)
    w16, w32 = bf16_rounded(w)
    step = tf.function(lambda x, k, v: keraslm.ops.decoder_block_step(x, k, v, index, lengths, num_heads=H, **w16),
                       jit_compile=True)
    with keraslm.ops.implementation_scope("custom"):
        y, _, _ = step(tf.constant(x), tf.constant(kc), tf.constant(vc))
    y_ref, _, _ = np_block(x, kc, vc, index, lengths, w32, H)
    assert_close(y, y_ref, 2e-5 * np.sqrt(F), 1e-4, "y under XLA")


def test_kernels_must_share_one_dtype(rng):
    x, kc, vc, index, lengths, w = make_inputs(rng, 1, 5, 2, 2, 4, 16, False)
    w16, _ = bf16_rounded(w)
    mixed = dict(w16, c_proj=w["c_proj"])
    with pytest.raises(ValueError, match="must all be float32 or all bfloat16, got bfloat16, float32, bfloat16, bfloat16"):
        keraslm.ops.decoder_block_step(x, kc, vc, index, lengths, num_heads=2, **mixed)


def _model(**kw):
    model = TransformerLM(vocab_size=50, max_length=64, num_layers=2, num_heads=4, width=48, **kw)
    model.build((None, None))
    return model


@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_steps_read_bfloat16_copies_and_stay_close_to_float32(impl, rng):
    """Inside decoding_precision("bfloat16") the one-token steps give the logits of the model whose kernels and
    output layer are rounded to bfloat16 (a float32 model holding those values), and stay near the float32
    model's logits."""
    model = _model(use_bias=True, tie_embeddings=False)   # (an untied output layer can be rounded on its own)
    rounded = _model(use_bias=True, tie_embeddings=False)
    rounded.set_weights(model.get_weights())
    for layer in [rounded.lm_head] + [layer for block in rounded.blocks
                                      for layer in (block.attn.c_attn, block.attn.c_proj, block.c_fc, block.c_proj)]:
        layer.kernel.assign(tf.cast(tf.cast(layer.kernel, tf.bfloat16), tf.float32))
    ids = tf.constant(rng.integers(0, 50, (2, 20)), tf.int32)

    def steps(m, precision):
        with keraslm.ops.implementation_scope(impl):
            @tf.function
            def run():
                with m.decoding_precision(precision):
                    cache = m.init_cache(2, 64)
                    out = []
                    for t in range(20):            # every token a one-token step (no float32 prompt pass)
                        logits, cache = m.next(ids[:, t:t + 1], cache, tf.fill([2], t))
                        out.append(logits[:, 0])
                    return tf.stack(out, 1)
            return run().numpy()

    got = steps(model, "bfloat16")
    want = steps(rounded, "float32")
    full32 = steps(model, "float32")
    assert_close(got, want, 1e-4, 1e-4, "bfloat16 steps")
    # 8 significant bits per weight: logits of order 1 move by about 1e-2 at most here.
    assert np.max(np.abs(got - full32)) < 0.05, np.max(np.abs(got - full32))
    assert np.max(np.abs(got - full32)) > 0       # the copies really are bfloat16


# The documented tolerance of bfloat16 decoding on the shipped model (measured: at most 0.003 over
# 254 positions of tinyshakespeare and 0.02 over the line below; its logits are of order 3-10).
LOGIT_TOLERANCE = 0.05


def test_generate_in_bfloat16_keeps_the_shipped_models_greedy_text():
    """Greedy text is unchanged up to the float32 model's own near-ties: at the first token where the two
    differ (if they do), float32's logits for the two choices are within twice the tolerance. (Rounding
    every weight to 8 bits moves logits by up to ~0.02, which is enough to flip an argmax between two
    characters the model finds equally likely; 120 greedy characters meet such a tie now and then.)"""
    model = keraslm.load_model(keraslm.checkpoint.default_model_path())
    prompts = ["ROMEO:\n", "First Citizen:\nBefore we proceed", "KING HENRY:\nO God", "JULIET:\nAy me",
               "MENENIUS:\nI tell you, friends"]
    f32 = model.generate(prompts, max_new_tokens=120, temperature=0, return_details=True)["ids"]
    b16 = model.generate(prompts, max_new_tokens=120, temperature=0, precision="bfloat16",
                         return_details=True)["ids"]
    same = 0
    for prompt, a, b in zip(prompts, f32, b16):
        if a == b:
            same += 1
            continue
        k = next(i for i in range(len(a)) if a[i] != b[i])
        ids = list(model.tokenizer.tokenize(prompt).numpy()) + a[:k]
        logits = model(tf.constant([ids], tf.int32))[0, -1].numpy()
        assert logits[a[k]] - logits[b[k]] < 2 * LOGIT_TOLERANCE, (prompt, k, logits[a[k]], logits[b[k]])
    assert same >= 1, "every greedy text changed"


def test_bfloat16_logits_of_the_shipped_model_within_tolerance():
    model = keraslm.load_model(keraslm.checkpoint.default_model_path())
    ids = tf.constant(model.tokenizer.tokenize("ROMEO:\nWhat light through yonder window breaks? It is the east, "
                                               "and Juliet is the sun.").numpy()[None], tf.int32)
    n = ids.shape[1]

    @tf.function
    def logits(precision):
        with model.decoding_precision(precision):
            cache = model.init_cache(1, 128)
            _, cache = model.next(ids[:, :1], cache, tf.zeros([1], tf.int32))
            out = []
            for t in range(1, n):
                step, cache = model.next(ids[:, t:t + 1], cache, tf.fill([1], t))
                out.append(step[:, 0])
            return tf.stack(out, 1)

    diff = np.abs(logits("bfloat16").numpy() - logits("float32").numpy())
    assert 0 < diff.max() < LOGIT_TOLERANCE, diff.max()


def test_precision_errors_name_the_value():
    model = _model()
    with pytest.raises(ValueError, match="precision must be one of 'float32', 'bfloat16', got 'float16'"):
        model.generate([1, 2], max_new_tokens=3, precision="float16")
    with pytest.raises(ValueError, match="beam search"):
        model.generate([1, 2], max_new_tokens=3, num_beams=2, precision="bfloat16")
    with pytest.raises(ValueError, match="activation='gelu'"):
        _model(activation="gelu").generate([1, 2], max_new_tokens=3, precision="bfloat16")
    recurrent = RecurrentLM(vocab_size=20, embedding_dim=8, hidden_units=8, cell="gru")
    with pytest.raises(ValueError, match="RecurrentLM decodes in float32 only, got precision='bfloat16'"):
        recurrent.generate([1, 2], max_new_tokens=3, precision="bfloat16")
