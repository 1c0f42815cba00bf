"""cli.py: the `shoestring` command: the parser, the dispatch, errors turned into one line.

Subcommands: info, tokenizer, train, chat, generate; their handlers are commands.cmd_<name>.
Errors: a ShoestringError prints `shoestring: error: <what> (<hint>)` and exits 1, a UsageError
exits 2, Ctrl-C exits 130; the settings an error names (`batch_size`) are shown as the flags that
set them (`--batch-size`). `--traceback` shows the full traceback instead.

The training flags are TrainConfig's settings: each parses with config.parse_setting (the same
check as TrainConfig itself), shows TrainConfig's default, and defaults to argparse.SUPPRESS, so
the namespace holds exactly the flags given (a resume changes only those).
"""
import argparse
import re
import sys

from .version import __version__
from .config import (BUNDLED_MINUTES, DEFAULT_MINUTES, NEW_RUN_CAP, MAX_COUNT, MAX_EXPERTS, MAX_LAYERS, MAX_SEED, MAX_SIZE, MAX_VOCAB,
                     MAX_WIDTH, SETTINGS, parse_setting)
from .errors import ShoestringError, UsageError
from .params import ModelConfig

MODEL_FLAGS = {"V": "--bpe-vocab-size", "C": "--embedding-dim", "H": "--gru-hidden-size",
               "L": "--gru-layers", "X": "--num-experts", "K": "--active-experts",
               "eps_rmsnorm": "--eps-rmsnorm"}


