"""SavedModel export for TF Serving: text in, text out, stock TF ops only.

:func:`export` writes ``EXPORT_BASE/<version>/`` (``saved_model.pb``, ``variables/``,
``assets/``, ``fingerprint.pb``, ``batching_params.pbtxt``), the layout that
``tensorflow_model_server`` watches. Tokenisation, the empty-prompt rule, left
truncation, prefill, the KV-cache decode loop, sampling and detokenisation all
run inside the graph. Signatures (``B`` prompts, ``T`` tokens, ``V`` vocabulary):

``serving_default`` (generate)
    inputs: ``prompts`` string ``[B]``; ``max_new_tokens`` int32, ``temperature``
    float32, ``top_k`` int32, ``top_p`` float32, ``seed`` int64, each ``[B]`` (per
    prompt) or ``[1]`` (broadcast; a scalar fed by a server works too). Outputs:
    ``texts`` string ``[B]`` and ``num_tokens`` int32 ``[B]``; ``min_p`` = 0,
    ``repetition_penalty`` = 1. For one integer seed the texts equal
    ``keraslm.generation.generate(model, prompts, ..., seed=seed)`` on the
    reference ops; a row with its own seed takes coin ``b`` of that seed's stream.
``score``
    inputs: ``prompts`` string ``[B]``. Outputs: ``token_logprobs`` float32
    ``[B, T]`` (``log p(x_t | x_<t)``; 0 for the first token and padding),
    ``num_tokens`` int32 ``[B]``, ``perplexity`` float32 ``[B]`` (``exp`` of the
    mean NLL of tokens 2..n; NaN when n < 2). Long texts keep their last tokens.
``score_ids``
    inputs: ``token_ids`` int32 ``[B, T]``, ``lengths`` int32 ``[B]``; outputs as ``score``.
``logits``
    inputs: ``token_ids`` int32 ``[B, T]``. Outputs: ``logits`` float32 ``[B, T, V]``.

Invalid inputs fail with ``InvalidArgumentError`` naming the input.

:func:`export_classifier` writes a :class:`~keraslm.models.SequenceClassifier` the
same way (same layout, same atomic write), with one signature:

``serving_default`` (classify)
    inputs: ``text`` string ``[B]``. Outputs: ``probabilities`` float32 ``[B, K]``
    (the softmax of ``SequenceClassifier.predict(text)``, ``K`` classes) and,
    when the export was given class names, ``label`` string ``[B]`` (the likeliest
    class's name).
"""

from __future__ import annotations

import logging
import os
import shutil

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keraslm import ops
from keraslm.atomic import publish_directory, remove_stale_temporaries, temporary_directory
from keraslm.generation.decode import sampling_loop
from keraslm.generation.settings import start_token
from keraslm.ops.sampling import SETTING_RULES
from keraslm.validation import INT32_MAX, assert_all, is_integer, non_negative_int

log = logging.getLogger("keraslm")

CUSTOM_OP_PREFIX = "Keraslm"
DEFAULT_LIMIT = 1024  # the default max_new_tokens limit of an export (generation slides past the context)
_TWO_31 = 2**31


# ---------------------------------------------------------------------------
# In-graph validation
# ---------------------------------------------------------------------------

def _broadcast_rows(value, B, name):
    """A setting given as a scalar, ``[1]`` or ``[B]`` -> ``[B]``."""
    n = tf.size(value)
    ok = (tf.rank(value) <= 1) & ((n == 1) | (n == B))
    message = tf.strings.format(f"{name} must have one value for every prompt or a single value; got shape {{}} "
                                f"for {{}} prompts", (tf.shape(value), B))
    with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
        return tf.broadcast_to(tf.reshape(value, [-1]), [B])                 # [B]


def _check_setting(values, name):
    """The sampler's own rule for setting ``name`` (``keraslm.ops.sampling.SETTING_RULES``), asserted in the graph."""
    _, valid, rule = SETTING_RULES[name]
    return assert_all(valid(values), values, name, rule)


def _seed_pairs(seed):
    """int64 seeds [B] -> int32 [B, 2]: ``[seed % 2**31, (seed >> 31) % 2**31]`` as in ``settings.prepare``."""
    low = tf.math.floormod(seed, _TWO_31)
    high = tf.math.floormod(tf.math.floordiv(seed, _TWO_31), _TWO_31)
    return tf.cast(tf.stack([low, high], 1), tf.int32)                        # [B, 2]


