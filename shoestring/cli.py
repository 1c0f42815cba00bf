"""cli.py: the `shoestring` command: the parser, the dispatch, errors turned into one line.

Subcommands: info, tokenizer, train, chat, eval, generate, serve, plot, inspect, prepare, export;
their handlers are commands.cmd_<name>. Errors: a ShoestringError prints `shoestring: error: <what>
(<hint>)` and exits 1; a usage error (a bad flag, or a UsageError) is ONE line, `shoestring <cmd>:
error: <what> (see shoestring <cmd> -h)`, exit 2; Ctrl-C exits 130; a closed standard output
(`| head`) ends quietly with status 0. The settings an error names (`batch_size`) are shown as the
flags that set them (`--batch-size`). `--traceback`, anywhere on the line, shows the full
traceback instead.

The training flags are TrainConfig's settings: each parses with config.parse_setting (the same
check as TrainConfig itself), shows TrainConfig's default, and defaults to argparse.SUPPRESS, so
the namespace holds exactly the flags given (a resume changes only those).
"""
import argparse
import os
import re
import sys

from .version import __version__
from .config import (BUNDLED_MINUTES, DEFAULT_MINUTES, DROPOUT_FEW_PASSES, DROPOUT_MANY_PASSES,
                     FEW_PASSES_CHARS_PER_MINUTE, FEW_PASSES_EPOCHS, MAX_COUNT, MAX_EXPERTS,
                     MAX_LAYERS, MAX_SEED, MAX_SIZE, MAX_TEMPERATURE, MAX_VOCAB, MAX_WIDTH,
                     NEW_RUN_CAP, SETTINGS, VOCAB_CHARS_PER_ENTRY, VOCAB_MAX, VOCAB_MIN,
                     parse_setting)
from .errors import ShoestringError, UsageError
from .params import ModelConfig

