"""``keraslm`` command line: every subcommand's handler (train | evaluate | generate | export)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

USAGE_EXAMPLES = """examples:
  keraslm train --preset gpt-nano --data input.txt --steps 2000 --out runs/nano
  keraslm evaluate --model runs/nano --data heldout.txt
  keraslm generate --model runs/nano --prompt "ROMEO:" --max-new-tokens 200
"""


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


def _add_train_flags(parser):
    from keraslm.training import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            parser.add_argument(flag, nargs="+", required=True, metavar="FILE", help="training text files or globs")
            continue
        types = {"int": int, "float": float, "bool": _bool, "str": str, "dict": _json_dict}
        kind = types[f.type if isinstance(f.type, str) else f.type.__name__]
        extra = {"nargs": "?", "const": True} if kind is _bool else {}   # --overwrite, or --overwrite false
        parser.add_argument(flag, dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                            help=f"(default: the preset's, else {f.default!r})", **extra)


def build_parser():
    parser = argparse.ArgumentParser(prog="keraslm", description="Keras language models: train, evaluate, "
                                     "generate, export.", epilog=USAGE_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a preset on text files")
    _add_train_flags(p)

    p = sub.add_parser("evaluate", help="loss / perplexity / bits per token on held-out text")
    p.add_argument("--model", required=True, help="run directory or .keras file")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=None)

    p = sub.add_parser("generate", help="sample text from a trained model")
    p.add_argument("--model", default=None,
                   help="run directory or .keras file (default: the shipped shakespeare-nano model)")
    p.add_argument("--prompt", action="append", default=None, help="prompt text (repeat for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)

    p = sub.add_parser("export", help="write a SavedModel for TF Serving (text in, text out)")
    p.add_argument("--model", required=True, help="run directory or .keras file")
    p.add_argument("--out", required=True, metavar="EXPORT_BASE",
                   help="the model's base directory (TF Serving's model_base_path); writes EXPORT_BASE/<version>")
    p.add_argument("--version", type=int, default=None, help="version number (default: 1 + the highest existing)")
    p.add_argument("--custom-ops", action="store_true",
                   help="keep keraslm's custom ops (only for a model server built with them)")
    p.add_argument("--max-new-tokens-limit", type=int, default=None,
                   help="largest max_new_tokens a request may ask for (default: 1024)")
    return parser


def _train(args):
    from keraslm.training import TrainConfig, train

    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    cfg = TrainConfig.from_preset(overrides.pop("preset", "gpt-nano"), **overrides)
    result = train(cfg)
    result.pop("model")
    print(json.dumps(result, indent=1))


def _evaluate(args):
    from keraslm.evaluation import evaluate

    print(json.dumps(evaluate(args.model, args.data, block_size=args.block_size, batch_size=args.batch_size),
                     indent=1))


def _generate(args):
    """Streams each prompt's continuation to stdout."""
    from keraslm.checkpoint import default_model_path, load_model
    from keraslm.generation import stream

    model = load_model(default_model_path() if args.model is None else args.model)
    prompts = args.prompt or [""]
    for i, prompt in enumerate(prompts):
        if i:
            sys.stdout.write("\n" + "-" * 40 + "\n")
        sys.stdout.write(prompt)
        sys.stdout.flush()
        for piece in stream(model, prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                            seed=args.seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")


def _export(args):
    from keraslm.checkpoint import load_model
    from keraslm.export import export

    print(export(load_model(args.model), args.out, args.version, custom_ops=args.custom_ops,
                 max_new_tokens_limit=args.max_new_tokens_limit))


def _one_line(error):
    """An error message on one line: TensorFlow's (which carry graph context after the first line) trimmed."""
    tf = sys.modules.get("tensorflow")
    text = error.message if tf is not None and isinstance(error, tf.errors.OpError) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    assertion = next((line for line in lines if "assertion failed:" in line), None)
    text = assertion.split("assertion failed:", 1)[1].strip(" []") if assertion else (lines[0] if lines else "")
    return text or type(error).__name__


def main(argv=None):
    """Entry point of the ``keraslm`` command; returns the process exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="keraslm: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _train, "evaluate": _evaluate, "generate": _generate, "export": _export}
    try:
        handlers[args.command](args)
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
