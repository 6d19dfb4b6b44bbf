"""The compiled sampling loop over the ``next(ids, cache, index)`` contract.

One ``tf.function`` per model, traced once (every dimension is dynamic and
every sampler setting is a tensor), runs: prefill of the right-padded prompts
in one pass, then a ``tf.while_loop`` of sample -> stop check -> one-token
``next``. Coins come from a stateless RNG folded with the step, so a seed
gives the same tokens here, in the step-by-step streaming path, with
``keraslm._C``'s sampler and in an exported SavedModel.

Past the context. A model with a context of ``C`` tokens (``max_length``)
generates as long as asked: when a row's next token would fall outside the
context, the row slides its window. It re-encodes its last
:func:`window_size` ``(C)`` tokens (the new one included) from position 0 in
one pass, into a fresh cache, and goes on decoding from there; a quarter of
the context is then free again, so the re-encoding costs about three prompt
tokens per generated token. Each row slides on its own (what a row generates
does not depend on the other rows), and every path (this loop, streaming, the
exported SavedModel) runs the same step, so a seed gives the same text on all.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from keraslm import ops


def step_coins(seed, t, batch_size):
    """The uniform coins of decoding step ``t``: ``[B]`` float32 in [0, 1).

    ``seed`` is one int32 ``[2]`` seed for the batch, or ``[B, 2]`` with one
    seed per row (the exported SavedModel's input, where a server may batch
    requests with different seeds): row ``b`` then takes coin ``b`` of its
    own seed's stream, so rows that share a seed get exactly the coins of
    that seed given as ``[2]``.
    """
    if seed.shape.rank == 2:
        return _per_row_coins(seed, t, batch_size)
    return tf.random.stateless_uniform([batch_size], seed=tf.random.experimental.stateless_fold_in(seed, t))


def _per_row_coins(seeds, t, batch_size):
    first = tf.concat([seeds, tf.zeros([1, 2], seeds.dtype)], 0)[0]          # [2]; safe for B = 0
    shared = tf.reduce_all(tf.equal(seeds, first[None, :]))

    def own_stream(b):
        return step_coins(seeds[b], t, b + 1)[b]

    return tf.cond(shared, lambda: step_coins(first, t, batch_size),
                   lambda: tf.map_fn(own_stream, tf.range(batch_size), fn_output_signature=tf.float32))


def stop_hit(seq, index, generated, stop_ids):
    """[B] bool: the tokens ending at position ``index[b]`` match one of the row's stop sequences.

    seq: [B, L] ids so far; stop_ids: [B, NS, LS] left padded with -1; a stop
    only matches tokens generated in this call (``generated`` of them, a scalar).
    """
    NS, LS = tf.shape(stop_ids)[1], tf.shape(stop_ids)[2]
    pos = index[:, None] - LS + 1 + tf.range(LS)[None, :]                    # [B, LS]
    window = tf.gather(seq, tf.maximum(pos, 0), batch_dims=1)                 # [B, LS]
    window = tf.where(pos >= 0, window, -2)
    used = stop_ids >= 0                                                      # [B, NS, LS]
    same = tf.logical_or(~used, tf.equal(stop_ids, window[:, None, :]))
    length = tf.reduce_sum(tf.cast(used, tf.int32), -1)                       # [B, NS]
    match = tf.reduce_all(same, -1) & (length > 0) & (length <= generated)
    return tf.logical_and(NS > 0, tf.reduce_any(match, -1))


def make_sampling_loop(model, precision="float32"):
    """Builds the compiled loop for ``model`` (see the module docstring).

    The returned function takes (prompt_ids [B, P], lengths [B], max_new [B],
    temperature, top_k, top_p, min_p, repetition_penalty [B], seed [2],
    stop_ids [B, NS, LS]) and returns (new_ids [B, N] padded with -1,
    num_tokens [B], logprobs [B, N]). Its one-token steps read the weights in
    ``precision`` (:meth:`~keraslm.models.CausalLM.decoding_precision`).
    """
    return build_sampling_loop(lambda: model, precision)


def build_sampling_loop(get_model, precision="float32"):
    """:func:`make_sampling_loop` for the model that ``get_model()`` returns when the loop is traced
    (see :mod:`keraslm.generation.compiled`: the loop then does not keep the model alive)."""
    spec = tf.TensorSpec
    signature = [spec([None, None], tf.int32), spec([None], tf.int32), spec([None], tf.int32),
                 spec([None], tf.float32), spec([None], tf.int32), spec([None], tf.float32),
                 spec([None], tf.float32), spec([None], tf.float32), spec([2], tf.int32),
                 spec([None, None, None], tf.int32)]

    @tf.function(input_signature=signature, jit_compile=False)
    def loop(prompt_ids, lengths, max_new, temperature, top_k, top_p, min_p, penalty, seed, stop_ids):
        model = get_model()
        with decoding_precision(model, precision):  # weight copies, if any, made here: once per call
            return sampling_loop(model, prompt_ids, lengths, max_new, temperature, top_k, top_p, min_p,
                                 penalty, seed, stop_ids)

    return loop


def decoding_precision(model, precision):
    """``model.decoding_precision(precision)``; float32 needs nothing from the model (the loop's contract is
    only ``init_cache`` / ``next``)."""
    if precision == "float32":
        return contextlib.nullcontext()
    if not hasattr(model, "decoding_precision"):
        raise ValueError(f"{type(model).__name__} decodes in float32 only, got precision={precision!r}")
    return model.decoding_precision(precision)


def window_size(context):
    """Tokens a row keeps when it slides its window past a context of ``context`` tokens."""
    return max(1, context - max(1, context // 4))


def cache_size(model, P, N):
    """Cache positions a decode of ``P`` prompt and ``N`` new tokens needs: ``P + N``, at most the context."""
    return P + N if model.max_length is None else tf.minimum(P + N, model.max_length)


def prefill(model, prompt_ids, lengths, max_new):
    """Runs the prompts through the model in one pass (prompts must fit the context).

    Returns (last logits [B, V], cache sized for P + max(max_new) tokens or the
    context, seq [B, P + N]: the prompt ids then -1 slots for new tokens).
    """
    B, P = tf.shape(prompt_ids)[0], tf.shape(prompt_ids)[1]
    N = tf.reduce_max(tf.concat([max_new, [0]], 0))
    cache = model.init_cache(B, cache_size(model, P, N))                      # ours: next() fills it in place
    logits, cache = model.next(prompt_ids, cache, tf.zeros([B], tf.int32), valid=lengths)   # [B, P, V]
    last = tf.gather(logits, lengths - 1, batch_dims=1)                      # [B, V]
    seq = tf.where(tf.range(P)[None, :] < lengths[:, None], prompt_ids, -1)  # -1: the sampler's pad
    seq = tf.concat([seq, -tf.ones([B, N], tf.int32)], 1)                     # [B, P + N]
    return last, cache, seq


def decode_step(model, t, done, last, cache, seq, offset, lengths, max_new, temperature, top_k, top_p, min_p,
                penalty, seed, stop_ids):
    """One decoding step: sample from ``last``, record, check stops, run the new token.

    ``offset[b]`` is how many leading tokens of row ``b`` the model no longer
    sees (the row has slid its window that far; 0 until it first does), so the
    new token at ``seq`` position ``lengths + t`` sits at model position
    ``lengths + t - offset``.

    Returns (ids [B] (-1 for finished rows), logprobs [B], done [B], last, cache, seq, offset).
    The cache is updated in place: the caller must use only the returned one.
    """
    B = tf.shape(last)[0]
    coins = step_coins(seed, t, B)
    ids, lp = ops.sample(tf.cast(last, tf.float32), coins, temperature, top_k, top_p, min_p, penalty,
                         previous_ids=seq, pad_id=-1)
    active = tf.logical_not(done)
    index = lengths + t                                                       # [B] position of the new token
    ids = tf.where(active, ids, -1)
    lp = tf.where(active, lp, 0.0)
    seq = tf.tensor_scatter_nd_update(seq, tf.stack([tf.range(B), index], 1), ids)
    done = done | stop_hit(seq, index, t + 1, stop_ids) | (t + 1 >= max_new)
    position = index - offset                                                 # [B] in the model's view
    context = model.max_length
    slide = tf.zeros([B], tf.bool) if context is None else ~done & (position >= context)
    # Finished rows (whose logits are unused) and rows about to slide feed position 0, so that no row
    # ever steps past the model's context while the others go on.
    logits, cache = model.next(tf.maximum(ids, 0)[:, None], cache, tf.where(done | slide, 0, position))
    last = logits[:, 0]
    if context is not None:
        last, cache, offset = tf.cond(
            tf.reduce_any(slide), lambda: _slide(model, slide, index, seq, last, cache, offset),
            lambda: (last, cache, offset))
    return ids, lp, done, last, cache, seq, offset


def _slide(model, slide, index, seq, last, cache, offset):
    """Rows where ``slide`` re-encode their last ``window_size`` tokens (ending with the token just sampled
    at ``index``) from position 0 into a fresh cache; the other rows keep their state."""
    B, W = tf.shape(seq)[0], window_size(model.max_length)
    start = tf.maximum(index - W + 1, 0)                                      # [B] first seq position kept
    cols = tf.minimum(start[:, None] + tf.range(W)[None, :], index[:, None])  # [B, W]
    window = tf.maximum(tf.gather(seq, cols, batch_dims=1), 0)               # [B, W] token ids
    valid = tf.minimum(index + 1 - start, W)                                  # [B]
    capacity = cache_size(model, tf.shape(seq)[1], 0)                        # as prefill sized it: P + N tokens
    logits, fresh = model.next(window, model.init_cache(B, capacity), tf.zeros([B], tf.int32), valid=valid)
    fresh_last = tf.gather(logits, valid - 1, batch_dims=1)                  # [B, V]

    def pick(new, old):                                                       # per row: new where sliding
        mask = tf.reshape(slide, tf.concat([[B], tf.ones([tf.rank(old) - 1], tf.int32)], 0))
        return tf.where(mask, new, old)

    cache = tf.nest.map_structure(pick, fresh, cache)
    return pick(fresh_last, last), cache, tf.where(slide, start, offset)


def sampling_loop(model, prompt_ids, lengths, max_new, temperature, top_k, top_p, min_p, penalty, seed,
                  stop_ids):
    """The decoding graph (callable eagerly too)."""
    B = tf.shape(prompt_ids)[0]
    N = tf.reduce_max(tf.concat([max_new, [0]], 0))
    last, cache, seq = prefill(model, prompt_ids, lengths, max_new)
    out = -tf.ones([B, N], tf.int32)                                          # [B, N]
    out_lp = tf.zeros([B, N], tf.float32)
    rows = tf.range(B)

    def cond(t, done, *_):
        return tf.logical_and(t < N, tf.logical_not(tf.reduce_all(done)))

    def body(t, done, last, cache, seq, offset, out, out_lp):
        ids, lp, done, last, cache, seq, offset = decode_step(
            model, t, done, last, cache, seq, offset, lengths, max_new, temperature, top_k, top_p, min_p, penalty,
            seed, stop_ids)
        col = tf.stack([rows, tf.fill([B], t)], 1)
        out = tf.tensor_scatter_nd_update(out, col, ids)
        out_lp = tf.tensor_scatter_nd_update(out_lp, col, lp)
        return t + 1, done, last, cache, seq, offset, out, out_lp

    dynamic = lambda x: tf.TensorShape([None] * x.shape.rank)  # noqa: E731
    state = (tf.constant(0), max_new <= 0, last, cache, seq, tf.zeros([B], tf.int32), out, out_lp)
    _, _, _, _, _, _, out, out_lp = tf.while_loop(
        cond, body, state, shape_invariants=tf.nest.map_structure(dynamic, state), parallel_iterations=1)
    num_tokens = tf.reduce_sum(tf.cast(out >= 0, tf.int32), 1)
    return out, num_tokens, out_lp
