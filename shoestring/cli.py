"""cli.py: the `shoestring` command: parses arguments, dispatches, turns errors into one line.

Subcommands: info, tokenizer, train, chat, generate. Each handler lives in its own module and is
imported only when used, so `shoestring chat` starts fast. Errors: a ShoestringError prints
`shoestring: error: <what> (<hint>)` and exits 1; usage errors exit 2; Ctrl-C exits 130.
`--traceback` shows the full traceback instead.
"""
import argparse
import os
import sys

from . import __version__
from .errors import ShoestringError

# Architecture flags default to None in the parser so that resuming from a checkpoint can tell
# "not given" from "given" (a given flag that contradicts the checkpoint is an error); the
# defaults themselves are ModelConfig's (MODEL.md §6), applied in train.resolve_config.


class UsageError(ShoestringError):
    """A flag value that argparse accepted but that makes no sense (exit 2)."""


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


# Upper bounds far beyond any model this tool can train on a small device, low enough that a
# typo (an extra zero run) fails at once instead of allocating terabytes or looping for ever.
MAX_VOCAB = 1_000_000
MAX_WIDTH = 65_536          # C, H
MAX_LAYERS = 64
MAX_EXPERTS = 1024
MAX_SIZE = 1_000_000        # T, B, accumulate, tokens per reply
MAX_THREADS = 1024
MAX_COUNT = 10 ** 12        # steps, epochs, intervals
MAX_SEED = 2 ** 64 - 1


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


positive_float = _float_in(0.0, None, lo_open=True, name="positive number")
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


