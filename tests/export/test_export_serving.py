"""The exported SavedModel, loaded by a process with TensorFlow only, reproduces the model exactly."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keraslm.export import DEFAULT_LIMIT

KINDS = ["transformer", "recurrent"]
PROMPTS = ["hello", "", "the quick brown fox jumps over the lazy dog", "JQX wo"]  # empty; too long; unknown chars
SETTINGS = ("max_new_tokens", "temperature", "top_k", "top_p", "seed")
DTYPES = {"prompts": "string", "max_new_tokens": "int32", "temperature": "float32", "top_k": "int32",
          "top_p": "float32", "seed": "int64", "token_ids": "int32", "lengths": "int32"}
CASES = {
    "greedy": dict(max_new_tokens=12, temperature=0.0, top_k=0, top_p=1.0, seed=0),
    "temperature-top_k": dict(max_new_tokens=12, temperature=0.8, top_k=5, top_p=1.0, seed=123),
    "top_p": dict(max_new_tokens=12, temperature=1.0, top_k=0, top_p=0.9, seed=2**40 + 5),
    # the long prompt keeps 29 tokens for its 3 new ones while row 0 goes on: finished rows must stay in context
    "per-row": dict(max_new_tokens=[12, 0, 3, 7], temperature=[0.0, 0.7, 1.2, 0.9], top_k=[0, 3, 0, 10],
                    top_p=[1.0, 0.8, 0.95, 1.0], seed=-7),
    # past the transformer's 32-token context: the rows slide their windows, at different steps
    "past-context": dict(max_new_tokens=[70, 40, 55, 5], temperature=0.9, top_k=8, top_p=1.0, seed=31),
}
ROW_SEEDS = [11, 12, 13, 14]
SCORE_TEXTS = ["hello world", "the lazy dog", "h", "", "the quick brown fox jumps over the lazy dog\nhello world"]
LOGIT_IDS = [[3, 4, 5, 6, 2, 9, 1], [10, 11, 12, 0, 0, 0, 0]]


def tf2(signature, **inputs):
    return {"api": "tf2", "signature": signature,
            "inputs": {k: [v, DTYPES[k]] for k, v in inputs.items()}}


def per_row(case):
    """The case with every setting as one value per prompt (what TF Serving's row format delivers)."""
    return {k: v if isinstance(v, list) else [v] * len(PROMPTS) for k, v in case.items()}


def requests(limit):
    reqs = {}
    for name, case in CASES.items():
        tensors = {k: v if isinstance(v, list) else [v] for k, v in case.items()}   # [B] or [1]
        reqs[f"{name}/tf2"] = tf2("serving_default", prompts=PROMPTS, **tensors)
        rows = per_row(case)
        reqs[f"{name}/rest-rows"] = {"api": "rest", "body": {"instances": [
            {"prompts": p, **{k: rows[k][i] for k in SETTINGS}} for i, p in enumerate(PROMPTS)]}}
        if not any(isinstance(v, list) for v in case.values()):      # columnar format: JSON numbers -> scalars
            reqs[f"{name}/rest-columns"] = {"api": "rest", "body": {"inputs": {"prompts": PROMPTS, **case}}}
    reqs["row-seeds/tf2"] = tf2("serving_default", prompts=PROMPTS, max_new_tokens=[10], temperature=[1.0],
                                top_k=[0], top_p=[1.0], seed=ROW_SEEDS)
    reqs["score"] = tf2("score", prompts=SCORE_TEXTS)
    reqs["score/rest"] = {"api": "rest", "body": {"signature_name": "score", "instances": [
        {"prompts": t} for t in SCORE_TEXTS]}}
    reqs["logits"] = tf2("logits", token_ids=LOGIT_IDS)
    good = dict(prompts=["hello", "the"], max_new_tokens=[4], temperature=[1.0], top_k=[0], top_p=[1.0], seed=[1])
    bad = {"temperature": dict(temperature=[-1.0]), "temperature-nan": dict(temperature=[float("nan")]),
           "top_p": dict(top_p=[0.0]), "top_p-above-1": dict(top_p=[1.5]), "top_k": dict(top_k=[-1]),
           "max_new_tokens": dict(max_new_tokens=[limit + 1]), "max_new_tokens-negative": dict(max_new_tokens=[-1]),
           "max_new_tokens-shape": dict(max_new_tokens=[1, 2, 3])}
    for name, change in bad.items():
        reqs[f"invalid/{name}"] = tf2("serving_default", **{**good, **change})
    reqs["invalid/rest/top_p"] = {"api": "rest", "body": {"inputs": {**{k: v[0] for k, v in good.items()},
                                                                     "prompts": ["hello"], "top_p": 2.0}}}
    reqs["invalid/token_ids"] = tf2("logits", token_ids=[[1, 2, 999]])
    reqs["invalid/lengths"] = tf2("score_ids", token_ids=[[1, 2, 3]], lengths=[4])
    return reqs


@pytest.fixture(scope="module")
def served(exported, serve):
    """``served(kind) -> (model, export path, {request name: result})``, one client process per model."""
    cache = {}

    def get(kind):
        if kind not in cache:
            model, path = exported(kind)
            reqs = requests(DEFAULT_LIMIT)
            reqs["score_ids"] = tf2("score_ids", **score_ids_inputs(model))
            cache[kind] = model, path, dict(zip(reqs, serve(path, list(reqs.values()))))
        return cache[kind]

    return get


def token_ids(model, text):
    ids = model.tokenizer.tokenize(text).numpy().tolist()
    return ids[-model.max_length:] if model.max_length else ids


def score_ids_inputs(model):
    rows = [token_ids(model, t) for t in SCORE_TEXTS]
    T = max(len(r) for r in rows)
    return dict(token_ids=[r + [0] * (T - len(r)) for r in rows], lengths=[len(r) for r in rows])


def expected_scores(model, text):
    """(token log-probs, perplexity) from the model's logits, in float64."""
    ids = token_ids(model, text)
    if not ids:
        return [], math.nan
    logits = model(tf.constant([ids])).numpy()[0].astype(np.float64)          # [n, V]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    lp = [0.0] + [logp[t - 1, ids[t]] for t in range(1, len(ids))]
    return lp, math.exp(-np.mean(lp[1:])) if len(ids) > 1 else math.nan


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_generate_equals_model_generate(served, kind, case, reference_ops):
    model, _, results = served(kind)
    want = model.generate(PROMPTS, return_details=True, **CASES[case])
    for name in (f"{case}/tf2", f"{case}/rest-rows", f"{case}/rest-columns"):
        if name not in results:
            continue
        got = results[name]
        if "predictions" in got:
            got = {k: [row[k] for row in got["predictions"]] for k in ("texts", "num_tokens")}
        elif "outputs" in got:
            got = got["outputs"]
        assert got["texts"] == want["texts"], name
        assert got["num_tokens"] == want["num_tokens"], name
    if case == "per-row":
        assert results[f"{case}/tf2"]["num_tokens"][1] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_per_row_seeds_take_their_own_stream(served, kind, reference_ops):
    """Row b with seed s gives row b of generate(..., seed=s): requests batched by a server keep their seeds."""
    model, _, results = served(kind)
    got = results["row-seeds/tf2"]["texts"]
    for b, seed in enumerate(ROW_SEEDS):
        want = model.generate(PROMPTS, 10, temperature=1.0, seed=seed)
        assert got[b] == want[b]
    assert len(set(got)) > 1


@pytest.mark.parametrize("kind", KINDS)
def test_score_and_logits_match_the_model(served, kind, reference_ops):
    model, _, results = served(kind)
    score, score_ids = results["score"], results["score_ids"]
    rows = results["score/rest"]["predictions"]
    for i, text in enumerate(SCORE_TEXTS):
        lp, ppl = expected_scores(model, text)
        n = len(lp)
        for got in (score, score_ids, {k: [r[k] for r in rows] for k in rows[0]}):
            assert got["num_tokens"][i] == n
            np.testing.assert_allclose(got["token_logprobs"][i][:n], lp, atol=1e-5)
            assert not any(got["token_logprobs"][i][n:])
            if math.isnan(ppl):
                assert math.isnan(got["perplexity"][i])
            else:
                assert got["perplexity"][i] == pytest.approx(ppl, rel=1e-4)
    np.testing.assert_allclose(results["logits"]["logits"], model(tf.constant(LOGIT_IDS)).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_inputs_name_the_input(served, kind):
    _, _, results = served(kind)
    invalid = {k: v for k, v in results.items() if k.startswith("invalid/")}
    assert len(invalid) == 11
    for name, got in invalid.items():
        setting = name.split("/")[-1].split("-")[0]
        assert got.get("error") == "InvalidArgumentError", (name, got)
        assert f"{setting} must" in got["message"], (name, got["message"][:500])
