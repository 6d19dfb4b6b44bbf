"""GPT-2 124M (imported from a Hugging Face checkpoint): generation and fine-tuning against transformers and keras-hub.

Run:  python benchmarks/bench_gpt2.py [--quick]

The GPT-2 small shape (12 layers, 12 heads, 768 wide, 1024 positions, 50257 tokens, 124M parameters) with
random weights: a ``transformers`` ``GPT2LMHeadModel`` is saved with ``save_pretrained`` and imported with
``keraslm.convert.load_hf_gpt2``, so keraslm and transformers run the same weights. Measured in the same
run (medians after a warm-up), each system in a process of its own (torch's and TensorFlow's thread
pools slow each other down when they share a process on a small machine):

* greedy generation, prompt 64 tokens, 128 new tokens, batch 1 and 8: keraslm ``generate`` (compiled
  KV-cache loop; float32, and with the ``precision="bfloat16"`` opt-in, which decodes with bfloat16
  copies of the weight matrices), transformers ``generate`` (torch CPU, float32, KV cache, ``torch.no_grad``, never
  stopping early) and keras-hub ``GPT2CausalLM.generate`` (same shape, its own random weights, greedy
  sampler, jit on); tokens/s and ratios;
* the memory-bandwidth bound of a decoding step: the weights it reads (all parameters but the position
  table: the tied embedding is read whole as the LM head; float32, or 2 bytes for the matrices in
  bfloat16) over the copy bandwidth of a large numpy copy measured in this run (read + write bytes per
  second);
* fine-tuning tokens/s, batch 4 x 256 tokens: keraslm ``fit`` on the imported model compiled by the
  training harness (AdamW, the harness's XLA choice) against a plain torch loop (AdamW, train mode) of
  the same transformers model. Both with dropout 0.1 (GPT-2's).

Internal: ``--only SYSTEM --dir DIR --batch B`` runs one measurement and prints it as JSON.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import copy_bandwidth, cpu_model, header, median_time  # noqa: E402

from keraslm import ops  # noqa: E402
from keraslm.convert import load_hf_gpt2  # noqa: E402
from keraslm.precision import use_xla  # noqa: E402
from keraslm.training import TrainConfig, compile_model  # noqa: E402

V, LAYERS, HEADS, WIDTH, CONTEXT = 50257, 12, 12, 768, 1024
PROMPT, NEW = 64, 128
TRAIN_BATCH, TRAIN_T = 4, 256


def save_hf(directory):
    """A random-weight GPT-2 124M saved with transformers (the weights keraslm and transformers both run)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=V, n_positions=CONTEXT, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)


def load_hf(directory):
    import transformers

    hf = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    hf.generation_config.eos_token_id = None  # never stop early: every run makes NEW tokens
    return hf


def prompts(batch):
    return np.random.default_rng(batch).integers(0, V, (batch, PROMPT))


def keraslm_generate(model, batch, repeats, precision="float32"):
    rows = prompts(batch).tolist()
    run = lambda: model.generate(rows, max_new_tokens=NEW, temperature=0, precision=precision)  # noqa: E731
    return median_time(run, repeats, warmup=1)


def transformers_generate(hf, batch, repeats):
    import torch

    ids = torch.as_tensor(prompts(batch))
    mask = torch.ones_like(ids)

    @torch.no_grad()
    def run():
        out = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                          pad_token_id=0, use_cache=True)
        assert out.shape[1] == PROMPT + NEW

    return median_time(run, repeats, warmup=1)


def keras_hub_generate(batch, repeats, cache={}):  # noqa: B006 - one model for both batch sizes
    try:
        import keras_hub
    except ImportError:
        return None
    if "lm" not in cache:
        backbone = keras_hub.models.GPT2Backbone(vocabulary_size=V, num_layers=LAYERS, num_heads=HEADS,
                                                 hidden_dim=WIDTH, intermediate_dim=4 * WIDTH, dropout=0.0,
                                                 max_sequence_length=CONTEXT)
        cache["lm"] = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        cache["lm"].compile(sampler="greedy")
    lm = cache["lm"]
    ids = np.zeros((batch, PROMPT + NEW), np.int32)
    ids[:, :PROMPT] = prompts(batch)
    mask = np.zeros_like(ids, bool)
    mask[:, :PROMPT] = True
    run = lambda: lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)  # noqa: E731
    return median_time(run, repeats, warmup=1)


class _StepTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def keraslm_finetune(model, steps):
    cfg = TrainConfig(steps=steps + 1, batch_size=TRAIN_BATCH, block_size=TRAIN_T, learning_rate=3e-5,
                      min_learning_rate=3e-5, warmup_steps=0, verbose=0)
    compile_model(model, cfg)
    ids = np.random.default_rng(7).integers(0, V, ((steps + 1) * TRAIN_BATCH, TRAIN_T + 1)).astype(np.int32)
    timer = _StepTimes()
    model.fit(ids[:, :-1], ids[:, 1:], batch_size=TRAIN_BATCH, epochs=1, verbose=0, callbacks=[timer],
              shuffle=False)
    return statistics.median(timer.times[1:]), use_xla(cfg.jit_compile, model)  # the first step traces


