"""The export's on-disk contract: TF Serving layout, signatures, stock ops only, atomic versions."""

import doctest
import os
import re
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

import keraslm
from keraslm import export as export_module
from keraslm.export import check_stock_ops, export, graph_op_types, next_version

# signature -> {"inputs" | "outputs": {name: (dtype, shape)}}; V is filled in per model.
SIGNATURES = {
    "serving_default": {
        "inputs": {"prompts": ("DT_STRING", "(-1)"), "max_new_tokens": ("DT_INT32", "(-1)"),
                   "temperature": ("DT_FLOAT", "(-1)"), "top_k": ("DT_INT32", "(-1)"),
                   "top_p": ("DT_FLOAT", "(-1)"), "seed": ("DT_INT64", "(-1)")},
        "outputs": {"texts": ("DT_STRING", "(-1)"), "num_tokens": ("DT_INT32", "(-1)")}},
    "score": {
        "inputs": {"prompts": ("DT_STRING", "(-1)")},
        "outputs": {"token_logprobs": ("DT_FLOAT", "(-1, -1)"), "num_tokens": ("DT_INT32", "(-1)"),
                    "perplexity": ("DT_FLOAT", "(-1)")}},
    "score_ids": {
        "inputs": {"token_ids": ("DT_INT32", "(-1, -1)"), "lengths": ("DT_INT32", "(-1)")},
        "outputs": {"token_logprobs": ("DT_FLOAT", "(-1, -1)"), "num_tokens": ("DT_INT32", "(-1)"),
                    "perplexity": ("DT_FLOAT", "(-1)")}},
    "logits": {
        "inputs": {"token_ids": ("DT_INT32", "(-1, -1)")},
        "outputs": {"logits": ("DT_FLOAT", "(-1, -1, {V})")}},
}