def int_in(lo, hi, name="whole number"):
    """A whole number in [lo, hi]: absurd sizes are refused here, before anything is allocated."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a whole number, got %r" % text)
        if v < lo:
            raise argparse.ArgumentTypeError("must be at least %d, got %d" % (lo, v))
        if v > hi:
            raise argparse.ArgumentTypeError("must be at most %s, got %s" % (format(hi, ","), text))
        return v
    parse.__name__ = name
    return parse


def _float_in(lo, hi, lo_open=False, name="value"):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a number, got %r" % text)
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError("must be a finite number, got %r" % text)
        if v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
            rng = "%s%s, %s]" % ("(" if lo_open else "[", lo, "inf" if hi is None else hi)
            raise argparse.ArgumentTypeError("must be in %s, got %s" % (rng, text))
        return v
    parse.__name__ = name
    return parse


nonneg_float = _float_in(0.0, None, name="non-negative number")
unit_float = _float_in(0.0, 1.0, lo_open=True, name="number in (0, 1]")


def add_sampling_args(p):
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=nonneg_float, default=0.8,
                   help="softmax temperature; 0 is greedy (default: 0.8)")
    g.add_argument("--top-k", type=int_in(0, MAX_VOCAB), default=40,
                   help="sample among the k most likely tokens; 0 disables (default: 40)")
    g.add_argument("--top-p", type=unit_float, default=0.95,
                   help="nucleus sampling: smallest set with this total probability (default: 0.95)")
    g.add_argument("--seed", type=int_in(0, MAX_SEED), default=None,
                   help="random seed for sampling; fixed seed gives the same text (default: random)")


def add_setting(group, name, help, default_text=None):
    """A flag for the TrainConfig setting `name`: --<name with dashes>."""
    def parse(text):
        try:
            return parse_setting(name, text)
        except UsageError as exc:
            msg = str(exc)
            raise argparse.ArgumentTypeError(msg[len(name) + 1:] if msg.startswith(name + " ")
                                              else msg) from None
    parse.__name__ = SETTINGS[name]["kind"].__name__
    spec = SETTINGS[name]
    if default_text is None:
        default_text = str(spec["default"])
    kw = {"choices": spec["choices"]} if spec["choices"] else {"type": parse}
    group.add_argument("--" + name.replace("_", "-"), default=argparse.SUPPRESS,
                       help="%s (default: %s)" % (help, default_text), **kw)


def add_model_flag(group, key, flag_type, help):
    group.add_argument(MODEL_FLAGS[key], dest=key, type=flag_type, default=argparse.SUPPRESS,
                       help="%s (default: %s)" % (help, getattr(ModelConfig, key)))


def add_train_args(p):
    d = p.add_argument_group("data")
    d.add_argument("--bpe-data", nargs="+", metavar="FILE",
                   help="text file(s) to train the tokenizer on (default: the model data)")
    d.add_argument("--model-data", nargs="+", metavar="PATH",
                   help="text file(s) or folder(s) of .txt files to train the model on "
                        "(default: the small chat corpus shipped with shoestring)")
    d.add_argument("--validation-data", metavar="FILE",
                   help="held-out text for validation (default: the last --val-fraction of the model data)")
    add_setting(d, "val_fraction", "fraction of the model data held out when no --validation-data")
    add_setting(d, "encoding_errors", "what to do with bytes that are not UTF-8")
    d.add_argument("--checkpoint", metavar="FILE",
                   help="resume training from this checkpoint (keeps its architecture and plan; "
                        "flags given change the plan; default: start a new run)")
    a = p.add_argument_group("architecture (fixed by a checkpoint when resuming)")
    add_model_flag(a, "V", int_in(1, MAX_VOCAB), "tokenizer vocabulary size")
    add_model_flag(a, "C", int_in(1, MAX_WIDTH), "embedding width C")
    add_model_flag(a, "H", int_in(1, MAX_WIDTH), "hidden width H of every expert")
    add_model_flag(a, "L", int_in(1, MAX_LAYERS), "number of MoE-GRU layers L")
    add_model_flag(a, "X", int_in(1, MAX_EXPERTS), "experts per layer X")
    a.add_argument("--active-experts", dest="K", type=int_in(1, MAX_EXPERTS),
                   default=argparse.SUPPRESS,
                   help="experts run per token K, 1..X; K=X is dense (default: X)")
    add_model_flag(a, "eps_rmsnorm", _float_in(0.0, 1.0, lo_open=True), "RMSNorm epsilon")
    a.add_argument("--cap", dest="cap", type=_float_in(0.0, 1e6, name="cap"),
                   default=argparse.SUPPRESS,
                   help="soft cap of the recurrent candidate, c = cap*tanh(GELU(u)/cap), which "
                        "keeps the state bounded; 0 is the uncapped model of older checkpoints "
                        "(default: %g)" % NEW_RUN_CAP)
    a.add_argument("--tie-embeddings", dest="tie_embeddings", action="store_true",
                   default=argparse.SUPPRESS,
                   help="the head reuses the embedding matrix (needs --embedding-dim equal to "
                        "--gru-hidden-size; default: a separate head)")
    t = p.add_argument_group("training")
    add_setting(t, "seq_length", "time steps T per window")
    add_setting(t, "batch_size", "parallel streams B")
    add_setting(t, "minutes", "time budget: warm-up and cosine decay are planned from the "
                "measured speed to end after this many minutes of training, then the run "
                "validates, saves and stops; resuming keeps the plan",
                "%g; %g on the bundled corpus, unless --epochs or --max-steps is given"
                % (DEFAULT_MINUTES, BUNDLED_MINUTES))
    add_setting(t, "epochs", "passes over the model data instead of a time budget; when "
                "resuming, the new total", "a time budget, see --minutes")
    add_setting(t, "max_steps", "stop after this many optimiser steps in total", "no limit")
    add_setting(t, "max_minutes", "stop this session after this many minutes of training, then "
                "validate and save", "no limit")
    add_setting(t, "lr", "peak learning rate")
    add_setting(t, "wd", "AdamW weight decay, matrices only")
    add_setting(t, "grad_clip", "global gradient-norm clip; 0 disables")
    add_setting(t, "lr_schedule", "linear warm-up then cosine decay, or constant")
    add_setting(t, "warmup_steps", "warm-up steps", "2%% of the total, at most 200")
    add_setting(t, "accumulate", "gradient accumulation: windows per optimiser step")
    add_setting(t, "eps_adamw", "AdamW epsilon")
    add_setting(t, "dropout", "locked dropout on each layer's input and on the head's input (one "
                "mask per stream per window, shared by its time steps)")
    add_setting(t, "embedding_dropout", "drop whole embedding rows (every occurrence of a token "
                "in a window)")
    add_setting(t, "weight_drop", "DropConnect on the recurrent matrices Wch (one mask per step)")
    add_setting(t, "ema", "decay of the moving average of the weights that validation, "
                "best.json and the chat use; 0 disables")
    add_setting(t, "threads", "worker threads", "all cores")
    add_setting(t, "seed", "random seed")
    o = p.add_argument_group("output")
    o.add_argument("--out-dir", metavar="DIR",
                   help="folder for checkpoints and metrics (default: runs/<timestamp>, or the "
                        "checkpoint's folder when resuming)")
    add_setting(o, "eval_every", "validate and checkpoint every N steps",
                "once per epoch and at the end")
    o.add_argument("--sample-every", type=int_in(0, MAX_COUNT), default=200,
                   help="print a short generated sample every N steps; 0 disables (default: 200)")
    o.add_argument("--no-chat", action="store_true", help="do not open the chat when training ends")
    o.add_argument("--quiet", action="store_true", help="no progress bar or samples")
    c = p.add_argument_group("chat after training")
    c.add_argument("--max-response", type=int_in(1, MAX_SIZE), default=260,
                   help="most tokens in one reply (default: 260)")
    c.add_argument("--temperature", type=nonneg_float, default=0.8,
                   help="sampling temperature; 0 is greedy (default: 0.8)")
    c.add_argument("--top-k", type=int_in(0, MAX_VOCAB), default=40, help="top-k sampling; 0 disables (default: 40)")
    c.add_argument("--top-p", type=unit_float, default=0.95, help="nucleus sampling (default: 0.95)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="shoestring",
        description="Train and chat with a tiny mixture-of-experts GRU language model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="shoestring " + __version__)
    parser.add_argument("--traceback", action="store_true", help="show a full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("info", help="version, instruction sets, compiler and flags")

    tok = sub.add_parser("tokenizer", help="train or inspect a BPE tokenizer")
    tok.add_argument("--bpe-data", nargs="+", metavar="FILE", help="text file(s) to train on")
    tok.add_argument("--bpe-vocab-size", type=int_in(1, MAX_VOCAB), default=850,
                     help="vocabulary size, special tokens included (default: 850)")
    tok.add_argument("--out", metavar="FILE", help="where to save the trained tokenizer (JSON)")
    tok.add_argument("--load", metavar="FILE", help="load a tokenizer (JSON or a checkpoint)")
    tok.add_argument("--encode", metavar="TEXT", help="show the ids and pieces of TEXT")
    tok.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                     help="what to do with bytes that are not UTF-8 (default: strict)")

    train = sub.add_parser("train", help="train a tokenizer and a model, then chat")
    add_train_args(train)

    chat = sub.add_parser("chat", help="chat with a trained model")
    chat.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint to load")
    chat.add_argument("--max-response", type=int_in(1, MAX_SIZE), default=260,
                      help="most tokens in one reply (default: 260)")
    add_sampling_args(chat)

    ev = sub.add_parser("eval", help="bits per character of a checkpoint on a text file")
    ev.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint to score")
    ev.add_argument("--data", required=True, metavar="FILE",
                    help="text to score, as one stream with the state carried through it, every "
                         "token predicted once (the first from [EOS])")
    ev.add_argument("--json", action="store_true",
                    help='print {"bits_per_char", "nats_per_token", "tokens", "chars"} as JSON')
    ev.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                    help="what to do with bytes that are not UTF-8 (default: strict)")

    gen = sub.add_parser("generate", help="continue a prompt")
    gen.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint to load")
    gen.add_argument("--prompt", metavar="TEXT", help="text to continue (default: read stdin)")
    gen.add_argument("--max-tokens", type=int_in(1, MAX_SIZE), default=200,
                     help="tokens to generate (default: 200)")
    add_sampling_args(gen)
    return parser


def flag_names(parser, command):
    """{dest: flag} of the subcommand's options, for naming settings in error messages."""
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest: a.option_strings[-1] for a in sub._actions if a.option_strings}


def as_flags(exc, flags):
    """The error's message with the settings it names written as the flags that set them."""
    msg = str(exc)
    for name in getattr(exc, "settings", ()):
        if name in flags:
            msg = re.sub(r"(?<![\w-])%s(?![\w-])" % re.escape(name), flags[name], msg)
    return msg


def main(argv=None):
    from . import commands

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return getattr(commands, "cmd_" + args.command)(args) or 0
    except UsageError as exc:
        if args.traceback:
            raise
        print("shoestring %s: error: %s" % (args.command, as_flags(exc, flag_names(parser, args.command))),
              file=sys.stderr)
        return 2
    except ShoestringError as exc:
        if args.traceback:
            raise
        print("shoestring: error: %s" % as_flags(exc, flag_names(parser, args.command)),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print("\nshoestring: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.traceback:
            raise
        print("shoestring: error: out of memory (use a smaller model, --batch-size or "
              "--seq-length, or a machine with more memory)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