# ---------------------------------------------------------------------------
# The serving module
# ---------------------------------------------------------------------------

def _table_resources(obj, depth=3):
    """TrackableResources (lookup tables) held by a tokenizer or its plain helper objects."""
    found, stack, seen = [], [(obj, depth)], set()
    while stack:
        item, d = stack.pop()
        if id(item) in seen or d < 0 or tf.is_tensor(item):
            continue
        seen.add(id(item))
        if isinstance(item, tf.saved_model.experimental.TrackableResource):
            found.append(item)
        elif hasattr(item, "__dict__"):
            stack.extend((v, d - 1) for v in vars(item).values())
    return found


class ServingModule(tf.Module):
    """The exported object: the model's variables, its tokenizer and the signature functions.

    Args:
        model: a built keraslm ``CausalLM`` with a tokenizer.
        max_new_tokens_limit: the largest ``max_new_tokens`` a request may ask for.
    """

    def __init__(self, model, max_new_tokens_limit):
        super().__init__(name="keraslm_serving")
        # The tf.Variables inside the Keras variables: the ones the traced functions capture and TF1-style
        # loaders (TF Serving's) restore through the saver.
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        self.tokenizer = model.tokenizer
        self.tokenizer_tables = _table_resources(model.tokenizer)
        self._model = lambda: model                     # a closure: the Keras model object is not tracked
        self._context, self._limit, self._vocab_size = model.max_length, int(max_new_tokens_limit), model.vocab_size
        self._pad, self._start = int(model.tokenizer.pad_id), int(start_token(model.tokenizer))
        spec, default_new = tf.TensorSpec, min(100, self._limit)

        @tf.function(input_signature=[spec([None], tf.string, "prompts"), spec([None], tf.int32, "max_new_tokens"),
                                      spec([None], tf.float32, "temperature"), spec([None], tf.int32, "top_k"),
                                      spec([None], tf.float32, "top_p"), spec([None], tf.int64, "seed")],
                     jit_compile=False)
        def generate(prompts, max_new_tokens=tf.constant([default_new]), temperature=tf.constant([1.0]),
                     top_k=tf.constant([0]), top_p=tf.constant([1.0]), seed=tf.constant([0], tf.int64)):
            return self._generate(prompts, max_new_tokens, temperature, top_k, top_p, seed)

        @tf.function(input_signature=[spec([None], tf.string, "prompts")], jit_compile=False)
        def score(prompts):
            ids, lengths = self._tokenize(tf.reshape(prompts, [-1]), keep=self._context)
            return self._score(ids, lengths)

        @tf.function(input_signature=[spec([None, None], tf.int32, "token_ids"), spec([None], tf.int32, "lengths")],
                     jit_compile=False)
        def score_ids(token_ids, lengths):
            T = tf.shape(token_ids)[1]
            checks = [self._check_ids(token_ids),
                      tf.debugging.assert_equal(tf.shape(lengths), tf.shape(token_ids)[:1],
                                                message="lengths must have one value per row of token_ids"),
                      assert_all((lengths >= 0) & (lengths <= T), lengths, "lengths",
                                 "must be in [0, T] (T = the width of token_ids)")]
            with tf.control_dependencies(checks):
                return self._score(tf.identity(token_ids), tf.identity(lengths))

        @tf.function(input_signature=[spec([None, None], tf.int32, "token_ids")], jit_compile=False)
        def logits(token_ids):
            with tf.control_dependencies([self._check_ids(token_ids)]):
                return {"logits": tf.cast(self._model()(tf.identity(token_ids), training=False), tf.float32)}

        self.generate, self.score, self.score_ids, self.logits = generate, score, score_ids, logits

    def signatures(self):
        """The SignatureDef map for ``tf.saved_model.save``."""
        return {"serving_default": self.generate, "score": self.score, "score_ids": self.score_ids,
                "logits": self.logits}

    # -- pieces ---------------------------------------------------------------------------

    def _check_ids(self, token_ids):
        V = self._vocab_size
        return assert_all((token_ids >= 0) & (token_ids < V), token_ids, "token_ids", f"must be in [0, {V})",
                          width=tf.shape(token_ids)[1])

    def _tokenize(self, prompts, keep, start=None):
        """strings [B] -> (ids [B, P] right padded, lengths [B]); rows keep their last ``keep`` [B] tokens."""
        B = tf.shape(prompts)[0]
        rows = self.tokenizer.tokenize(prompts)                               # [B, None] ragged
        lengths = tf.cast(rows.row_lengths(), tf.int32)                       # [B]
        ids = tf.concat([rows.to_tensor(self._pad), tf.fill([B, 1], self._pad)], 1)   # [B, W], W >= 1
        col = tf.range(tf.shape(ids)[1])[None, :]                            # [1, W]
        if start is not None:                                                 # an empty prompt starts from it
            ids = tf.where((lengths[:, None] == 0) & (col == 0), start, ids)
            lengths = tf.maximum(lengths, 1)
        if keep is not None:
            shift = tf.maximum(lengths - keep, 0)                             # [B] tokens dropped on the left
            src = tf.minimum(shift[:, None] + col, tf.shape(ids)[1] - 1)      # [B, W]
            lengths = lengths - shift
            ids = tf.where(col < lengths[:, None], tf.gather(ids, src, batch_dims=1), self._pad)
        P = tf.reduce_max(tf.concat([lengths, [1]], 0))
        return ids[:, :P], lengths                                            # [B, P], [B]

    def _generate(self, prompts, max_new_tokens, temperature, top_k, top_p, seed):
        prompts = tf.reshape(prompts, [-1])                                   # [B]
        B = tf.shape(prompts)[0]
        max_new, temperature, top_k, top_p, seed = (
            _broadcast_rows(v, B, n) for v, n in ((max_new_tokens, "max_new_tokens"), (temperature, "temperature"),
                                           (top_k, "top_k"), (top_p, "top_p"), (seed, "seed")))
        checks = [
            assert_all((max_new >= 0) & (max_new <= self._limit), max_new, "max_new_tokens",
                       f"must be in [0, {self._limit}]"),
            _check_setting(temperature, "temperature"),
            _check_setting(top_k, "top_k"),
            _check_setting(top_p, "top_p"),
        ]
        with tf.control_dependencies(checks):
            max_new, temperature, top_k, top_p, seed = map(tf.identity, (max_new, temperature, top_k, top_p, seed))
        keep = self._context                                                  # generation slides past it
        ids, lengths = self._tokenize(prompts, keep=keep, start=self._start)
        out, num_tokens, _ = sampling_loop(
            self._model(), ids, lengths, max_new, temperature, top_k, top_p, tf.zeros([B]), tf.ones([B]),
            _seed_pairs(seed), tf.zeros([B, 0, 1], tf.int32))                 # out [B, N], -1 padded
        texts = self._continuation(ids, lengths, out, num_tokens)             # [B]
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
        return {"texts": texts, "num_tokens": num_tokens}

    def _continuation(self, ids, lengths, out, num_tokens):
        """The new tokens' text as it continues each prompt's text (as ``generation.settings.continuation_text``):
        prompt and new tokens detokenized together, minus the prompt's own text."""
        prompt = tf.RaggedTensor.from_tensor(ids, lengths=lengths)           # [B, None]
        new = tf.RaggedTensor.from_tensor(out, lengths=num_tokens)            # [B, None]
        head = self.tokenizer.detokenize(prompt)                              # [B]
        full = self.tokenizer.detokenize(tf.concat([prompt, new], axis=1))    # [B]
        n = tf.strings.length(head)
        follows = tf.equal(tf.strings.substr(full, tf.zeros_like(n), n), head)
        tail = tf.strings.substr(full, n, tf.maximum(tf.strings.length(full) - n, 0))
        return tf.where(follows & (num_tokens > 0), tail,
                        tf.where(num_tokens > 0, self.tokenizer.detokenize(new), ""))

    def _score(self, ids, lengths):
        B, T = tf.shape(ids)[0], tf.shape(ids)[1]
        logits = tf.cast(self._model()(ids, training=False), tf.float32)     # [B, T, V]
        logp = tf.nn.log_softmax(logits)
        nxt = tf.gather(logp[:, :-1], ids[:, 1:, None], batch_dims=2)[..., 0]  # [B, T - 1]
        lp = tf.concat([tf.zeros([B, 1]), nxt], 1)[:, :T]                     # [B, T]
        col = tf.range(T)[None, :]
        lp = tf.where((col >= 1) & (col < lengths[:, None]), lp, 0.0)
        count = tf.maximum(lengths - 1, 0)                                     # [B] predicted tokens
        nll = -tf.reduce_sum(lp, 1) / tf.cast(tf.maximum(count, 1), tf.float32)
        perplexity = tf.where(count > 0, tf.exp(nll), float("nan"))
        return {"token_logprobs": lp, "num_tokens": lengths, "perplexity": perplexity}


