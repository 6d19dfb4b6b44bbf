"""Pre-LayerNorm transformer decoder block (GPT-2's ``h.N``)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keraslm import ops
from keraslm.layers.attention import CausalSelfAttention
from keraslm.layers.dispatch import dense, layer_norm
from keraslm.validation import positive_int

# The MLP's activation: the name -> keras.activations.gelu's ``approximate``. "gelu_tanh" is GPT-2's
# tanh approximation (Hugging Face "gelu_new"); "gelu" the exact erf form (PyTorch's nn.GELU(), nanoGPT).
ACTIVATIONS = {"gelu_tanh": True, "gelu": False}


@keras.saving.register_keras_serializable(package="keraslm")
class TransformerBlock(keras.layers.Layer):
    """``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` with a GELU MLP of width ``mlp_ratio * C``.

    Sublayer names follow GPT-2 (``ln_1``, ``attn.c_attn``, ``attn.c_proj``,
    ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``) so GPT-2 checkpoints map onto it.

    Args:
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention), default ``num_heads``.
        mlp_ratio: MLP hidden width / model width.
        dropout: residual dropout.
        use_bias: biases in the linear layers and LayerNorms.
        layer_norm_epsilon: LayerNorm epsilon.
        proj_init_std: initial std of the two residual projections (``attn.c_proj``,
            ``mlp_c_proj``); GPT-2 uses ``0.02 / sqrt(2 * num_layers)``.
        activation: the MLP's GELU, ``"gelu_tanh"`` (GPT-2's tanh approximation) or
            ``"gelu"`` (exact, with erf). Only ``"gelu_tanh"`` runs one-token steps
            as the fused :func:`keraslm.ops.decoder_block_step`.

    Call args: as :class:`CausalSelfAttention`.
    """

    def __init__(self, num_heads, num_kv_heads=None, mlp_ratio=4, dropout=0.0, use_bias=True,
                 layer_norm_epsilon=1e-5, proj_init_std=0.02, activation="gelu_tanh", **kwargs):
        super().__init__(**kwargs)
        positive_int("mlp_ratio", mlp_ratio)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.num_heads, self.num_kv_heads, self.mlp_ratio = num_heads, num_kv_heads, mlp_ratio
        self.dropout, self.use_bias, self.layer_norm_epsilon = dropout, use_bias, layer_norm_epsilon
        self.proj_init_std, self.activation = proj_init_std, activation
        self._decode_kernels = None  # set by the model around a decoding loop (TransformerLM.decoding_precision)

    def build(self, input_shape):
        width = input_shape[-1]
        init = keras.initializers.RandomNormal(stddev=0.02)
        dt = self.dtype_policy
        self.ln_1 = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, center=self.use_bias,
                                                    name="ln_1", dtype=dt)
        self.attn = CausalSelfAttention(self.num_heads, self.num_kv_heads, use_bias=self.use_bias,
                                        dropout=self.dropout, proj_init_std=self.proj_init_std, name="attn",
                                        dtype=dt)
        self.ln_2 = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, center=self.use_bias,
                                                    name="ln_2", dtype=dt)
        self.c_fc = keras.layers.Dense(self.mlp_ratio * width, use_bias=self.use_bias, kernel_initializer=init,
                                       name="mlp_c_fc", dtype=dt)
        self.c_proj = keras.layers.Dense(width, use_bias=self.use_bias, name="mlp_c_proj", dtype=dt,
                                         kernel_initializer=keras.initializers.RandomNormal(stddev=self.proj_init_std))
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        for layer, shape in ((self.ln_1, input_shape), (self.attn, input_shape), (self.ln_2, input_shape),
                             (self.c_fc, input_shape),
                             (self.c_proj, tuple(input_shape[:-1]) + (self.mlp_ratio * width,))):
            layer.build(shape)
        self.built = True

    def call(self, x, cache=None, index=None, key_lengths=None, training=None):
        if cache is not None and not training and (self._runs_decoder_step_op(x) or self._steps_in_bfloat16(x)):
            return self._decoder_step(x, cache, index, key_lengths)
        a = self.attn(self._norm(self.ln_1, x, training), cache=cache, index=index, key_lengths=key_lengths,
                      training=training)
        if cache is not None:
            a, cache = a
        x = x + a
        h = dense(self.c_fc, self._norm(self.ln_2, x, training))
        approximate = ACTIVATIONS[self.activation]
        h = (_compiled_gelu(h, approximate) if self._compiles_elementwise(training)
             else keras.activations.gelu(h, approximate=approximate))
        x = x + self.drop(dense(self.c_proj, h), training=training)
        return x if cache is None else (x, cache)

    def _compiles_elementwise(self, training):
        """bfloat16 / float16 training steps run LayerNorm and the GELU as XLA-compiled functions."""
        return bool(training) and self.compute_dtype != "float32"

    def _norm(self, layer, x, training):
        if not self._compiles_elementwise(training):
            return layer_norm(layer, x)
        beta = tf.convert_to_tensor(layer.beta) if layer.center else None
        y = _compiled_layer_norm(x, tf.convert_to_tensor(layer.gamma), beta, layer.epsilon)
        return tf.cast(y, layer.compute_dtype)

    def _runs_decoder_step_op(self, x):
        """One-token float32 steps run as one :func:`keraslm.ops.decoder_block_step` when the custom ops are in use
        (the op computes the tanh GELU only)."""
        return (self.activation == "gelu_tanh" and x.shape.rank == 3 and x.shape[1] == 1 and x.dtype == tf.float32
                and self.compute_dtype == "float32" and ops.uses_custom_op("decoder_block_step"))

    def _steps_in_bfloat16(self, x):
        """One-token steps inside a bfloat16 decoding loop always run as the fused step (its reference
        when the custom ops are off), which reads the bfloat16 kernels."""
        return self._decode_kernels is not None and x.shape.rank == 3 and x.shape[1] == 1

    def decoding_kernels(self, dtype):
        """The four kernels of the fused step (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``)
        cast to ``dtype``: computed once, outside a decoding loop, for its steps to read."""
        if self.activation != "gelu_tanh":
            raise ValueError(f"decoding in {tf.as_dtype(dtype).name} needs the tanh GELU (activation='gelu_tanh'); "
                             f"block {self.name} uses activation={self.activation!r}")
        if self.compute_dtype != "float32":
            raise ValueError(f"decoding in {tf.as_dtype(dtype).name} needs a float32 model; block {self.name} "
                             f"computes in {self.compute_dtype}")
        return tuple(tf.cast(k, dtype) for k in (self.attn.c_attn.kernel, self.attn.c_proj.kernel,
                                                 self.c_fc.kernel, self.c_proj.kernel))

    def _decoder_step(self, x, cache, index, key_lengths):
        index = tf.cast(index, tf.int32)
        if key_lengths is None:
            key_lengths = index + 1
        bias = (lambda t: t) if self.use_bias else (lambda t: None)
        attn = self.attn
        qkv, proj, fc, mlp_proj = self._decode_kernels or (attn.c_attn.kernel, attn.c_proj.kernel,
                                                           self.c_fc.kernel, self.c_proj.kernel)
        y, k_cache, v_cache = ops.decoder_block_step(
            x[:, 0], cache[0], cache[1], index, key_lengths, num_heads=attn.num_heads,
            ln_1=(self.ln_1.gamma, bias(self.ln_1.beta)),
            c_attn=(qkv, bias(attn.c_attn.bias)),
            c_proj=(proj, bias(attn.c_proj.bias)),
            ln_2=(self.ln_2.gamma, bias(self.ln_2.beta)),
            mlp_c_fc=(fc, bias(self.c_fc.bias)),
            mlp_c_proj=(mlp_proj, bias(self.c_proj.bias)),
            epsilon=self.layer_norm_epsilon, in_place=True)  # the cache is the caller's to give (CausalLM.next)
        return y[:, None], (k_cache, v_cache)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "num_kv_heads": self.num_kv_heads,
                "mlp_ratio": self.mlp_ratio, "dropout": self.dropout, "use_bias": self.use_bias,
                "layer_norm_epsilon": self.layer_norm_epsilon, "proj_init_std": self.proj_init_std,
                "activation": self.activation}


# Training steps in bfloat16 / float16 run these elementwise chains as one XLA kernel each (forward,
# and backward through its gradient function), where TF would run every op of them over the whole
# [B, T, C] or [B, T, 4C] tensor (~8 passes forward and ~10 backward for the tanh-GELU) and does not
# vectorize bfloat16 elementwise ops (README, "Training throughput", has the measured gain). In float32,
# TF's own ops were faster, so they stay. Only in training, whose shapes repeat; inference keeps the
# plain ops (no compilation per prompt length).
@tf.function(jit_compile=True)
def _compiled_gelu(x, approximate=True):
    return keras.activations.gelu(x, approximate=approximate)


@tf.function(jit_compile=True)
def _compiled_layer_norm(x, gamma, beta, epsilon):
    return keras.ops.layer_normalization(x, gamma, beta, axis=-1, epsilon=epsilon)
