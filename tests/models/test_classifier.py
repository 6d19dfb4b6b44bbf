"""SequenceClassifier as a product: text in predict, a text SavedModel, frozen layers and the unused LM head."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keraslm.cli import main
from keraslm.data import WordTokenizer
from keraslm.export import export, export_classifier
from keraslm.models import RecurrentLM, SequenceClassifier, TransformerLM

GOOD = ["good", "great", "fine", "lovely", "superb"]
BAD = ["bad", "awful", "poor", "dull", "boring"]
OTHER = ["the", "film", "plot", "was", "a", "very", "and"]
LABELS = ["negative", "positive"]


def tokenizer():
    return WordTokenizer(vocabulary=GOOD + BAD + OTHER)


def sentences(rng, n, unknown=True):
    """Random sentences of vocabulary words (and words the tokenizer does not know), empty ones included."""
    words = GOOD + BAD + OTHER + (["zebra", "Quantum"] if unknown else [])
    out = [" ".join(rng.choice(words, rng.integers(0, 9))) for _ in range(n)]
    out[0] = ""
    return out


def labelled(rng, n):
    """``(texts, labels)``: label 1 when the sentence has more good words than bad ones."""
    texts, labels = [], []
    for _ in range(n):
        words = list(rng.choice(OTHER, rng.integers(1, 4))) + list(rng.choice(GOOD + BAD, rng.integers(1, 3)))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(int(sum(w in GOOD for w in words) > sum(w in BAD for w in words)))
    return texts, np.array(labels, np.int32)


def make(kind="recurrent", tok="backbone", **kwargs):
    keras.utils.set_random_seed(0)
    t = tokenizer()
    backbone_tok = t if tok == "backbone" else None
    if kind == "recurrent":
        backbone = RecurrentLM(t.vocab_size, 8, 12, cell="gru", tokenizer=backbone_tok)   # untied head
    else:
        backbone = TransformerLM(vocab_size=t.vocab_size, max_length=6, num_layers=1, num_heads=2, width=8,
                                 tie_embeddings=False, tokenizer=backbone_tok)
    return SequenceClassifier(backbone, num_classes=2, tokenizer=t if tok == "own" else None, **kwargs)


def ids_of(texts, limit=None):
    rows = tokenizer().tokenize(tf.constant(texts))
    if limit is not None:
        rows = rows[:, :limit]
    return rows.to_tensor(0).numpy()


def compile_(clf, rate=1e-2):
    clf.compile(optimizer=keras.optimizers.Adam(rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return clf


# -- raw text in predict / __call__ ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["recurrent", "transformer"])
def test_text_inputs_equal_token_ids(rng, kind):
    clf = make(kind, pooling="mean" if kind == "transformer" else "last")
    texts = sentences(rng, 7) + ["good " * 9]                      # one longer than the transformer's context
    limit = 6 if kind == "transformer" else None
    ids = ids_of(texts, limit)
    if ids.shape[1] == 0:
        ids = np.zeros((len(texts), 1), np.int32)
    want = clf.predict(ids, verbose=0)
    np.testing.assert_array_equal(clf.tokenize(texts).numpy()[:, :ids.shape[1]], ids)
    forms = {"list": texts, "tuple": tuple(texts), "numpy str": np.array(texts),
             "numpy bytes": np.array([t.encode() for t in texts], dtype=object),
             "column": np.array(texts)[:, None], "tensor": tf.constant(texts)}
    for name, x in forms.items():
        np.testing.assert_allclose(clf(x).numpy(), want, atol=1e-6, err_msg=name)
        if name in ("list", "numpy bytes", "column"):
            np.testing.assert_allclose(clf.predict(x, verbose=0), want, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(clf.predict(texts, batch_size=3, verbose=0), want, atol=1e-6)
    one = clf.predict(texts[3], verbose=0)                         # a single string: one row
    assert one.shape == (1, 2)
    np.testing.assert_allclose(one[0], want[3], atol=1e-6)
    np.testing.assert_allclose(clf(texts[3]).numpy()[0], want[3], atol=1e-6)


def test_text_without_a_tokenizer_is_a_clear_error(rng):
    clf = make(tok=None)
    ids = ids_of(["good film", "bad"])
    assert clf.predict(ids, verbose=0).shape == (2, 2)            # ids keep working
    for x in ("good film", ["good film", "bad"], np.array(["bad"]), tf.constant(["bad"])):
        with pytest.raises(ValueError, match="got text but has no tokenizer"):
            clf.predict(x, verbose=0)
        with pytest.raises(ValueError, match="got text but has no tokenizer"):
            clf(x)
    with pytest.raises(ValueError, match="got text but has no tokenizer"):
        clf.tokenize(["bad"])
    with pytest.raises(ValueError, match=r"shape \[N\] \(or \[N, 1\]\)"):
        make().predict(np.array([["a", "b"], ["c", "d"]]), verbose=0)


def test_pad_id_defaults_to_the_tokenizers():
    assert make().pad_id == tokenizer().pad_id == 0
    assert make(tok=None).pad_id == 0
    assert make(pad_id=3).pad_id == 3


# -- the unused LM head -----------------------------------------------------------------------------

def gradient_warnings(record):
    return [str(w.message) for w in record if "Gradients do not exist" in str(w.message)]


@pytest.mark.parametrize("kind", ["recurrent", "transformer"])
def test_fit_has_no_missing_gradients(rng, kind):
    clf = compile_(make(kind))
    texts, y = labelled(rng, 32)
    x = ids_of(texts, 6 if kind == "transformer" else None)
    clf(x[:1])
    head = {id(v) for layer in clf.backbone.head_layers() for v in layer.weights}
    assert len(head) >= 1
    assert not head & {id(v) for v in clf.trainable_weights} and not head & {id(v) for v in clf.trainable_variables}
    assert head <= {id(v) for v in clf.non_trainable_weights} and head <= {id(v) for v in clf.non_trainable_variables}
    assert len(clf.trainable_weights) + len(clf.non_trainable_weights) == len(clf.weights)
    before = [v.numpy() for v in clf.backbone.head_layers()[0].weights]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clf.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert gradient_warnings(record) == []
    for b, v in zip(before, clf.backbone.head_layers()[0].weights):
        np.testing.assert_array_equal(v.numpy(), b)

    if kind != "recurrent":
        return
    # The same capture sees the warning when the head is counted as trainable (what it was before).
    clf.backbone.head_layers = lambda: []
    compile_(clf)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clf.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert gradient_warnings(record), "the warning capture does not work"


def test_fit_on_a_dataset_of_text(rng):
    clf = compile_(make(pooling="mean"))
    texts, y = labelled(rng, 64)
    ds = tf.data.Dataset.from_tensor_slices((texts, y)).batch(16)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        hist = clf.fit(ds, epochs=8, verbose=0)
    assert gradient_warnings(record) == []
    assert hist.history["loss"][-1] < hist.history["loss"][0]


# -- frozen layers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("freeze", ["embedding", "backbone"])
def test_frozen_layers_stay_frozen_after_save_and_load(rng, tmp_path, freeze):
    clf = make()
    texts, y = labelled(rng, 32)
    x = ids_of(texts)
    clf(x[:1])
    if freeze == "embedding":
        clf.backbone.embedding.trainable = False
        frozen, layer = ["backbone.embedding"], lambda m: m.backbone.embedding
    else:
        clf.backbone.trainable = False
        frozen, layer = ["backbone"], lambda m: m.backbone
    assert clf.frozen_layers() == frozen
    compile_(clf).fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "clf.keras")
    clf.save(path)

    loaded = keras.saving.load_model(path)
    assert loaded.frozen_layers() == frozen and loaded.get_config()["frozen"] == frozen
    assert not layer(loaded).trainable and layer(loaded).weights
    assert all(not v.trainable for v in layer(loaded).weights)
    frozen_ids = {id(v) for v in layer(loaded).weights}
    assert not frozen_ids & {id(v) for v in loaded.trainable_weights}
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), clf.predict(x, verbose=0))
    before = [v.numpy() for v in layer(loaded).weights]
    head_before = loaded.classifier.kernel.numpy()
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)            # the loaded optimizer, compiled from the file
    for b, v in zip(before, layer(loaded).weights):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    assert not np.array_equal(loaded.classifier.kernel.numpy(), head_before)   # it did train


def test_frozen_argument():
    clf = make(frozen=["backbone.rnns.0"])
    assert not clf.backbone.rnns[0].trainable and clf.backbone.embedding.trainable
    clf(np.ones((1, 2), np.int32))
    assert all(not v.trainable for v in clf.backbone.rnns[0].weights)
    assert clf.frozen_layers() == ["backbone.rnns.0"]
    with pytest.raises(ValueError, match="'backbone.embeding' names no layer"):
        make(frozen=["backbone.embeding"])


def test_round_trip_keeps_tokenizer_and_settings(rng, tmp_path):
    clf = make(tok="own", pooling="max", dropout=0.1)
    texts = sentences(rng, 5)
    want = clf.predict(texts, verbose=0)
    path = str(tmp_path / "clf.keras")
    clf.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.backbone.tokenizer is None and loaded.tokenizer.vocabulary == tokenizer().vocabulary
    assert (loaded.pooling, loaded.dropout, loaded.pad_id, loaded.num_classes) == ("max", 0.1, 0, 2)
    np.testing.assert_array_equal(loaded.predict(texts, verbose=0), want)
    assert make().get_config()["tokenizer"] is None               # the backbone's is saved once, with it


# -- export --------------------------------------------------------------------------------------------

def check_export(path, clf, rng, labels):
    texts = sentences(rng, 9)
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    (spec,) = fn.structured_input_signature[1].values()
    assert list(fn.structured_input_signature[1]) == ["text"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    outputs = fn.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32
    assert set(outputs) == ({"probabilities", "label"} if labels else {"probabilities"})
    out = fn(text=tf.constant(texts))
    want = keras.ops.convert_to_numpy(keras.ops.softmax(clf.predict(texts, verbose=0), axis=-1))
    assert out["probabilities"].shape == (len(texts), clf.num_classes)
    np.testing.assert_allclose(out["probabilities"].numpy(), want, atol=1e-5, rtol=0)
    if labels:
        assert [s.decode() for s in out["label"].numpy()] == [labels[i] for i in want.argmax(-1)]


@pytest.mark.parametrize("kind, labels", [("recurrent", LABELS), ("transformer", None)])
def test_export_classifier_matches_predict(rng, tmp_path, kind, labels):
    clf = make(kind, pooling="mean")
    clf(np.ones((1, 2), np.int32))
    for v in clf.trainable_weights:                                 # confident, varied predictions
        v.assign(rng.normal(0, 0.7, v.shape).astype(np.float32))
    base = tmp_path / "exports"
    (base / "3").mkdir(parents=True)
    bucket = (1, 4) if labels else None
    path = export_classifier(clf, str(base), labels=labels, batch_bucket=bucket)
    assert path == str(base / "4")
    assert sorted(os.listdir(base)) == ["3", "4"]                   # no temporary left behind
    assert {"saved_model.pb", "variables"} <= set(os.listdir(path))
    assert os.path.exists(os.path.join(path, "batching_params.pbtxt")) == bool(labels)
    check_export(path, clf, rng, labels)


def test_export_classifier_errors(tmp_path):
    base = tmp_path / "base"
    with pytest.raises(ValueError, match="needs a classifier with a tokenizer"):
        export_classifier(make(tok=None), str(base))
    with pytest.raises(ValueError, match="labels must be 2 class names"):
        export_classifier(make(), str(base), labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="labels must be a list of class names"):
        export_classifier(make(), str(base), labels="ab")
    with pytest.raises(ValueError, match="export_classifier needs a SequenceClassifier, got RecurrentLM"):
        export_classifier(make().backbone, str(base))
    with pytest.raises(ValueError, match="export a SequenceClassifier with export_classifier"):
        export(make(), str(base))
    assert not base.exists() or os.listdir(base) == []


def test_cli_exports_a_saved_classifier(rng, tmp_path, capsys):
    clf = make()
    clf(np.ones((1, 2), np.int32))
    run = tmp_path / "run"
    run.mkdir()
    clf.save(str(run / "model.keras"))
    base = tmp_path / "exports"
    assert main(["export", "--model", str(run), "--out", str(base), "--labels", *LABELS]) == 0
    assert capsys.readouterr().out.strip() == str(base / "1")
    check_export(str(base / "1"), clf, rng, LABELS)

    assert main(["export", "--model", str(run), "--out", str(base), "--max-new-tokens-limit", "5"]) == 2
    assert "--max-new-tokens-limit is for a language model" in capsys.readouterr().err
    clf.backbone.save(str(tmp_path / "lm.keras"))
    assert main(["export", "--model", str(tmp_path / "lm.keras"), "--out", str(base), "--labels", "a", "b"]) == 2
    assert "--labels is for a classifier" in capsys.readouterr().err
    assert sorted(os.listdir(base)) == ["1"]