class ClassifierServingModule(tf.Module):
    """The exported object of a classifier: its variables, its tokenizer and the ``classify`` function.

    Args:
        model: a built :class:`~keraslm.models.SequenceClassifier` with a tokenizer.
        labels: class names in class-id order, or None (no ``label`` output).
    """

    def __init__(self, model, labels=None):
        super().__init__(name="keraslm_classifier_serving")
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        self.tokenizer = model.text_tokenizer
        self.tokenizer_tables = _table_resources(self.tokenizer)
        self._model = lambda: model                     # a closure: the Keras model object is not tracked
        names = None if labels is None else tf.constant(list(labels), tf.string)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "text")], jit_compile=False)
        def classify(text):
            clf = self._model()
            logits = clf(clf.tokenize(tf.reshape(text, [-1])), training=False)   # [B, K]
            out = {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}
            if names is not None:
                out["label"] = tf.gather(names, tf.argmax(logits, axis=-1, output_type=tf.int32))   # [B]
            return out

        self.classify = classify

    def signatures(self):
        """The SignatureDef map for ``tf.saved_model.save``."""
        return {"serving_default": self.classify}


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

def graph_op_types(path):
    """Every op type in the SavedModel at ``path``: its graphs and all their library functions."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    types, xla = set(), []
    for meta in saved.meta_graphs:
        nodes = list(meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            nodes.extend(fn.node_def)
            if fn.attr.get("_XlaMustCompile") and fn.attr["_XlaMustCompile"].b:
                xla.append(fn.signature.name)
        types.update(n.op for n in nodes)
        xla.extend(n.name for n in nodes if n.attr.get("_XlaMustCompile") and n.attr["_XlaMustCompile"].b)
    return types, xla


def check_stock_ops(path, allow_custom=False):
    """Raises RuntimeError when the SavedModel at ``path`` uses our ops (unless allowed) or XLA."""
    types, xla = graph_op_types(path)
    custom = sorted(t for t in types if t.startswith(CUSTOM_OP_PREFIX))
    if custom and not allow_custom:
        raise RuntimeError(f"the export uses keraslm custom ops {custom}, which stock TF Serving cannot run")
    if xla:
        raise RuntimeError(f"the export has XLA-compiled functions {xla[:3]}, which TF Serving does not compile")
    return types


def next_version(export_base):
    """1 + the highest integer version directory in ``export_base`` (1 when there is none)."""
    names = [n for n in os.listdir(export_base) if n.isdigit() and os.path.isdir(os.path.join(export_base, n))]
    return max(map(int, names), default=0) + 1


def _batching_params(sizes):
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch_bucket must be positive batch sizes, got {sizes!r}")
    lines = [f"max_batch_size {{ value: {sizes[-1]} }}", "batch_timeout_micros { value: 5000 }",
             "max_enqueued_batches { value: 100 }", "pad_variable_length_inputs: true"]
    return "\n".join(lines + [f"allowed_batch_sizes: {s}" for s in sizes]) + "\n"


def export(model, export_base, version=None, *, custom_ops=False, max_new_tokens_limit=None,
           batch_bucket=(1, 2, 4, 8, 16, 32)):
    """Exports ``model`` as ``export_base/<version>/`` for TF Serving (see the module docstring).

    The SavedModel is written to a hidden temporary directory inside
    ``export_base`` (TF Serving ignores names that are not integers), checked,
    synced and renamed into place, so the server never sees a half-written
    version and a failure leaves no version directory behind.

    By default the graph holds only stock TensorFlow ops (traced under
    ``keraslm.ops.implementation_scope("reference")``, no XLA), which the
    ``tensorflow/serving`` image runs; this is verified after saving.
    ``custom_ops=True`` keeps the fused ``Keraslm>*`` attention and sampling
    ops instead. Such an export loads only where keraslm's op library is
    linked: build your own model server with TF Serving's custom-op recipe
    (``tensorflow_serving/g3doc/custom_op.md``): copy ``csrc/kernels`` and
    ``csrc/tf`` into the serving source tree as a ``cc_library`` with
    ``alwayslink = 1``, add it to ``SUPPORTED_TENSORFLOW_OPS`` of
    ``tensorflow_serving/model_servers/BUILD``, and build
    ``//tensorflow_serving/model_servers:tensorflow_model_server``. In Python,
    ``tf.load_op_library`` on keraslm's ``_tf_ops.so`` before loading is enough.

    Args:
        model: a keraslm language model with a tokenizer (TransformerLM, RecurrentLM, ...).
        export_base: the model's base directory (TF Serving's ``--model_base_path``); created if needed.
        version: integer version directory; default 1 + the highest existing one. An
            existing version is never overwritten.
        custom_ops: keep keraslm's custom ops (see above).
        max_new_tokens_limit: the largest ``max_new_tokens`` a request may ask for; default
            1024 (generation slides its window past the model's context, see
            :mod:`keraslm.generation.decode`).
        batch_bucket: batch sizes for TF Serving's batcher, written to
            ``batching_params.pbtxt`` in the version directory as ``allowed_batch_sizes``
            (``max_batch_size`` is the largest); the server reads it with
            ``--enable_batching --enable_per_model_batching_parameters``. None writes no file.

    Returns:
        The path of the new version directory.

    Raises:
        ValueError: no tokenizer, a bad version or limit, an existing version, or an
            ``export_base`` that is not a directory.
        RuntimeError: the graph uses custom ops or XLA although it must not, or
            ``custom_ops=True`` without the op library.

    Example:
        >>> import tempfile
        >>> from keraslm.data import CharTokenizer
        >>> from keraslm.models import RecurrentLM
        >>> tok = CharTokenizer(); tok.adapt(["hello world"])
        >>> model = RecurrentLM(vocab_size=tok.vocab_size, embedding_dim=8, hidden_units=8, tokenizer=tok)
        >>> base = tempfile.mkdtemp()
        >>> path = export(model, base)
        >>> os.path.relpath(path, base), sorted(os.listdir(path))
        ('1', ['assets', 'batching_params.pbtxt', 'fingerprint.pb', 'saved_model.pb', 'variables'])
        >>> generate = tf.saved_model.load(path).signatures["serving_default"]
        >>> out = generate(prompts=tf.constant(["hello", "wor"]), max_new_tokens=tf.constant([5, 3]),
        ...                temperature=tf.constant([0.8]), top_k=tf.constant([0]), top_p=tf.constant([1.0]),
        ...                seed=tf.constant([7], tf.int64))
        >>> out["num_tokens"].numpy().tolist()
        [5, 3]
        >>> shutil.rmtree(base)
    """
    from keraslm.models import SequenceClassifier

    if isinstance(model, SequenceClassifier):
        raise ValueError("export writes a language model's signatures; export a SequenceClassifier with "
                         "export_classifier")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("export needs a model with a tokenizer (the SavedModel takes and returns text)")
    limit = DEFAULT_LIMIT if max_new_tokens_limit is None else max_new_tokens_limit
    if not is_integer(limit) or not 0 <= limit <= INT32_MAX:
        raise ValueError(f"max_new_tokens_limit must be an integer in [0, {INT32_MAX}], got {limit!r}")
    params = None if batch_bucket is None else _batching_params(batch_bucket)
    model.build_for_inference()
    final = _write_version(export_base, version, lambda: ServingModule(model, limit), custom_ops, params)
    log.info("exported %s (signatures: serving_default, score, score_ids, logits; %s ops)", final,
             "custom" if custom_ops else "stock TF")
    return final


def export_classifier(model, export_base, version=None, *, labels=None, custom_ops=False,
                      batch_bucket=(1, 2, 4, 8, 16, 32)):
    """Exports a :class:`~keraslm.models.SequenceClassifier` as ``export_base/<version>/`` for TF Serving.

    The SavedModel's ``serving_default`` signature takes ``text`` (string ``[B]``)
    and returns ``probabilities`` (float32 ``[B, num_classes]``, the softmax of
    the classifier's logits) and, with ``labels``, ``label`` (string ``[B]``, the
    likeliest class's name). The text is tokenized in the graph with the
    classifier's tokenizer, as ``SequenceClassifier.predict`` does. The directory
    is written, checked and published atomically as by :func:`export`, with the
    same stock-op guarantee.

    Args:
        model: a SequenceClassifier with a tokenizer (its own or its backbone's).
        export_base: the model's base directory; created if needed.
        version: integer version directory; default 1 + the highest existing one.
        labels: the class names in class-id order (``num_classes`` strings), or None.
        custom_ops: keep keraslm's custom ops (see :func:`export`).
        batch_bucket: batch sizes for ``batching_params.pbtxt`` (see :func:`export`); None writes no file.

    Returns:
        The path of the new version directory.

    Raises:
        ValueError: not a classifier, no tokenizer, bad labels, a bad or existing
            version, or an ``export_base`` that is not a directory.
        RuntimeError: the graph uses custom ops or XLA although it must not.

    Example:
        >>> import tempfile
        >>> from keraslm.data import WordTokenizer
        >>> from keraslm.models import RecurrentLM, SequenceClassifier
        >>> tok = WordTokenizer(vocabulary=["good", "bad", "film"])
        >>> clf = SequenceClassifier(RecurrentLM(tok.vocab_size, 8, 8, tokenizer=tok), num_classes=2)
        >>> base = tempfile.mkdtemp()
        >>> path = export_classifier(clf, base, labels=["negative", "positive"])
        >>> classify = tf.saved_model.load(path).signatures["serving_default"]
        >>> out = classify(text=tf.constant(["good film", "bad"]))
        >>> out["probabilities"].shape, out["label"].shape
        (TensorShape([2, 2]), TensorShape([2]))
        >>> shutil.rmtree(base)
    """
    from keraslm.models import SequenceClassifier

    if not isinstance(model, SequenceClassifier):
        raise ValueError(f"export_classifier needs a SequenceClassifier, got {type(model).__name__} (export a "
                         "language model with export)")
    if model.text_tokenizer is None:
        raise ValueError("export_classifier needs a classifier with a tokenizer, its own or its backbone's (the "
                         "SavedModel takes text)")
    if labels is not None:
        if isinstance(labels, (str, bytes)):
            raise ValueError(f"labels must be a list of class names, got a single string {labels!r}")
        labels = list(labels)
        if len(labels) != model.num_classes or not all(isinstance(n, str) for n in labels):
            raise ValueError(f"labels must be {model.num_classes} class names (strings, in class-id order), "
                             f"got {labels!r}")
    params = None if batch_bucket is None else _batching_params(batch_bucket)
    if not model.built:
        model(tf.zeros([1, 1], tf.int32))
    final = _write_version(export_base, version, lambda: ClassifierServingModule(model, labels), custom_ops,
                           params)
    log.info("exported %s (signature: serving_default, text -> probabilities%s; %s ops)", final,
             ", label" if labels is not None else "", "custom" if custom_ops else "stock TF")
    return final


def _write_version(export_base, version, make_module, custom_ops, params):
    """Saves ``make_module()`` (traced under the ops implementation ``custom_ops`` asks for) with its
    ``signatures()`` as ``export_base/<version>`` through a temporary directory; returns that path."""
    export_base = os.fspath(export_base)
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ValueError(f"export base {export_base} exists and is not a directory")
    try:
        os.makedirs(export_base, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the export base {export_base}: {e}") from None
    remove_stale_temporaries(export_base)             # what killed exports left behind
    if version is None:
        version = next_version(export_base)
    non_negative_int("version", version)
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise ValueError(f"version {version} already exists at {final}; choose another version")

    tmp = temporary_directory(export_base, f"export-{version}-")
    try:
        quiet = {name: logging.getLogger(name).level for name in ("tensorflow", "absl")}
        for name in quiet:                                # TF's notes on renamed captures and assets
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            with ops.implementation_scope("custom" if custom_ops else "reference"):
                module = make_module()
                tf.saved_model.save(module, tmp, signatures=module.signatures())
        finally:
            for name, level in quiet.items():
                logging.getLogger(name).setLevel(level)
        check_stock_ops(tmp, allow_custom=custom_ops)
        if params is not None:
            with open(os.path.join(tmp, "batching_params.pbtxt"), "w") as f:
                f.write(params)
        try:
            publish_directory(tmp, final)
        except FileExistsError:
            raise ValueError(f"version {version} already exists at {final}; choose another version") from None
        except OSError as e:
            raise ValueError(f"cannot move the export into {final}: {e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
