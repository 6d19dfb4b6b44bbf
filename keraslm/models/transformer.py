"""TransformerLM: a GPT-style decoder-only language model."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from keraslm import ops
from keraslm.layers import PositionEmbedding, TransformerBlock
from keraslm.layers.dispatch import layer_norm
from keraslm.models.base import CausalLM
from keraslm.validation import positive_int


@keras.saving.register_keras_serializable(package="keraslm")
class TransformerLM(CausalLM):
    """GPT-2 style decoder: ``wte + wpe -> N x TransformerBlock -> ln_f -> logits``.

    The LM head is tied to the token embedding (``logits = x @ wte^T``) unless
    ``tie_embeddings=False``. Attention runs through ``keraslm.ops.attention``
    (fused custom op, or the pure-TF reference, per the ops switch).

    Args:
        vocab_size: V.
        max_length: context length (block size).
        num_layers: number of blocks.
        num_heads: attention heads.
        width: model width C (``n_embd``), divisible by ``num_heads``.
        num_kv_heads: key/value heads for grouped-query attention (default ``num_heads``).
        mlp_ratio: MLP width / C.
        dropout: embedding, attention-output and residual dropout.
        use_bias: biases in linear layers and LayerNorms.
        position_embedding: ``"learned"`` or ``"sinusoidal"``.
        tie_embeddings: share the token embedding with the LM head.
        layer_norm_epsilon: LayerNorm epsilon.
        activation: the MLP's GELU: ``"gelu_tanh"`` (GPT-2's tanh approximation) or
            ``"gelu"`` (exact erf GELU, as PyTorch's ``nn.GELU()`` in nanoGPT).
        tokenizer: optional tokenizer layer saved with the model.

    Example:
        >>> import tensorflow as tf
        >>> model = TransformerLM(vocab_size=11, max_length=8, num_layers=1, num_heads=2, width=8)
        >>> model(tf.zeros([2, 5], tf.int32)).shape
        TensorShape([2, 5, 11])
    """

    def __init__(self, vocab_size, max_length, num_layers, num_heads, width, num_kv_heads=None, mlp_ratio=4,
                 dropout=0.0, use_bias=True, position_embedding="learned", tie_embeddings=True,
                 layer_norm_epsilon=1e-5, activation="gelu_tanh", tokenizer=None, **kwargs):
        super().__init__(tokenizer=tokenizer, **kwargs)
        self._vocab_size = positive_int("vocab_size", vocab_size)
        self._max_length = positive_int("max_length", max_length)
        positive_int("num_layers", num_layers)
        positive_int("num_heads", num_heads)
        positive_int("width", width)
        if width % num_heads:
            raise ValueError(f"width={width} must be divisible by num_heads={num_heads}")
        self.num_layers, self.num_heads, self.width = num_layers, num_heads, width
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        self.mlp_ratio, self.dropout, self.use_bias = mlp_ratio, dropout, use_bias
        self.position_embedding, self.tie_embeddings = position_embedding, tie_embeddings
        self.layer_norm_epsilon, self.activation = layer_norm_epsilon, activation
        dt = self.dtype_policy
        self.wte = keras.layers.Embedding(vocab_size, width, name="wte", dtype=dt,
                                          embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.wpe = PositionEmbedding(max_length, width, kind=position_embedding, name="wpe", dtype=dt)
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        proj_std = 0.02 / (2 * num_layers) ** 0.5  # GPT-2's scaled init of the residual projections
        self.blocks = [TransformerBlock(num_heads, self.num_kv_heads, mlp_ratio, dropout, use_bias,
                                        layer_norm_epsilon, proj_init_std=proj_std, activation=activation,
                                        name=f"h_{i}", dtype=dt)
                       for i in range(num_layers)]
        self.ln_f = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, center=use_bias, name="ln_f",
                                                    dtype=dt)
        self.lm_head = None if tie_embeddings else keras.layers.Dense(vocab_size, use_bias=False, name="lm_head",
                                                                      dtype=dt)
        self._decode_head = None  # the output layer's bfloat16 copy inside decoding_precision("bfloat16")

    @property
    def max_length(self):
        return self._max_length

    @property
    def hidden_size(self):
        return self.width

    @property
    def head_dim(self):
        return self.width // self.num_heads

    def prefers_xla_training(self, custom_ops):
        # Short contexts train fastest with XLA fusing everything around the fused attention and
        # bfloat16 products (XLA custom calls where the op library has them, else the pure-TF
        # attention). Longer contexts (the presets that train them use dropout, and XLA's CPU random
        # bits for dropout masks are very slow) run without XLA.
        return not custom_ops or self._max_length <= 128

    def build(self, input_shape):
        shape = (input_shape[0], input_shape[1], self.width)
        # Sublayers may already be built by next() / init_cache() before call().
        for layer, s in [(self.wte, input_shape), (self.wpe, input_shape), *[(b, shape) for b in self.blocks],
                         (self.ln_f, shape), (self.lm_head, shape)]:
            if layer is not None and not layer.built:
                layer.build(s)
        self.built = True

    def _embed(self, ids, positions, training):
        return self.drop(self.wte(ids) + self.wpe(positions), training=training)   # [B, T, C]

    def features(self, token_ids, training=None):
        T = tf.shape(token_ids)[1]
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                T, self._max_length, message=f"sequence longer than the model's max_length={self._max_length}")]):
            positions = tf.range(T)[None, :]                                       # [1, T]
        x = self._embed(token_ids, positions, training)
        for block in self.blocks:
            x = block(x, training=training)
        return self._final_norm(x)                                                 # [B, T, C]

    def _final_norm(self, x):
        """``ln_f`` of :meth:`features` and :meth:`next` alike (the fused op for float32)."""
        return layer_norm(self.ln_f, x)

    def logits_from_features(self, x):
        if self._decode_head is not None and x.shape.rank == 3 and x.shape[1] == 1:   # a bfloat16 decoding step
            rows = tf.reshape(x, [-1, self.width])                                   # [B, C]
            logits = ops.linear(rows, self._decode_head, transpose_kernel=self.lm_head is None)
            return tf.reshape(logits, tf.concat([tf.shape(x)[:-1], [self._vocab_size]], 0))
        if self.lm_head is not None:
            y = ops.dense_matmul(x, self.lm_head.kernel) if x.shape[1] != 1 else None  # bfloat16 products
            return self.lm_head(x) if y is None else y
        w = tf.cast(self.wte.embeddings, x.dtype)                                   # [V, C]
        # A 2-D MatMul: TF's batched matmul costs more per call, a sizeable part of
        # a one-token decoding step.
        rows = tf.reshape(x, [-1, self.width])                                      # [B * T, C]
        if x.dtype == tf.float32 and x.shape[1] != 1 and ops.bf16_products_active():
            logits = ops.matmul_bf16(rows, w, transpose_b=True)                     # [B * T, V]
        else:
            logits = tf.matmul(rows, w, transpose_b=True)                           # [B * T, V]
        shape = tf.concat([tf.shape(x)[:-1], [self._vocab_size]], 0)
        return tf.ensure_shape(tf.reshape(logits, shape), x.shape[:-1].concatenate([self._vocab_size]))

    def head_layers(self):
        return [] if self.lm_head is None else [self.lm_head]

    def init_cache(self, batch_size, max_length=None):
        S = self._max_length if max_length is None else max_length
        shape = tf.stack([tf.cast(batch_size, tf.int32), tf.cast(S, tf.int32), self.num_kv_heads, self.head_dim])

        def zeros():  # a fresh buffer per call (never a folded constant): caches may be updated in place
            z = tf.raw_ops.Empty(shape=shape, dtype=self.compute_dtype, init=True)     # [B, S, Hkv, D]
            return tf.ensure_shape(z, [None, None, self.num_kv_heads, self.head_dim])

        return tuple((zeros(), zeros()) for _ in self.blocks)

    def next(self, ids, cache, index, valid=None):
        if not self.built:
            self.build((None, None))
        T = tf.shape(ids)[1]
        index = tf.cast(index, tf.int32)
        positions = index[:, None] + tf.range(T)[None, :]                          # [B, T]
        key_lengths = index + (T if valid is None else tf.cast(valid, tf.int32))  # [B]
        x = self._embed(ids, positions, training=False)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block(x, cache=layer_cache, index=index, key_lengths=key_lengths)
            new_cache.append(layer_cache)
        return self.logits_from_features(self._final_norm(x)), tuple(new_cache)

    @contextlib.contextmanager
    def decoding_precision(self, precision):
        """``"bfloat16"``: one-token steps read bfloat16 copies of the blocks' four kernels and of the output
        layer (the tied embedding table, or ``lm_head``), made here.

        Decoding reads every weight once per token, so at small batch sizes its speed is the memory
        bandwidth over the bytes of the weights: bfloat16 copies of the matrices (nearly all of them)
        halve those bytes. The products still accumulate in float32; the LayerNorms, biases, the
        input embedding lookups and the prompt's pass stay float32. What changes is that each matrix
        weight is rounded to bfloat16 (8 significant bits). Needs the tanh GELU and a float32 model.
        """
        if precision == "float32":
            yield
            return
        if precision != "bfloat16":
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        if not self.built:
            self.build((None, None))
        kernels = [block.decoding_kernels(tf.bfloat16) for block in self.blocks]   # the casts, once per call
        head = self.wte.embeddings if self.lm_head is None else self.lm_head.kernel
        for block, k in zip(self.blocks, kernels):
            block._decode_kernels = k
        self._decode_head = tf.cast(head, tf.bfloat16)                             # [V, C] tied, else [C, V]
        try:
            yield
        finally:
            for block in self.blocks:
                block._decode_kernels = None
            self._decode_head = None

    def get_config(self):
        return {
            "vocab_size": self._vocab_size, "max_length": self._max_length, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "width": self.width, "num_kv_heads": self.num_kv_heads,
            "mlp_ratio": self.mlp_ratio, "dropout": self.dropout, "use_bias": self.use_bias,
            "position_embedding": self.position_embedding, "tie_embeddings": self.tie_embeddings,
            "layer_norm_epsilon": self.layer_norm_epsilon, "activation": self.activation, **self._base_config(),
            "name": self.name, "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }
