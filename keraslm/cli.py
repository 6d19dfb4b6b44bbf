"""``keraslm`` command line: every subcommand's handler.

``keraslm train | evaluate | generate | export | export-hf | presets | plot``. Building the parser
imports no TensorFlow (``keraslm --help`` answers at once); TensorFlow's start-up lines are
kept off the terminal unless ``--verbose`` is given, and every error a user can cause ends
in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import sys

USAGE_EXAMPLES = """examples:
  keraslm train --preset gpt-nano --data tinyshakespeare --out runs/nano
  keraslm generate --model runs/nano --prompt "ROMEO:" --max-new-tokens 200
  keraslm evaluate --model runs/nano --data heldout.txt
  keraslm train --init path/to/gpt2 --data my_text.txt --steps 500 --out runs/ft
  keraslm export --model runs/nano --out exports/nano
  keraslm presets
  keraslm plot runs/nano runs/ft --out curves.png
"""

# The shipped default model's name (keraslm.checkpoint.DEFAULT_MODEL: importing that module imports TensorFlow,
# which --help does not wait for).
DEFAULT_MODEL_HELP = " (default: the shipped shakespeare-char model)"
MODEL_HELP = ("a keraslm run directory or .keras file, a Hugging Face or keras-hub GPT-2 directory, or a nanoGPT "
              "ckpt.pt")


def _bool(text):
    value = text.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def field_help(cls):
    """``{field: the comment written beside it in the class source}`` (continuation lines joined)."""
    helps, current = {}, None
    for line in inspect.getsource(cls).splitlines():
        field = re.match(r"\s{4}(\w+): [\w\[\], ]+ = .*?(?:#\s*(.*))?$", line)
        if field:
            current = field.group(1)
            helps[current] = (field.group(2) or "").strip()
        elif current and re.match(r"\s+#", line):
            helps[current] += " " + line.split("#", 1)[1].strip()
        else:
            current = None
    return helps


def _add_train_flags(parser):
    from keraslm.config import TrainConfig

    helps = field_help(TrainConfig)
    types = {"int": int, "float": float, "bool": _bool, "str": str, "dict": _json_dict}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "")
        if f.name == "data":
            parser.add_argument(flag, nargs="+", required=True, metavar="FILE",
                                help=f"{text} (a built-in dataset by name: tinyshakespeare)")
            continue
        if f.type in ("list", list):
            parser.add_argument(flag, dest=f.name, nargs="+", default=None, metavar="FILE", help=text)
            continue
        kind = types[f.type if isinstance(f.type, str) else f.type.__name__]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = json.dumps(default) if kind is _json_dict else repr(default)
        extra = {"nargs": "?", "const": True, "metavar": "BOOL"} if kind is _bool else {"metavar": f.name.upper()}
        parser.add_argument(flag, dest=f.name, type=kind, default=None,
                            help=f"{text} (default: the preset's, else {shown})", **extra)


def _add_sampling_flags(p):
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate per prompt (default: 100)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens (default: 0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the top one (default: 0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="(default: 1.0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop a sample when it produces TEXT (repeat for several)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (default: 1 = off)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt (default: 1)")


def build_parser():
    from keraslm import __version__

    parser = argparse.ArgumentParser(prog="keraslm", description="Keras language models: train, evaluate, "
                                     "generate, export.", epilog=USAGE_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"keraslm {__version__}")
    parser.add_argument("--verbose", dest="tf_logs", action="store_true",
                        help="show TensorFlow's own log lines on stderr (before the command: keraslm --verbose train ...)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a preset (or fine-tune one with --init) on text files")
    _add_train_flags(p)

    p = sub.add_parser("evaluate", help="loss / perplexity / bits per token on held-out text")
    p.add_argument("--model", default=None, help=MODEL_HELP + DEFAULT_MODEL_HELP)
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="text files, globs or a built-in dataset")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per batch (default: 16); for a recurrent model, whose state is carried across "
                        "the text, the number of contiguous streams (default: 1)")
    p.add_argument("--block-size", type=int, default=None, help="window length (default: the model's context)")

    p = sub.add_parser("generate", help="sample text from a model")
    p.add_argument("--model", default=None, help=MODEL_HELP + DEFAULT_MODEL_HELP)
    p.add_argument("--prompt", action="append", default=None, help="prompt text (repeat for several)")
    p.add_argument("--prompt-file", action="append", default=None, metavar="FILE",
                   help="a file whose whole text is one prompt (repeat for several)")
    _add_sampling_flags(p)

    p = sub.add_parser("export", help="write a SavedModel for TF Serving (a language model: text in, text out; "
                       "a SequenceClassifier: text in, class probabilities out)")
    p.add_argument("--model", default=None, help=MODEL_HELP + DEFAULT_MODEL_HELP)
    p.add_argument("--out", required=True, metavar="EXPORT_BASE",
                   help="the model's base directory (TF Serving's model_base_path); writes EXPORT_BASE/<version>")
    p.add_argument("--version", type=int, default=None, help="version number (default: 1 + the highest existing)")
    p.add_argument("--custom-ops", action="store_true",
                   help="keep keraslm's custom ops (only for a model server built with them)")
    p.add_argument("--max-new-tokens-limit", type=int, default=None,
                   help="largest max_new_tokens a request may ask for (default: 1024)")
    p.add_argument("--labels", nargs="+", default=None, metavar="NAME",
                   help="a classifier's class names in class-id order: the export also returns the label")

    p = sub.add_parser("export-hf", help="write a GPT-2 model in the Hugging Face layout (safetensors + tokenizer)")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("out", help="the new directory (must not exist, or be empty)")

    sub.add_parser("presets", help="list the presets: what they are for and their sizes")

    p = sub.add_parser("plot", help="draw runs' training and validation loss (and learning rate) into a PNG")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or their logs/training.csv files)")
    p.add_argument("--out", default="loss.png", metavar="FILE", help="the PNG to write (default: loss.png)")
    return parser


def _train(args):
    from keraslm.config import TrainConfig
    from keraslm.training import train

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "tf_logs") and v is not None}
    cfg = TrainConfig.from_preset(overrides.pop("preset", "gpt-nano"), **overrides)
    result = train(cfg)
    result.pop("model")
    print(json.dumps(result, indent=1))


def _model_path(args):
    """The --model path, or the shipped default model's when none is given."""
    from keraslm.checkpoint import default_model_path

    return default_model_path() if args.model is None else args.model