def saved_model_cli_show(path):
    exe = shutil.which("saved_model_cli")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd + ["show", "--dir", path, "--all"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def parse_signatures(text):
    """saved_model_cli's SignatureDef listing -> {signature: {"inputs"/"outputs": {name: (dtype, shape)}}}."""
    found, sig, side = {}, None, None
    for line in text.splitlines():
        if m := re.match(r"signature_def\['(\w+)'\]:", line):
            sig = found.setdefault(m.group(1), {"inputs": {}, "outputs": {}})
        elif m := re.match(r"\s+(inputs|outputs)\['(\w+)'\] tensor_info:", line):
            side, name = m.groups()
        elif (m := re.match(r"\s+dtype: (\w+)", line)) and sig is not None:
            dtype = m.group(1)
        elif (m := re.match(r"\s+shape: (.*)", line)) and sig is not None:
            sig[side][name] = (dtype, m.group(1).strip())
        elif line.startswith("Concrete Functions"):
            break
    return found


def test_layout_and_signatures(exported):
    model, path = exported("transformer")
    assert os.path.basename(path) == "1"
    assert sorted(os.listdir(os.path.dirname(path))) == ["1"]                    # no temporary left over
    for name in ("saved_model.pb", "variables", "assets", "batching_params.pbtxt"):
        assert os.path.exists(os.path.join(path, name)), name
    assert os.listdir(os.path.join(path, "variables"))
    assert "allowed_batch_sizes: 32" in open(os.path.join(path, "batching_params.pbtxt")).read()
    found = parse_signatures(saved_model_cli_show(path))
    want = {k: {side: {n: (d, s.format(V=model.vocab_size)) for n, (d, s) in v[side].items()} for side in v}
            for k, v in SIGNATURES.items()}
    assert {k: v for k, v in found.items() if not k.startswith("__")} == want


def test_graph_holds_stock_ops_only(exported):
    _, path = exported("transformer")
    types = check_stock_ops(path)
    assert not [t for t in types if t.startswith("Keraslm")]
    assert {"StatelessWhile", "TopKV2", "StatelessRandomUniformV2", "UnicodeDecode"} <= types   # library functions


def test_custom_ops_in_the_graph_are_refused_and_leave_nothing(tmp_path, monkeypatch, make_model):
    """A graph traced with our ops fails the stock-op check after saving; the version is not created."""
    if not keraslm.ops.custom_ops_available():
        pytest.skip(f"custom ops unavailable: {keraslm.ops.load_error()}")
    real_scope = keraslm.ops.implementation_scope
    monkeypatch.setattr(export_module.ops, "implementation_scope", lambda _: real_scope("custom"))
    base = tmp_path / "base"
    with pytest.raises(RuntimeError, match=r"custom ops \['Keraslm>"):
        export(make_model("recurrent"), str(base))
    assert os.listdir(base) == []


def test_failure_while_saving_leaves_no_version(tmp_path, monkeypatch, make_model):
    def broken_save(obj, directory, **kwargs):
        with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
            f.write(b"half written")
        raise OSError("disk full")

    base = tmp_path / "base"
    (base / "3").mkdir(parents=True)
    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export(make_model("recurrent"), str(base))
    assert os.listdir(base) == ["3"]


def test_versions(tmp_path, make_model):
    base = tmp_path / "base"
    for name in ("1", "3", "x", ".tmp-export-9-abc", "12.5"):
        (base / name).mkdir(parents=True)
    (base / "20").write_text("a file, not a version")
    assert next_version(str(base)) == 4
    assert next_version(str(tmp_path)) == 1
    model = make_model("recurrent")
    with pytest.raises(ValueError, match="version 3 already exists"):
        export(model, str(base), 3)
    with pytest.raises(ValueError, match="version must be a non-negative integer"):
        export(model, str(base), -1)
    with pytest.raises(ValueError, match="not a directory"):
        export(model, str(base / "20"))
    with pytest.raises(ValueError, match=r"max_new_tokens_limit must be an integer in \[0, 2147483647\], got -1"):
        export(make_model("transformer"), str(base), max_new_tokens_limit=-1)
    assert sorted(os.listdir(base)) == sorted(["1", "3", "x", ".tmp-export-9-abc", "12.5", "20"])


def test_graph_op_types_reads_library_functions(exported):
    _, path = exported("recurrent")
    types, xla = graph_op_types(path)
    assert xla == []
    assert "While" in types or "StatelessWhile" in types


def test_docstring_example_runs():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [t for t in finder.find(export_module) if t.examples]
    assert tests
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


def test_custom_ops_export_runs_with_the_op_library_loaded(tmp_path, make_model):
    """``custom_ops=True`` keeps the fused ops (decode block, sampler) and gives model.generate's texts."""
    if not keraslm.ops.custom_ops_available():
        pytest.skip(f"custom ops unavailable: {keraslm.ops.load_error()}")
    import tensorflow as tf

    model = make_model("transformer")
    path = export(model, str(tmp_path / "base"), custom_ops=True)
    assert {"Keraslm>DecoderBlockStep", "Keraslm>Sample"} <= export_module.graph_op_types(path)[0]
    fn = tf.saved_model.load(path).signatures["serving_default"]
    prompts = ["hello", "the quick", ""]
    per_row = lambda value, dtype: tf.fill([len(prompts)], tf.constant(value, dtype))  # noqa: E731
    out = fn(prompts=tf.constant(prompts), max_new_tokens=per_row(12, tf.int32), temperature=per_row(0.8, tf.float32),
             top_k=per_row(5, tf.int32), top_p=per_row(0.95, tf.float32), seed=per_row(7, tf.int64))
    texts = [t.decode() for t in out["texts"].numpy()]
    assert texts == model.generate(prompts, max_new_tokens=12, temperature=0.8, top_k=5, top_p=0.95, seed=7)


def test_debris_of_killed_exports_is_removed(tmp_path, make_model):
    import subprocess
    import sys

    from keraslm import atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    base = tmp_path / "base"
    stale = base / f".tmp-{atomic._HOST}-{dead}-export-1-abc"
    (stale / "variables").mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half written")
    path = export(make_model("recurrent"), str(base))
    assert sorted(os.listdir(base)) == [os.path.basename(path)]


def test_word_model_texts_continue_the_prompt(tmp_path):
    """A word model's exported texts join the prompt as model.generate's do (the space between words)."""
    import keras

    import keraslm
    from keraslm.data import WordTokenizer
    from keraslm.models import TransformerLM

    tok = WordTokenizer()
    tok.adapt(["the king is dead , long live the king . my lord , what is this ?"] * 3)
    keras.utils.set_random_seed(5)
    model = TransformerLM(vocab_size=tok.vocab_size, max_length=16, num_layers=1, num_heads=2, width=8,
                          tokenizer=tok)
    path = export(model, str(tmp_path / "base"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    prompts = ["the king", "my lord ,"]
    out = serve(prompts=tf.constant(prompts), max_new_tokens=tf.constant([5, 20]), temperature=tf.constant([0.8]),
                top_k=tf.constant([0]), top_p=tf.constant([1.0]), seed=tf.constant([3], tf.int64))
    with keraslm.ops.implementation_scope("reference"):
        want = model.generate(prompts, max_new_tokens=[5, 20], temperature=0.8, seed=3)
    assert [t.decode() for t in out["texts"].numpy()] == want
    assert all(t.startswith(" ") for t in want)
