"""Run-time policy of a training run (keraslm.precision): the precision settings' values."""

import pytest

import keraslm
from keraslm import precision
from keraslm.training import TrainConfig


def test_mixed_precision_setting_values(monkeypatch):
    for value, expected in (("on", True), ("off", False), (True, True), (False, False), ("true", True)):
        assert precision.use_mixed_precision(TrainConfig(mixed_precision=value).mixed_precision) is expected
    monkeypatch.setattr(keraslm.ops, "bfloat16_matmul_unavailable_reason", lambda: None)
    assert precision.use_mixed_precision(TrainConfig(mixed_precision="auto").mixed_precision)
    monkeypatch.setattr(keraslm.ops, "bfloat16_matmul_unavailable_reason", lambda: "no bfloat16 units")
    assert not precision.use_mixed_precision(TrainConfig(mixed_precision="auto").mixed_precision)
    with pytest.raises(ValueError, match="'sometimes'"):
        precision.use_mixed_precision(TrainConfig(mixed_precision="sometimes").mixed_precision)


def test_matmul_precision_setting_values():
    resolve = precision.resolve_matmul_precision
    assert resolve(TrainConfig(matmul_precision="float32").matmul_precision) == "float32"
    assert resolve(TrainConfig(matmul_precision="BFloat16").matmul_precision) == "bfloat16"
    accelerated = keraslm.ops.amx_bf16_available()
    assert resolve(TrainConfig(matmul_precision="auto").matmul_precision) == ("bfloat16" if accelerated else "float32")
    with keraslm.ops.implementation_scope("reference"):
        assert resolve(TrainConfig(matmul_precision="auto").matmul_precision) == "float32"
    assert TrainConfig.from_preset("gpt-nano").matmul_precision == "auto"
    with pytest.raises(ValueError, match="matmul_precision must be 'float32', 'bfloat16' or 'auto', got 'fp8'"):
        resolve(TrainConfig(matmul_precision="fp8").matmul_precision)


def test_xla_policy_asks_the_model():
    from keraslm.models import RecurrentLM, TransformerLM

    short = TransformerLM(vocab_size=5, max_length=64, num_layers=1, num_heads=1, width=4)
    long = TransformerLM(vocab_size=5, max_length=256, num_layers=1, num_heads=1, width=4)
    recurrent = RecurrentLM(vocab_size=5, embedding_dim=4, hidden_units=4)
    assert precision.use_xla("on", recurrent) and not precision.use_xla("off", short)
    custom = keraslm.ops.implementation() != "reference" and keraslm.ops.custom_ops_available()
    assert precision.use_xla("auto", short)
    assert precision.use_xla("auto", long) == (not custom)
    assert not precision.use_xla("auto", recurrent)
    with pytest.raises(ValueError, match="jit_compile must be 'auto', 'on' or 'off', got 'maybe'"):
        precision.use_xla("maybe", short)