def _evaluate(args):
    from keraslm.evaluation import evaluate

    print(json.dumps(evaluate(_model_path(args), args.data, block_size=args.block_size, batch_size=args.batch_size),
                     indent=1))


def _prompts(args):
    prompts = list(args.prompt or [])
    for path in args.prompt_file or []:
        try:
            with open(path, encoding="utf-8") as f:
                prompts.append(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the prompt file {path}: {e}") from None
    return prompts or [""]


def _generate(args):
    """Writes each prompt followed by its continuation (streamed as it is generated, for one sample)."""
    from keraslm.checkpoint import load_model
    from keraslm.validation import positive_int

    positive_int("num_samples", args.num_samples)
    model = load_model(_model_path(args))
    settings = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                    repetition_penalty=args.repetition_penalty, seed=args.seed, stop=args.stop)
    first = True
    # Text streams to a terminal as it comes; otherwise (several samples, beams, or stdout redirected) the
    # progress goes to stderr while it is a terminal.
    progress = _Progress(args.max_new_tokens) if sys.stderr.isatty() else None
    for prompt in _prompts(args):
        if args.num_samples == 1 and args.num_beams == 1 and (sys.stdout.isatty() or progress is None):
            if not first:
                sys.stdout.write("\n" + "-" * 40 + "\n")
            first = False
            sys.stdout.write(prompt)
            sys.stdout.flush()
            for piece in model.stream(prompt, args.max_new_tokens, **settings):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            continue
        if args.num_beams == 1:
            texts = [""] * args.num_samples
            for pieces in model.stream([prompt] * args.num_samples, args.max_new_tokens, **settings):
                texts = [t + p for t, p in zip(texts, pieces)]
                if progress is not None:
                    progress.step()
        else:
            texts = model.generate([prompt] * args.num_samples, args.max_new_tokens, num_beams=args.num_beams,
                                   **settings)
        if progress is not None:
            progress.clear()
        for text in texts:
            if not first:
                sys.stdout.write("\n" + "-" * 40 + "\n")
            first = False
            sys.stdout.write(prompt + text + "\n")
        sys.stdout.flush()