def add_train_args(p):
    d = p.add_argument_group("data")
    d.add_argument("--bpe-data", nargs="+", metavar="FILE",
                   help="text file(s) to train the tokenizer on (default: the model data)")
    d.add_argument("--model-data", nargs="+", metavar="PATH",
                   help="text file(s) or folder(s) of .txt files to train the model on "
                        "(default: the small chat corpus shipped with shoestring)")
    d.add_argument("--validation-data", metavar="FILE",
                   help="held-out text for validation (default: the last --val-fraction of the model data)")
    d.add_argument("--val-fraction", type=_float_in(0.0, 0.5, name="fraction"), default=0.1,
                   help="fraction of the model data held out when no --validation-data (default: 0.1)")
    d.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                   help="what to do with bytes that are not UTF-8 (default: strict)")
    d.add_argument("--checkpoint", metavar="FILE",
                   help="resume training from this checkpoint (keeps its architecture; "
                        "default: start a new run)")
    a = p.add_argument_group("architecture (fixed by a checkpoint when resuming)")
    a.add_argument("--bpe-vocab-size", type=int_in(1, MAX_VOCAB), default=None,
                   help="tokenizer vocabulary size (default: 850)")
    a.add_argument("--embedding-dim", type=int_in(1, MAX_WIDTH), default=None,
                   help="embedding width C (default: 96)")
    a.add_argument("--gru-hidden-size", type=int_in(1, MAX_WIDTH), default=None,
                   help="hidden width H of every expert (default: 96)")
    a.add_argument("--gru-layers", type=int_in(1, MAX_LAYERS), default=None,
                   help="number of MoE-GRU layers L (default: 2)")
    a.add_argument("--num-experts", type=int_in(1, MAX_EXPERTS), default=None,
                   help="experts per layer X (default: 6)")
    a.add_argument("--active-experts", type=int_in(1, MAX_EXPERTS), default=None,
                   help="experts run per token K, 1..X; K=X is dense (default: X)")
    t = p.add_argument_group("training")
    t.add_argument("--seq-length", type=int_in(1, MAX_SIZE), default=80,
                   help="time steps T per window (default: 80)")
    t.add_argument("--batch-size", type=int_in(1, MAX_SIZE), default=16,
                   help="parallel streams B (default: 16)")
    t.add_argument("--epochs", type=int_in(1, MAX_COUNT), default=None,
                   help="passes over the model data; when resuming, the new total (default: 5; "
                        "20 on the bundled corpus, which is small)")
    t.add_argument("--max-steps", type=int_in(1, MAX_COUNT), default=None,
                   help="stop after this many optimiser steps in total (default: no limit)")
    t.add_argument("--max-minutes", type=_float_in(0.0, 10 ** 6, lo_open=True, name="minutes"),
                   default=None,
                   help="stop this session after this many minutes of training, then validate "
                        "and save (default: no limit)")
    t.add_argument("--lr", type=positive_float, default=0.001, help="peak learning rate (default: 0.001)")
    t.add_argument("--wd", type=nonneg_float, default=0.01,
                   help="AdamW weight decay, matrices only (default: 0.01)")
    t.add_argument("--grad-clip", type=nonneg_float, default=1.0,
                   help="global gradient-norm clip; 0 disables (default: 1.0)")
    t.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="linear warm-up then cosine decay, or constant (default: cosine)")
    t.add_argument("--warmup-steps", type=int_in(0, MAX_COUNT), default=None,
                   help="warm-up steps (default: 2%% of the total, at most 200)")
    t.add_argument("--accumulate", type=int_in(1, MAX_SIZE), default=1,
                   help="gradient accumulation: windows per optimiser step (default: 1)")
    t.add_argument("--eps-rmsnorm", type=_float_in(0.0, 1.0, lo_open=True), default=1e-5, help="RMSNorm epsilon (default: 1e-5)")
    t.add_argument("--eps-adamw", type=_float_in(0.0, 1.0, lo_open=True), default=1e-8, help="AdamW epsilon (default: 1e-8)")
    t.add_argument("--threads", type=int_in(1, MAX_THREADS), default=None,
                   help="worker threads (default: all cores)")
    t.add_argument("--seed", type=int_in(0, MAX_SEED), default=1337, help="random seed (default: 1337)")
    o = p.add_argument_group("output")
    o.add_argument("--out-dir", metavar="DIR",
                   help="folder for checkpoints and metrics (default: runs/<timestamp>)")
    o.add_argument("--eval-every", type=int_in(1, MAX_COUNT), default=None,
                   help="validate and checkpoint every N steps (default: once per epoch and at the end)")
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

    gen = sub.add_parser("generate", help="continue a prompt")
    gen.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint to load")
    gen.add_argument("--prompt", metavar="TEXT", help="text to continue (default: read stdin)")
    gen.add_argument("--max-tokens", type=int_in(1, MAX_SIZE), default=200,
                     help="tokens to generate (default: 200)")
    add_sampling_args(gen)
    return parser


def cmd_info(args):
    from . import kernels

    print("shoestring %s" % __version__)
    print("instruction set in use: %s" % kernels.isa_active())
    print("compiled in:            %s" % ", ".join(kernels.isa_compiled()))
    print("supported by this CPU:  %s" % ", ".join(kernels.isa_supported()))
    print("build:                  %s" % kernels.build_info())
    print("cores:                  %d" % (os.cpu_count() or 1))
    return 0


def dispatch(args):
    if args.command == "info":
        return cmd_info(args)
    if args.command == "tokenizer":
        from .tokenizer import cli_tokenizer
        return cli_tokenizer(args)
    if args.command == "train":
        from .train import cli_train
        return cli_train(args)
    if args.command == "chat":
        from .chat import cli_chat
        return cli_chat(args)
    if args.command == "generate":
        from .chat import cli_generate
        return cli_generate(args)
    raise AssertionError(args.command)


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return dispatch(args) or 0
    except UsageError as exc:
        if args.traceback:
            raise
        print("shoestring %s: error: %s" % (args.command, exc), file=sys.stderr)
        return 2
    except ShoestringError as exc:
        if args.traceback:
            raise
        print("shoestring: error: %s" % exc, file=sys.stderr)
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