MODEL_FLAGS = {"V": "--bpe-vocab-size", "C": "--embedding-dim", "H": "--gru-hidden-size",
               "L": "--gru-layers", "X": "--num-experts", "K": "--active-experts",
               "eps_rmsnorm": "--eps-rmsnorm"}


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem and where the help is, exit 2 (argparse
    prints the whole usage block first, burying the line that matters)."""

    def error(self, message):
        self.exit(2, "%s: error: %s (see %s -h)\n" % (self.prog, message, self.prog))

    def _print_message(self, message, file=None):
        # argparse drops an OSError here: `shoestring -h >/dev/full` printed nothing and exited
        # 0; help and --version on standard output fail like every other output does (#17)
        if message and file is sys.stdout:
            file.write(message)
        else:
            super()._print_message(message, file)


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


# the temperature flags; config.check_sampling (which generate and chat apply to every value,
# from here or from Python) has the same bounds and makes temperatures below 1e-6 greedy
nonneg_float = _float_in(0.0, MAX_TEMPERATURE, name="temperature")
unit_float = _float_in(0.0, 1.0, lo_open=True, name="number in (0, 1]")


def add_sampling_args(p):
    g = p.add_argument_group("sampling")
    g.add_argument("-t", "--temperature", type=nonneg_float, default=0.8,
                   help="softmax temperature; 0 is greedy (default: 0.8)")
    g.add_argument("--top-k", type=int_in(0, MAX_VOCAB), default=40,
                   help="sample among the k most likely tokens; 0 disables (default: 40)")
    g.add_argument("--top-p", type=unit_float, default=0.95,
                   help="nucleus sampling: smallest set with this total probability (default: 0.95)")
    g.add_argument("-s", "--seed", type=int_in(0, MAX_SEED), default=None,
                   help="random seed for sampling; fixed seed gives the same text (default: random)")


def add_int8_arg(p, help=None):
    p.add_argument("--int8", action="store_true",
                   help=help or "decode with int8 weights: each matrix quantised per row to 8 "
                                "bits at load (a quarter of the bytes read per token; an int8 "
                                "export always loads this way)")


def add_checkpoint_args(p, what="checkpoint to load"):
    """CHECKPOINT as a positional argument or -m/--checkpoint; a run folder means its best.json;
    neither: the newest run under runs/ (commands.resolve_checkpoint)."""
    p.add_argument("checkpoint_pos", nargs="?", metavar="CHECKPOINT",
                   help="%s: a .json file or a run folder (its best.json); default: the newest "
                        "run under runs/" % what)
    p.add_argument("-m", "--checkpoint", metavar="CHECKPOINT", help="the same, as a flag")


def add_setting(group, name, help, default_text=None, short=None):
    """A flag for the TrainConfig setting `name`: --<name with dashes> (and `short`, like -s)."""
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
    flags = ([short] if short else []) + ["--" + name.replace("_", "-")]
    group.add_argument(*flags, default=argparse.SUPPRESS,
                       help="%s (default: %s)" % (help, default_text), **kw)


def add_model_flag(group, key, flag_type, help, default=None):
    group.add_argument(MODEL_FLAGS[key], dest=key, type=flag_type, default=argparse.SUPPRESS,
                       help="%s (default: %s)" % (help, default or getattr(ModelConfig, key)))


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
    add_setting(d, "val_tokens", "validation scores at most this many held-out tokens; 0 scores all")
    add_setting(d, "encoding_errors", "what to do with bytes that are not UTF-8")
    d.add_argument("--checkpoint", metavar="FILE",
                   help="resume training from this checkpoint (keeps its architecture and plan; "
                        "flags given change the plan; default: start a new run)")
    a = p.add_argument_group("architecture (fixed by a checkpoint when resuming)")
    add_model_flag(a, "V", int_in(1, MAX_VOCAB), "tokenizer vocabulary size",
                   "one entry per %d bytes of training text, from %d to %s"
                   % (VOCAB_CHARS_PER_ENTRY, VOCAB_MIN, format(VOCAB_MAX, ",")))
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
                "--max-minutes if given, else %g (%g on the bundled corpus); none with "
                "--epochs or --max-steps" % (DEFAULT_MINUTES, BUNDLED_MINUTES))
    add_setting(t, "epochs", "passes over the model data instead of a time budget; when "
                "resuming, the new total", "a time budget, see --minutes")
    add_setting(t, "max_steps", "stop after this many optimiser steps in total", "no limit")
    add_setting(t, "max_minutes", "stop this session after this many minutes of training, then "
                "validate and save", "no limit")
    add_setting(t, "patience", "early stopping: end the run (validate, save, stop) after this "
                "many validations in a row without a new best; best.json keeps the best model",
                "never")
    add_setting(t, "lr", "peak learning rate")
    add_setting(t, "wd", "AdamW weight decay, matrices only")
    add_setting(t, "grad_clip", "global gradient-norm clip; 0 disables")
    add_setting(t, "lr_schedule", "linear warm-up then cosine decay, or constant")
    add_setting(t, "warmup_steps", "warm-up steps", "2%% of the total, at most 200")
    add_setting(t, "accumulate", "gradient accumulation: windows per optimiser step")
    add_setting(t, "eps_adamw", "AdamW epsilon")
    planned = ("%g, or %g when the plan shows the model its text fewer times: a time budget "
               "with %s or more training characters per minute, or fewer than %d epochs"
               % (DROPOUT_MANY_PASSES, DROPOUT_FEW_PASSES,
                  format(FEW_PASSES_CHARS_PER_MINUTE, ","), FEW_PASSES_EPOCHS))
    add_setting(t, "dropout", "locked dropout on each layer's input and on the head's input (one "
                "mask per stream per window, shared by its time steps)", planned)
    add_setting(t, "embedding_dropout", "drop whole embedding rows (every occurrence of a token "
                "in a window)")
    add_setting(t, "weight_drop", "DropConnect on the recurrent matrices Wch (one mask per step)",
                "as --dropout")
    add_setting(t, "ema", "decay of the moving average of the weights that validation, "
                "best.json and the chat use; 0 disables")
    add_setting(t, "threads", "worker threads", "all cores")
    add_setting(t, "seed", "random seed", short="-s")
    o = p.add_argument_group("output")
    o.add_argument("--out-dir", metavar="DIR",
                   help="folder for checkpoints and metrics (default: runs/<timestamp>, or the "
                        "checkpoint's folder when resuming)")
    add_setting(o, "eval_every", "validate and checkpoint every N steps",
                "once per epoch and at the end")
    o.add_argument("--sample-every", type=int_in(0, MAX_COUNT), default=200,
                   help="print a short generated sample every N steps; 0 disables (default: 200)")
    o.add_argument("--no-chat", action="store_true", help="do not open the chat when training ends")
    o.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, samples or chart; only where the checkpoints went")
    c = p.add_argument_group("chat after training")
    c.add_argument("--max-tokens", "--max-response", dest="max_tokens", type=int_in(1, MAX_SIZE),
                   default=260, help="most tokens in one reply (default: 260)")
    c.add_argument("--temperature", type=nonneg_float, default=0.8,
                   help="sampling temperature; 0 is greedy (default: 0.8)")
    c.add_argument("--top-k", type=int_in(0, MAX_VOCAB), default=40, help="top-k sampling; 0 disables (default: 40)")
    c.add_argument("--top-p", type=unit_float, default=0.95, help="nucleus sampling (default: 0.95)")


def build_parser():
    parser = Parser(
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
    add_checkpoint_args(chat)
    chat.add_argument("-n", "--max-tokens", "--max-response", dest="max_tokens",
                      type=int_in(1, MAX_SIZE), default=260,
                      help="most tokens in one reply (default: 260)")
    chat.add_argument("-q", "--quiet", action="store_true",
                      help="no banner and no notes on standard error")
    add_sampling_args(chat)
    add_int8_arg(chat)

    ev = sub.add_parser("eval", help="bits per character of a checkpoint on a text file")
    add_checkpoint_args(ev, "checkpoint to score")
    ev.add_argument("--data", required=True, metavar="FILE",
                    help="text to score, as one stream with the state carried through it, every "
                         "token predicted once (the first from [EOS])")
    ev.add_argument("--json", action="store_true",
                    help='print {"bits_per_char", "nats_per_token", "tokens", "chars", ...} as JSON')
    ev.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                    help="what to do with bytes that are not UTF-8 (default: strict)")
    add_int8_arg(ev, "score with int8 weights, each matrix quantised per row at load, through "
                     "the decode step chat runs (an int8 export is always scored this way); "
                     "compare with the float32 figure for the quality cost of --int8")

    gen = sub.add_parser("generate", help="continue a prompt")
    add_checkpoint_args(gen)
    gen.add_argument("-p", "--prompt", metavar="TEXT", help="text to continue (default: read stdin)")
    gen.add_argument("-n", "--max-tokens", "--max-response", dest="max_tokens",
                     type=int_in(1, MAX_SIZE), default=200,
                     help="most tokens to generate (default: 200)")
    gen.add_argument("--special", action="store_true",
                     help="read [USER], [BOT] and [EOS] in the prompt as the special tokens "
                          "(a chat model continues `[USER] hi [EOS]\\n[BOT]` with a reply)")
    gen.add_argument("-q", "--quiet", action="store_true", help="no notes on standard error")
    add_sampling_args(gen)
    add_int8_arg(gen)

    srv = sub.add_parser("serve", help="serve a model: OpenAI-compatible API and a chat page")
    add_checkpoint_args(srv, "checkpoint to serve")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1, this machine only)")
    srv.add_argument("--port", type=int_in(0, 65535), default=8000,
                     help="port (default: 8000; 0 picks a free one)")
    srv.add_argument("--api-key", default=os.environ.get("SHOESTRING_API_KEY") or None,
                     metavar="KEY", help="require Authorization: Bearer KEY on every /v1/ route "
                                         "(default: $SHOESTRING_API_KEY, else none)")
    srv.add_argument("--cache-mb", type=_float_in(0.0, 1 << 20, name="MB"), default=64,
                     help="memory for cached conversation states, MB; 0 disables (default: 64)")
    srv.add_argument("--max-tokens", type=int_in(1, MAX_SIZE), default=260,
                     help="the default and the most tokens of one reply (default: 260)")
    srv.add_argument("--max-body-kb", type=int_in(1, 1 << 20), default=1024,
                     help="largest request body accepted, KB (default: 1024)")
    srv.add_argument("--quiet", action="store_true", help="do not log requests")
    add_int8_arg(srv)
    add_sampling_args(srv)

    plot = sub.add_parser("plot", help="loss curves of a run: a chart here, or an SVG/PNG file")
    plot.add_argument("run", nargs="?", metavar="RUN",
                      help="a run folder (its metrics.jsonl), a metrics .jsonl file or a "
                           "checkpoint; default: the newest run under runs/")
    plot.add_argument("-o", "--out", metavar="FILE",
                      help="write the curves to FILE.svg (no dependencies) or FILE.png (needs "
                           "matplotlib: pip install 'shoestring[plot]'); default: a chart here")
    plot.add_argument("--width", type=int_in(20, 1000), default=None,
                      help="width of the chart in characters (default: the terminal's, at most 100)")

    ins = sub.add_parser("inspect", help="what a checkpoint holds: model, tokenizer, progress, "
                                         "best figures, data, file parts")
    add_checkpoint_args(ins, "checkpoint to describe")
    ins.add_argument("--json", action="store_true", help="print the description as JSON")

    prep = sub.add_parser(
        "prepare", help="turn chat data (JSONL messages, CSV, text) into the training corpus format",
        description="Turn chat data into the [USER]/[BOT] corpus format that `shoestring train "
                    "--model-data` reads. Input forms, by extension: .jsonl/.json (one object per "
                    "line: {\"messages\": [{\"role\": \"user\", \"content\": ...}, ...]}), .csv/.tsv "
                    "(two columns: user, bot; one exchange per row), anything else (plain text: "
                    "dialogues are blocks separated by blank lines, lines alternate user, bot). "
                    "System messages are dropped; special-token text such as [EOS] inside a "
                    "message becomes (EOS); every problem is reported as file:line.")
    prep.add_argument("inputs", nargs="+", metavar="INPUT", help="chat data files")
    prep.add_argument("-o", "--out", required=True, metavar="FILE",
                      help="the corpus file to write ('-': standard output)")
    prep.add_argument("--format", choices=["jsonl", "csv", "text"], default=None,
                      help="read every input in this form (default: by file extension)")
    prep.add_argument("--max-problems", type=int_in(0, MAX_COUNT), default=20,
                      help="problems shown per file; 0 shows all (default: 20)")

    exp = sub.add_parser("export", help="a weights-only checkpoint, or safetensors + a "
                                        "HuggingFace tokenizer.json")
    add_checkpoint_args(exp, "checkpoint to export")
    add_int8_arg(exp, "store the matrices as int8 rows with one scale per row (json format; "
                      "about a third of the size; chat, generate and eval load it directly)")
    exp.add_argument("-o", "--out", metavar="FILE",
                     help="where to write: FILE.json (json), or FILE.safetensors and "
                          "FILE.tokenizer.json (safetensors) (default: next to the checkpoint, "
                          "named after it)")
    exp.add_argument("--format", choices=["json", "safetensors"], default="json",
                     help="json: a shoestring checkpoint without the optimiser state (chat, "
                          "generate and eval load it); safetensors: the tensors and the "
                          "tokenizer for other tools (default: json)")
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


def split_traceback(argv):
    """(argv without --traceback, whether it was there): the flag works anywhere on the line
    (before a `--` that ends the options)."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = "--traceback" in argv[:end]
    return [a for i, a in enumerate(argv) if i >= end or a != "--traceback"], found