class _Progress:
    """``generating: n/N tokens`` on one stderr line, rewritten in place."""

    def __init__(self, total):
        self.total, self.count = total, 0

    def step(self):
        self.count += 1
        sys.stderr.write(f"\rgenerating: {self.count}/{self.total} tokens")
        sys.stderr.flush()

    def clear(self):
        if self.count:
            sys.stderr.write("\r" + " " * 40 + "\r")
            sys.stderr.flush()
        self.count = 0


def _export(args):
    from keraslm.checkpoint import load_model
    from keraslm.export import export, export_classifier
    from keraslm.models import SequenceClassifier

    model = load_model(_model_path(args))
    if isinstance(model, SequenceClassifier):
        if args.max_new_tokens_limit is not None:
            raise ValueError("--max-new-tokens-limit is for a language model; this model is a classifier")
        print(export_classifier(model, args.out, args.version, labels=args.labels, custom_ops=args.custom_ops))
        return
    if args.labels is not None:
        raise ValueError("--labels is for a classifier; this model is a language model")
    print(export(model, args.out, args.version, custom_ops=args.custom_ops,
                 max_new_tokens_limit=args.max_new_tokens_limit))


def _export_hf(args):
    from keraslm.checkpoint import load_model
    from keraslm.convert import save_hf_gpt2

    print(save_hf_gpt2(load_model(args.model), args.out))


def _presets(args):
    from keraslm.presets import PRESETS, approximate_parameters

    for name in sorted(PRESETS):
        preset = PRESETS[name]
        size, vocab = approximate_parameters(name)
        train = preset["train"]
        print(f"{name:17} {size / 1e6:7.2f}M parameters ({vocab}-token {preset['tokenizer']} vocabulary)  "
              f"{preset['about']}")
        print(f"{'':17} model {json.dumps(preset['model'])}")
        print(f"{'':17} trains with batch {train.get('batch_size')} x {train.get('block_size')} tokens, "
              f"{train.get('optimizer')} at learning rate {train.get('learning_rate')}")


def _plot(args):
    from keraslm.curves import plot_curves

    print(plot_curves(args.runs, args.out))


@contextlib.contextmanager
def quiet_native_stderr():
    """Keeps what native code (TensorFlow's C++ start-up lines, CUDA probing) writes to file descriptor 2
    off the terminal, while Python's own ``sys.stderr`` (our errors and log lines) still reaches it."""
    try:
        sys.stderr.flush()
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):   # Python's stderr is captured (a test runner): leave it
        python_on_fd2 = False
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    if not python_on_fd2:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None),
                           errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is python_stderr]
    for h in handlers:
        h.setStream(sys.stderr)
    try:
        yield
    finally:
        sys.stderr.flush()
        for h in handlers:
            h.setStream(python_stderr)
        quiet, sys.stderr = sys.stderr, python_stderr
        os.dup2(saved, 2)
        os.close(saved)
        quiet.close()


def _one_line(error):
    """An error message on one line: TensorFlow's (which carry graph context after the first line) trimmed."""
    tf = sys.modules.get("tensorflow")
    text = error.message if tf is not None and isinstance(error, tf.errors.OpError) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    assertion = next((line for line in lines if "assertion failed:" in line), None)
    text = assertion.split("assertion failed:", 1)[1].strip(" []") if assertion else (lines[0] if lines else "")
    return text or type(error).__name__


HANDLERS = {"train": _train, "evaluate": _evaluate, "generate": _generate, "export": _export,
            "export-hf": _export_hf, "presets": _presets, "plot": _plot}


def main(argv=None):
    """Entry point of the ``keraslm`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if not args.tf_logs:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("AUTOGRAPH_VERBOSITY", "0")
        for name in ("tensorflow", "absl", "h5py"):
            logging.getLogger(name).setLevel(logging.ERROR)
    logging.basicConfig(level=logging.INFO, format="keraslm: %(message)s")
    with (contextlib.nullcontext() if args.tf_logs else quiet_native_stderr()):
        try:
            if not args.tf_logs and args.command not in ("presets", "plot"):   # (these need no TensorFlow)
                import tensorflow as tf

                tf.autograph.set_verbosity(0)
                tf.get_logger().setLevel(logging.ERROR)
            HANDLERS[args.command](args)
        except (ValueError, OSError, RuntimeError) as e:
            print(f"keraslm {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 - TensorFlow's run-time errors (e.g. a failed check in a graph)
            tf = sys.modules.get("tensorflow")
            if tf is None or not isinstance(e, tf.errors.OpError):
                raise
            print(f"keraslm {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
