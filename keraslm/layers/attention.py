"""Causal multi-head self-attention with a KV cache, on keraslm.ops.attention."""

from __future__ import annotations

import keras
import tensorflow as tf

from keraslm import ops
from keraslm.layers.dispatch import dense
from keraslm.validation import positive_int

@keras.saving.register_keras_serializable(package="keraslm")
class CausalSelfAttention(keras.layers.Layer):
    """GPT-2 style causal self-attention (``c_attn`` -> fused attention -> ``c_proj``).

    ``c_attn`` projects to ``[q | k | v]`` (GPT-2's layout when ``num_kv_heads``
    equals ``num_heads``); fewer key/value heads give grouped-query attention.

    Args:
        num_heads: query heads H.
        num_kv_heads: key/value heads (default H); H must be a multiple.
        use_bias: biases in the projections.
        dropout: dropout rate on the attention output projection.
        proj_init_std: initial weight std of ``c_proj`` (GPT-2 scales it by
            ``1 / sqrt(2 * num_layers)``).

    Call args:
        x: ``[B, T, C]``.
        cache: optional ``(k, v)`` pair, each ``[B, S, Hkv, D]``: the keys and
            values of earlier positions. The layer writes the new keys and values
            into these buffers in place (the caller owns the cache and uses only
            the one returned; see :class:`keraslm.models.CausalLM`).
        index: ``[B]`` int32 position of ``x[:, 0]`` in each row (with ``cache``);
            when ``T > 1`` every row must share the same index.
        key_lengths: optional ``[B]`` int32 number of valid keys per row (right
            padding); with a cache it defaults to ``index + T``.

    Returns:
        ``y [B, T, C]``, and the updated cache when one was given.
    """

    def __init__(self, num_heads, num_kv_heads=None, use_bias=True, dropout=0.0, proj_init_std=0.02, **kwargs):
        super().__init__(**kwargs)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        positive_int("num_heads", num_heads)
        positive_int("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.use_bias, self.dropout, self.proj_init_std = use_bias, dropout, proj_init_std

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(f"model width {width} must be divisible by num_heads={self.num_heads}")
        self.head_dim = width // self.num_heads
        qkv_width = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.c_attn = keras.layers.Dense(qkv_width, use_bias=self.use_bias, kernel_initializer=init,
                                         name="c_attn", dtype=self.dtype_policy)
        self.c_attn.build(input_shape)
        self.c_proj = keras.layers.Dense(width, use_bias=self.use_bias, name="c_proj", dtype=self.dtype_policy,
                                         kernel_initializer=keras.initializers.RandomNormal(stddev=self.proj_init_std))
        self.c_proj.build(tuple(input_shape[:-1]) + (width,))
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, x, cache=None, index=None, key_lengths=None, training=None):
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = dense(self.c_attn, x)                                           # [B, T, (H + 2 Hkv) D]
        # One split, not three slices: the gradient is a single concat, where
        # each slice's gradient would write a zero-padded copy of all of qkv.
        q, k, v = tf.split(qkv, [H * D, Hkv * D, Hkv * D], axis=-1)
        q = tf.reshape(q, [B, T, H, D])                                       # [B, T, H, D]
        k = tf.reshape(k, [B, T, Hkv, D])                                     # [B, T, Hkv, D]
        v = tf.reshape(v, [B, T, Hkv, D])                                     # [B, T, Hkv, D]
        if cache is not None:
            cache, k, v, key_lengths = self._update_cache(cache, k, v, index, key_lengths, T)
            k, v = tf.cast(k, q.dtype), tf.cast(v, q.dtype)
        y = ops.attention(q, k, v, causal=True, key_lengths=key_lengths)    # [B, T, H, D]
        y = self.drop(dense(self.c_proj, tf.reshape(y, [B, T, H * D])), training=training)  # [B, T, C]
        return y if cache is None else (y, cache)

    @staticmethod
    def _update_cache(cache, k, v, index, key_lengths, T):
        """Writes k, v at positions index[b] + t (in place); returns the cache and the keys/values to attend to.

        A one-token step attends to the whole cache, with ``key_lengths``
        bounding each row's live keys (the fused op reads only those, so the
        cost follows the live length and nothing is copied); longer steps
        (prefill) attend to the live prefix.
        """
        k_cache, v_cache = cache                                              # [B, S, Hkv, D] each
        B, S = tf.shape(k_cache)[0], tf.shape(k_cache)[1]
        Hkv, D = k.shape[2], k.shape[3]                                        # static (from the projection)
        index = tf.cast(index, tf.int32)
        pos = index[:, None] + tf.range(T)[None, :]                          # [B, T]
        k, v = tf.cast(k, k_cache.dtype), tf.cast(v, v_cache.dtype)
        rows = tf.reshape(tf.range(B)[:, None] * S + pos, [-1])              # [B * T] rows of [B * S, Hkv, D]
        flat = [B * S, Hkv, D]

        def write(c, new):  # in place: no copy of the cache per token
            new = tf.reshape(new, [B * T, Hkv, D])                           # [B * T, Hkv, D]
            return tf.reshape(tf.raw_ops.InplaceUpdate(x=tf.reshape(c, flat), i=rows, v=new), tf.shape(c))

        k_cache, v_cache = write(k_cache, k), write(v_cache, v)
        if key_lengths is None:
            key_lengths = index + T
        if k.shape[1] == 1:
            k_att, v_att = k_cache, v_cache                                   # [B, S, Hkv, D]
        else:
            live = tf.reduce_max(index) + T
            k_att, v_att = k_cache[:, :live], v_cache[:, :live]               # [B, live, Hkv, D]
        return (k_cache, v_cache), k_att, v_att, key_lengths

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "num_kv_heads": self.num_kv_heads,
                "use_bias": self.use_bias, "dropout": self.dropout, "proj_init_std": self.proj_init_std}