def torch_finetune(hf, steps):
    import torch

    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=3e-5, weight_decay=0.1)
    ids = torch.as_tensor(np.random.default_rng(7).integers(0, V, (steps + 1, TRAIN_BATCH, TRAIN_T)))
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = hf(ids[step], labels=ids[step]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    hf.eval()
    return statistics.median(times[1:])


def measure(system, directory, batch, repeats, steps):
    """One measurement in this process: seconds per generate call (``batch``), or per training step."""
    if system == "keraslm":
        return keraslm_generate(load_hf_gpt2(directory, tokenizer=False), batch, repeats)
    if system == "keraslm-bf16":
        return keraslm_generate(load_hf_gpt2(directory, tokenizer=False), batch, repeats, "bfloat16")
    if system == "transformers":
        return transformers_generate(load_hf(directory), batch, repeats)
    if system == "keras-hub":
        return keras_hub_generate(batch, repeats)
    if system == "keraslm-train":
        return keraslm_finetune(load_hf_gpt2(directory, tokenizer=False), steps)[0]
    if system == "torch-train":
        return torch_finetune(load_hf(directory), steps)
    raise ValueError(system)


def in_own_process(system, directory, batch, repeats, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--only", system, "--dir", directory, "--batch", str(batch),
           "--repeats", str(repeats), "--steps", str(steps)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if r.returncode != 0:
        print(f"# {system} failed: {r.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 1 only, fewer repeats and training steps")
    ap.add_argument("--no-train", action="store_true", help="skip the fine-tuning section")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.dir, args.batch, args.repeats, args.steps)))
        return
    import torch

    from keraslm import _C

    header("GPT-2 124M: keraslm vs transformers vs keras-hub")
    print(f"# CPU: {cpu_model()}; kernel ISA {_C.cpu_isa()}; torch {torch.__version__} ({torch.get_num_threads()} "
          "threads)", flush=True)
    repeats, steps = (2, 2) if args.quick else (3, 4)
    directory = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, directory, ignore_errors=True)   # ~500 MB of weights
    save_hf(directory)
    model = load_hf_gpt2(directory, tokenizer=False)
    n_params = model.count_params()
    step_op = model.blocks[0]._runs_decoder_step_op(tf.zeros([1, 1, WIDTH]))
    print(f"# {n_params / 1e6:.1f}M parameters; keraslm decoding path: "
          f"{'fused decoder-step op' if step_op else 'unfused layers'} (custom ops "
          f"{'in use' if ops.custom_ops_available() and ops.implementation() != 'reference' else 'NOT in use'})",
          flush=True)

    bandwidth = copy_bandwidth()
    weight_bytes = 4 * (n_params - CONTEXT * WIDTH)  # every weight once per step; of wpe only one row
    matrices = sum(int(np.prod(w.shape)) for w in model.weights if len(w.shape) == 2 and "wpe" not in w.path)
    bounds = {"float32": weight_bytes / bandwidth, "bfloat16": (weight_bytes - 2 * matrices) / bandwidth}
    print(f"# copy bandwidth {bandwidth / 1e9:.1f} GB/s (numpy copy of 1 GiB, read + write); weights read per "
          f"decoding step {weight_bytes / 1e6:.0f} MB -> bound {bounds['float32'] * 1e3:.1f} ms/step "
          f"(bfloat16 matrices: {(weight_bytes - 2 * matrices) / 1e6:.0f} MB -> {bounds['bfloat16'] * 1e3:.1f} "
          "ms/step)")

    print(f"\n## greedy generation, prompt {PROMPT}, {NEW} new tokens: tokens/s (median of {repeats}); "
          "ratio = keraslm / baseline; ms/step = time per decoding step (batch rows share it)")
    for batch in (1,) if args.quick else (1, 8):
        theirs = {name: in_own_process(name, directory, batch, repeats, steps) for name in ("transformers", "keras-hub")}
        for precision, system in (("float32", "keraslm"), ("bfloat16", "keraslm-bf16")):
            ours = in_own_process(system, directory, batch, repeats, steps)
            tps = batch * NEW / ours
            line = (f"batch {batch}: keraslm {precision:8s} {tps:7.1f} tok/s ({ours / NEW * 1e3:6.1f} ms/step, "
                    f"{ours / NEW / bounds[precision]:4.2f}x its bandwidth bound)")
            for name, seconds in theirs.items():
                if seconds is None:
                    line += f" | {name}: not installed"
                else:
                    line += f" | {name} {batch * NEW / seconds:7.1f} tok/s (x{seconds / ours:4.2f})"
            print(line, flush=True)

    if not args.no_train:
        tokens = TRAIN_BATCH * TRAIN_T
        print(f"\n## fine-tuning, batch {TRAIN_BATCH} x {TRAIN_T} tokens, float32, AdamW, dropout 0.1: tokens/s "
              f"(median of {steps} steps after one warm-up step)")
        torch_step = in_own_process("torch-train", directory, 1, repeats, steps)
        keras_step = in_own_process("keraslm-train", directory, 1, repeats, steps)
        xla = use_xla("auto", model)
        print(f"keraslm fit {tokens / keras_step:7.1f} tok/s ({keras_step:5.2f} s/step, XLA "
              f"{'on' if xla else 'off'}) | torch loop {tokens / torch_step:7.1f} tok/s ({torch_step:5.2f} s/step) "
              f"| ratio x{torch_step / keras_step:4.2f}", flush=True)


if __name__ == "__main__":
    main()