def _quiet_stdout():
    """Standard output was closed by its reader (`| head`): send what is still buffered
    nowhere, so that Python's exit does not complain, and end with status 0."""
    _quiet_stream("stdout")


def _quiet_stream(name):
    """sys.<name> cannot be written (closed by its reader, a full device): its file descriptor
    becomes the null device, so what is still buffered goes nowhere; if the stream still cannot
    flush, sys.<name> itself becomes the null device. Either way Python's exit neither
    complains nor exits 120 (which it does when the last flush of a standard stream fails:
    Python 3.11.2 keeps the unwritten text buffered after a failed write)."""
    import os
    stream = getattr(sys, name)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
        stream.flush()
    except (OSError, ValueError, AttributeError):
        try:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        except OSError:
            pass


def _flush_stderr():
    """At the end of a command: stderr's last flush, or, if stderr cannot be written, its
    buffered text sent nowhere (a run whose stderr went away still ends with its own status)."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        _quiet_stream("stderr")


def _say(text):
    """A line on stderr, or nothing when stderr cannot be written."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None):
    """The `shoestring` command. Around the dispatch (_main): closed standard streams become the
    null device; SIGTERM/SIGHUP unwind like Ctrl-C and exit 128 + the signal (the training loop
    turns them into a saved stop instead); output that cannot be written (stdout to /dev/full or
    closed) and any other OS error are one line, never a traceback (#17)."""
    from .safeio import (Terminated, guard_std_streams, os_error_hint, raise_on_termination,
                         take_pending_stop)

    guard_std_streams()
    restore = raise_on_termination()
    try:
        try:
            code = _main(argv)
        except SystemExit:        # -h, --version, usage errors: their text must get out too
            sys.stdout.flush()
            raise
        sys.stdout.flush()        # a full or closed stdout fails here, not at interpreter exit
        pending = take_pending_stop()   # a signal whose exception something swallowed
        if pending is not None:
            raise Terminated(pending)
        return code
    except Terminated as exc:
        import signal
        _say("shoestring: stopped by %s" % signal.Signals(exc.signum).name)
        return 128 + exc.signum
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except OSError as exc:
        if "--traceback" in (sys.argv[1:] if argv is None else list(argv)):
            raise
        if exc.filename is None:          # a standard stream
            _quiet_stdout()
            _say("shoestring: error: cannot write the output: %s (%s)"
                 % (exc.strerror or exc, os_error_hint(exc, "another place for the output")))
        else:
            _say("shoestring: error: %s: %s (%s)" % (exc.filename, exc.strerror or exc,
                                                    os_error_hint(exc)))
        return 1
    finally:
        restore()
        _flush_stderr()


def _main(argv=None):
    from . import commands

    parser = build_parser()
    argv, traceback = split_traceback(sys.argv[1:] if argv is None else list(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:           # said by the subcommand's parser: its name and its help
        subs = next(a for a in parser._actions if a.dest == "command").choices
        subs.get(args.command, parser).error("unrecognized arguments: %s" % " ".join(extra))
    args.traceback = args.traceback or traceback
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return getattr(commands, "cmd_" + args.command)(args) or 0
    except BrokenPipeError:
        if args.traceback:
            raise
        _quiet_stdout()
        return 0
    except UsageError as exc:
        if args.traceback:
            raise
        print("shoestring %s: error: %s (see shoestring %s -h)"
              % (args.command, as_flags(exc, flag_names(parser, args.command)), args.command),
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
