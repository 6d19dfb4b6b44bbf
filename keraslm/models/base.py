"""CausalLM: the interface every keraslm language model implements."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from keraslm.models.multi_worker import MultiWorkerFit


class CausalLM(MultiWorkerFit, keras.Model):
    """Base class of the language models.

    A model maps token ids to next-token logits, ``call(token_ids [B, T]) ->
    logits [B, T, V]``, and exposes the one generation contract:

    * ``init_cache(batch_size, max_length)`` -> a fresh decoding state that the
      caller owns (K/V buffers for a transformer, (h, c) / h for recurrent layers);
    * ``next(ids [B, T], cache, index [B], valid=None) -> (logits [B, T, V], cache)``:
      feeds ``T`` tokens starting at position ``index[b]`` of each row (only the
      first ``valid[b]`` of them are real when given), returns their logits
      and the updated state. ``next`` takes the cache over: it may write the new
      keys and values into the given buffers in place (a transformer does, so a
      decoding step copies no cache), so the caller must use only the cache it
      returns. To branch from a state, copy or gather it first (beam search
      gathers its rows, which makes new buffers).

    ``features(token_ids)`` returns the final hidden states ``[B, T, C]`` (used
    by :class:`~keraslm.models.SequenceClassifier`); ``head_layers()`` lists the
    layers that only ``logits_from_features`` uses, which a model built on
    ``features`` leaves untrained.

    The optional ``tokenizer`` (a keraslm tokenizer layer) is saved and restored
    with the model, so a ``.keras`` file is all that generation needs.
    """

    def __init__(self, tokenizer=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        self.tokenizer = tokenizer

    # --- the contract subclasses implement -------------------------------------------------
    def features(self, token_ids, training=None):
        raise NotImplementedError

    def logits_from_features(self, x):
        raise NotImplementedError

    def head_layers(self):
        """The layers that only :meth:`logits_from_features` uses (an untied output projection), not
        :meth:`features`; default none."""
        return []

    def init_cache(self, batch_size, max_length):
        raise NotImplementedError

    def next(self, ids, cache, index, valid=None):
        raise NotImplementedError

    @contextlib.contextmanager
    def decoding_precision(self, precision):
        """Within it, one-token :meth:`next` steps read their weights in ``precision``.

        The decoding loops enter it around the loop they build (at trace time), so that any copies
        of the weights are made once per call, outside the loop. ``"float32"`` (the default) reads
        the variables; a model that offers another precision overrides this. The base class offers
        none: other values raise ``ValueError``.
        """
        if precision != "float32":
            raise ValueError(f"{type(self).__name__} decodes in float32 only, got precision={precision!r}")
        yield

    @property
    def max_length(self):
        """The longest context the model accepts (None: unbounded)."""
        return None

    @property
    def hidden_size(self):
        """Width C of :meth:`features`."""
        raise NotImplementedError

    def prefers_xla_training(self, custom_ops):
        """Whether the harness should compile this model's train step with XLA (``jit_compile="auto"``).

        Args:
            custom_ops: whether keraslm's compiled ops are in use.
        """
        return False

    # --- shared behaviour ------------------------------------------------------------------
    def call(self, token_ids, training=None):
        return self.logits_from_features(self.features(token_ids, training=training))

    @property
    def vocab_size(self):
        return self._vocab_size

    def _base_config(self):
        return {"tokenizer": keras.saving.serialize_keras_object(self.tokenizer) if self.tokenizer else None}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("tokenizer"), dict):
            config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)

    def generate(self, prompts, max_new_tokens=100, **kwargs):
        """Continues ``prompts``; see :func:`keraslm.generation.generate` for the arguments."""
        from keraslm.generation import generate

        return generate(self, prompts, max_new_tokens, **kwargs)

    def stream(self, prompt, max_new_tokens=100, **kwargs):
        """Yields text as it is generated; see :func:`keraslm.generation.stream`."""
        from keraslm.generation import stream

        return stream(self, prompt, max_new_tokens, **kwargs)

    def build_for_inference(self):
        """Creates the weights by running a one-token batch."""
        if not self.built:
            self(tf.zeros([1, 1], tf.int32))
        return self
