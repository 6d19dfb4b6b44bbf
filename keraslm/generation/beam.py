"""Beam search over the ``next(ids, cache, index)`` contract."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keraslm.generation.compiled import compiled


def _build(get_model):
    def prefill(ids, lengths, size):
        B = tf.shape(ids)[0]
        model = get_model()
        logits, cache = model.next(ids, model.init_cache(B, size), tf.zeros([B], tf.int32), valid=lengths)
        return tf.nn.log_softmax(tf.cast(tf.gather(logits, lengths - 1, batch_dims=1), tf.float32)), cache

    def step(tokens, cache, index, parents):
        cache = tf.nest.map_structure(lambda c: tf.gather(c, parents), cache)    # reorder beams (new buffers)
        logits, cache = get_model().next(tokens[:, None], cache, index)
        return tf.nn.log_softmax(tf.cast(logits[:, 0], tf.float32)), cache

    return tf.function(prefill, reduce_retracing=True), tf.function(step, reduce_retracing=True)


def _functions(model):
    return compiled(model, "beam_search", _build)


def _ends_with_stop(seq, stops):
    return any(len(s) <= len(seq) and seq[len(seq) - len(s):] == s for s in stops)


def beam_search(model, batch, num_beams, length_penalty):
    """Returns (new ids per row, their log-probabilities) of the best beam of each row.

    Hypotheses finish at a stop sequence or at the row's ``max_new``; they are
    ranked by ``sum logprob / length ** length_penalty``. A row stops once it
    has ``num_beams`` finished hypotheses and no live beam can beat the best
    of them.
    """
    K = num_beams
    B = len(batch.lengths)
    context = model.max_length
    longest = int(batch.lengths.max() + batch.max_new.max(initial=0))
    if context is not None and longest > context:
        raise ValueError(f"beam search stays within the model's context: prompt plus max_new_tokens is {longest} "
                         f"tokens, more than {context}; sample instead (num_beams=1), which slides past the context")
    stops = [[[int(t) for t in s if t >= 0] for s in row] for row in batch.stop_ids]
    N = int(batch.max_new.max(initial=0))
    ids = np.repeat(batch.ids, K, 0)                                          # [B K, P]
    lengths = np.repeat(batch.lengths, K, 0)                                  # [B K]
    prefill, step = _functions(model)
    logp, cache = prefill(tf.constant(ids), tf.constant(lengths), tf.constant(ids.shape[1] + N))
    scores = np.full((B, K), -np.inf)
    scores[:, 0] = 0.0                                                        # one live beam to start
    seqs = [[[] for _ in range(K)] for _ in range(B)]
    lps = [[[] for _ in range(K)] for _ in range(B)]
    finished = [[] for _ in range(B)]                                         # (norm score, ids, logprobs)
    done = batch.max_new <= 0

    def norm(score, n):
        return score / max(n, 1) ** length_penalty

    for t in range(N):
        lp = logp.numpy().reshape(B, K, -1)                                   # [B, K, V]
        V = lp.shape[-1]
        total = (scores[:, :, None] + lp).reshape(B, K * V)
        parents = np.zeros((B, K), np.int64)
        tokens = np.zeros((B, K), np.int32)
        for b in range(B):
            if done[b]:
                parents[b] = np.arange(K)
                continue
            order = np.argsort(-total[b], kind="stable")[: 2 * K]
            new_scores, new_seqs, new_lps, k = [], [], [], 0
            for c in order:
                if not np.isfinite(total[b, c]):
                    break
                src, tok = divmod(int(c), V)
                seq, lps_b = seqs[b][src] + [tok], lps[b][src] + [float(lp[b, src, tok])]
                if _ends_with_stop(seq, stops[b]) or len(seq) >= batch.max_new[b]:
                    finished[b].append((norm(total[b, c], len(seq)), seq, lps_b))
                    continue
                parents[b, k], tokens[b, k] = src, tok
                new_scores.append(total[b, c])
                new_seqs.append(seq)
                new_lps.append(lps_b)
                k += 1
                if k == K:
                    break
            for j in range(k, K):  # fewer live candidates than beams: park dead beams
                parents[b, j], tokens[b, j] = 0, 0
                new_scores.append(-np.inf)
                new_seqs.append([])
                new_lps.append([])
            scores[b] = new_scores
            seqs[b], lps[b] = new_seqs, new_lps
            best_done = max((f[0] for f in finished[b]), default=-np.inf)
            best_live = max((norm(s, len(q)) for s, q in zip(new_scores, new_seqs) if np.isfinite(s)),
                            default=-np.inf)
            if len(finished[b]) >= K and best_done >= best_live or not np.isfinite(best_live):
                done[b] = True
        if done.all():
            break
        flat_parents = (np.arange(B)[:, None] * K + parents).reshape(-1)
        index = np.repeat(batch.lengths, K) + t
        logp, cache = step(tf.constant(tokens.reshape(-1)), cache, tf.constant(index, tf.int32),
                           tf.constant(flat_parents))
    out_ids, out_lps = [], []
    for b in range(B):
        pool = finished[b] + [(norm(s, len(q)), q, lq) for s, q, lq in zip(scores[b], seqs[b], lps[b])
                              if np.isfinite(s) and q]
        best = max(pool, key=lambda f: f[0]) if pool else (0.0, [], [])
        out_ids.append(best[1])
        out_lps.append(best[2])
    return out_ids, out_lps
