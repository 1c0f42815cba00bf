"""commands.py: the handlers of the `shoestring` subcommands: flags in, typed configs, library out.

Each `cmd_<name>(args)` takes the argparse namespace of cli.py, builds what the library needs
(a TrainConfig, a Model, a Tokenizer), calls it and prints; it returns the exit status. Nothing
here is needed by the library, and heavy modules are imported only inside the handler that uses
them, so `shoestring chat` starts fast.
"""
import os
import sys

from .version import __version__
from .errors import UsageError

MODEL_KEYS = ("V", "C", "H", "L", "X", "K", "eps_rmsnorm", "cap",
              "tie_embeddings")                                # the architecture flags' dests


def cmd_info(args):
    from . import kernels

    print("shoestring %s" % __version__)
    print("instruction set in use: %s" % kernels.isa_active())
    print("compiled in:            %s" % ", ".join(kernels.isa_compiled()))
    print("supported by this CPU:  %s" % ", ".join(kernels.isa_supported()))
    print("build:                  %s" % kernels.build_info())
    print("int8 decode kernels:    %s" % kernels.int8_info())
    print("cores:                  %d" % (os.cpu_count() or 1))
    return 0


def cmd_tokenizer(args):
    """Train (--bpe-data) or load (--load), then save (--out) and show an encoding (--encode)."""
    from .tokenizer import Tokenizer

    if args.bpe_data and args.load:
        raise UsageError("give --bpe-data to train a tokenizer or --load to inspect one, not both")
    if not args.bpe_data and not args.load:
        raise UsageError("nothing to do: give --bpe-data FILE... to train a tokenizer, "
                         "or --load FILE to inspect one")
    if args.out is not None:
        _check_out(args.out, list(args.bpe_data or []) + ([args.load] if args.load else []))
    if args.bpe_data:
        tok = Tokenizer.train(paths=args.bpe_data, vocab_size=args.bpe_vocab_size,
                              encoding_errors=args.encoding_errors)
        s = tok.stats
        short = (" (the corpus ran out of pairs before %d)" % args.bpe_vocab_size
                 if tok.vocab_size < args.bpe_vocab_size else "")
        print("trained tokenizer: %d tokens (%d special, 256 bytes, %d merges)%s on %s bytes "
              "from %d file%s in %.2f s, %.2f bytes per token"
              % (tok.vocab_size, len(tok.special_tokens), len(tok.merges), short,
                 format(s["bytes"], ","), len(s["files"]), "" if len(s["files"]) == 1 else "s",
                 s["seconds"], s["bytes"] / max(1, s["tokens"])))
    else:
        tok = Tokenizer.load(args.load)
        print("loaded tokenizer from %s: %d tokens (%d special, 256 bytes, %d merges)"
              % (args.load, tok.vocab_size, len(tok.special_tokens), len(tok.merges)))
    if args.out is not None:
        tok.save(args.out)
        print("saved to %s" % args.out)
    if args.encode is not None:
        ids = tok.encode(args.encode, allow_special=True)
        n = len(args.encode.encode("utf-8", "surrogatepass"))
        print("%d tokens for %d bytes (%.2f bytes per token)" % (len(ids), n, n / max(1, len(ids))))
        print("ids: %s" % " ".join(map(str, ids)))
        for i in ids:
            print("%6d  '%s'" % (i, tok.id_to_piece(i)))
    return 0


def _check_out(out, inputs):
    """--out must name a file to write, never one of the command's inputs (checked before any
    work; the atomic writer itself refuses anything but a regular file there)."""
    if not out:
        raise UsageError("--out is empty (give a file name to save to)")
    if os.path.isdir(out):
        raise UsageError("--out %s is a folder (give a file name inside it)" % out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError("--out %s: the folder %s does not exist (create it first, or choose "
                         "another folder)" % (out, parent))
    import stat
    try:
        mode = os.lstat(out).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError("--out %s is not a regular file (%s): shoestring replaces only regular "
                         "files (give another file name)"
                         % (out, "a symbolic link" if stat.S_ISLNK(mode) else "a device, pipe "
                            "or socket"))
    for src in inputs:
        try:
            same = os.path.samefile(out, src)
        except (OSError, ValueError):
            same = False
        if same:
            raise UsageError("--out %s is also an input (%s): saving would replace it (give "
                             "another file name)" % (out, src))


# ---- train ----------------------------------------------------------------------------------
def _note(text):
    """A line on stderr that may go nowhere: a closed or full stderr never fails a finished run."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def train_config(args):
    """(TrainConfig, checkpoint dict or None) from the flags of `shoestring train`.

    Every setting flag defaults to argparse.SUPPRESS, so exactly the flags given (under any
    abbreviation argparse accepts) are attributes of `args`; a resume merges those, and only
    those, into the checkpoint's config (config.resume_config)."""
    from .config import NEW_RUN_CAP, SETTINGS, TrainConfig, resume_config
    from .params import ModelConfig

    given = {k: getattr(args, k) for k in SETTINGS if hasattr(args, k)}
    given_model = {k: getattr(args, k) for k in MODEL_KEYS if hasattr(args, k)}
    if args.checkpoint:
        from .checkpoint import read_checkpoint
        ckpt = read_checkpoint(args.checkpoint)
        return resume_config(ckpt.config, given, given_model), ckpt
    given_model.setdefault("K", given_model.get("X", ModelConfig.X))   # default: dense
    given_model.setdefault("cap", NEW_RUN_CAP)          # bounded recurrence for new models
    given_model.setdefault("V", None)                   # from the training text (planned_vocab)
    return TrainConfig(model=ModelConfig(**given_model), **given), None


class PrintSamples:
    """A training callback: every `every` steps, print a short greedy sample (the reply to
    "hello" on chat data, else a free continuation)."""

    def __init__(self, every, max_tokens=60):
        self.every, self.max_tokens = every, max_tokens

    def on_step_end(self, run, step, metrics):
        if self.every and step % self.every == 0:
            run.message("step %d sample: %s" % (step, self.sample(run)))

    def sample(self, run):
        from .inference import Model

        m = Model(run.model_config, run.flat_params.copy(), run.tokenizer)
        if run.chat_data:
            text = m.chat(max_response=self.max_tokens, temperature=0.0).send("hello")
        else:
            text = m.generate("\n", max_tokens=self.max_tokens, temperature=0.0)
        return text.replace("\n", " ")[:200]


def _columns():
    import shutil
    return shutil.get_terminal_size((80, 24)).columns


def cmd_train(args):
    from .trainer import fmt_seconds, train

    config, ckpt = train_config(args)
    out_dir = args.out_dir
    if out_dir is None and args.checkpoint:
        out_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    callbacks = [] if args.quiet else [PrintSamples(args.sample_every)]
    result = train(config, model_data=args.model_data, validation_data=args.validation_data,
                   out_dir=out_dir, callbacks=callbacks, checkpoint=ckpt, bpe_data=args.bpe_data,
                   quiet=args.quiet)
    if result.interrupted:
        import signal
        path = result.last_checkpoint
        sig = result.stop_signal or signal.SIGINT
        name = {signal.SIGINT: "interrupted"}.get(sig, "stopped by %s" % signal.Signals(sig).name)
        _note("shoestring: %s at step %d; saved %s (resume with `shoestring train --checkpoint "
              "%s`)" % (name, result.steps, path, path))
        return 128 + int(sig)                 # the shell's status for that signal: 130, 143, 129
    if not args.quiet:
        from .plot import text_chart
        chart = text_chart(result.metrics, width=min(100, _columns()) - 1, height=10) \
            if len(result.metrics) >= 2 else ""
        if chart:
            _note(chart)
        per_step = config.batch_size * config.seq_length * config.accumulate
        summary = "done: %d steps in %s" % (result.tokens // per_step, fmt_seconds(result.seconds))
        if result.metrics:
            last = result.metrics[-1]
            summary += ("; val loss %.4f (best %.4f), %.3f bits/char; %d state resets"
                        % (last["val_loss"], result.best_val, last["bits_per_char"],
                           result.state_resets))
        _note(summary)
    # even with --quiet: where the run went (and how to see it)
    _note("checkpoints in %s (best.json, last.json); curves: shoestring plot %s"
          % (result.out_dir, result.out_dir))
    if not args.no_chat and sys.stdin.isatty() and sys.stdout.isatty():
        from .chat import run_chat
        from .inference import Model
        model = Model(result.model_config, result.params, result.tokenizer)
        if not args.quiet:
            print("opening the chat (leave with `exit` or Ctrl-D); later: shoestring chat %s"
                  % result.out_dir, file=sys.stderr)
        return run_chat(model, args.max_tokens, args.temperature, args.top_k, args.top_p, None)
    return 0


# ---- eval ---------------------------------------------------------------------------------------
def cmd_eval(args):
    """`shoestring eval --checkpoint F --data FILE [--int8] [--json]` (MODEL.md §7, evaluate.py);
    int8 weights (--int8, or an int8 export) are scored through the decode step chat runs."""
    import json

    from .dataset import read_texts
    from .evaluate import score_model
    from .inference import load

    model = load(resolve_checkpoint(args, note=not args.json), int8=args.int8)
    text = "".join(t for _, t in read_texts([args.data], args.encoding_errors, "evaluation data"))
    r = score_model(model, text)
    if args.json:
        out = {k: r[k] for k in ("bits_per_char", "nats_per_token", "tokens", "chars",
                                 "perplexity", "state_resets")}
        out["weights"] = "int8" if model.int8 else "float32"
        print(json.dumps(out))
    else:
        print("%s: %.4f bits/char, %.4f nats/token, perplexity %.2f (%d tokens, %d characters, "
              "%d state resets%s)" % (args.data, r["bits_per_char"], r["nats_per_token"],
                                      r["perplexity"], r["tokens"], r["chars"], r["state_resets"],
                                      ", int8 weights" if model.int8 else ""))
    return 0


# ---- which checkpoint ---------------------------------------------------------------------------
RUNS_DIR = "runs"
CHECKPOINT_NAMES = ("best.json", "last.json")


def newest_run(root=RUNS_DIR):
    """The newest run folder under `root` (the one whose checkpoint was written last), or None."""
    best, when = None, None
    try:
        names = os.listdir(root)
    except OSError:
        return None
    for name in names:
        folder = os.path.join(root, name)
        for ck in CHECKPOINT_NAMES:
            try:
                t = os.path.getmtime(os.path.join(folder, ck))
            except OSError:
                continue
            if when is None or t > when:
                best, when = folder, t
    return best


def run_checkpoint(folder):
    """The checkpoint a run folder stands for: its best.json, else its last.json."""
    for ck in CHECKPOINT_NAMES:
        path = os.path.join(folder, ck)
        if os.path.isfile(path):
            return path
    from .errors import CheckpointError
    raise CheckpointError("%s is a folder without best.json or last.json (give a checkpoint file, "
                          "or a folder that `shoestring train` wrote)" % folder)


def resolve_checkpoint(args, note=True):
    """The checkpoint file of a command: CHECKPOINT or -m/--checkpoint; a run folder means its
    best.json; neither means the newest run under runs/ (said on standard error when `note`)."""
    pos, flag = getattr(args, "checkpoint_pos", None), getattr(args, "checkpoint", None)
    if pos and flag and pos != flag:
        raise UsageError("two checkpoints given (%s and -m %s): give one" % (pos, flag))
    path = pos or flag
    if path is None:
        folder = newest_run()
        if folder is None:
            raise UsageError("no checkpoint given and no run under %s/ here (give CHECKPOINT, "
                             "or train one with `shoestring train`)" % RUNS_DIR)
        path = run_checkpoint(folder)
        if note:
            print("shoestring: using %s, the newest run under %s/ (give a checkpoint to choose "
                  "another)" % (path, RUNS_DIR), file=sys.stderr)
        return path
    if os.path.isdir(path):
        return run_checkpoint(path)
    return path


# ---- standard input -----------------------------------------------------------------------------
_STDIN_ERRORS = "shoestring-stdin"
_stdin_warned = []


def _stdin_replace(exc):
    """Codec error handler: an undecodable byte becomes U+FFFD; the first one says so."""
    if not _stdin_warned:
        _stdin_warned.append(True)
        sys.stderr.write("shoestring: warning: standard input is not valid %s; undecodable "
                         "bytes are read as U+FFFD\n" % (getattr(sys.stdin, "encoding", None)
                                                          or "UTF-8"))
        sys.stderr.flush()
    return "\ufffd", exc.end


def tolerant_stdin():
    """Make undecodable bytes on standard input U+FFFD (one warning line) instead of an error
    that ends the session."""
    import codecs
    try:
        codecs.lookup_error(_STDIN_ERRORS)
    except LookupError:
        codecs.register_error(_STDIN_ERRORS, _stdin_replace)
    try:
        sys.stdin.reconfigure(errors=_STDIN_ERRORS)
    except (AttributeError, ValueError, OSError):
        pass


# ---- chat, generate -----------------------------------------------------------------------------
def cmd_chat(args):
    from .chat import run_chat
    from .inference import load

    model = load(resolve_checkpoint(args, note=not args.quiet), int8=args.int8)
    tolerant_stdin()
    return run_chat(model, args.max_tokens, args.temperature, args.top_k, args.top_p, args.seed,
                    banner=not args.quiet)


def cmd_generate(args):
    """Print the continuation of --prompt (or of standard input, less the one trailing newline
    that `echo` adds) as it streams, stopping early at [EOS]."""
    from .inference import load

    model = load(resolve_checkpoint(args, note=not args.quiet), int8=args.int8)
    prompt = args.prompt
    if prompt is None:
        tolerant_stdin()
        if sys.stdin.isatty() and not args.quiet:
            sys.stderr.write("(reading the prompt from standard input; end it with Ctrl-D)\n")
        prompt = sys.stdin.read()
        if prompt.endswith("\n"):        # `echo text |` adds one; it is not part of the prompt
            prompt = prompt[:-2] if prompt.endswith("\r\n") else prompt[:-1]
    elif args.special:
        prompt = prompt.replace("\\n", "\n")    # `-p '[USER] hi [EOS]\n[BOT]'` as typed
    out = sys.stdout
    for piece in model.generate(prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, seed=args.seed, stream=True,
                                allow_special=args.special):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    return 0


# ---- plot, inspect, prepare, export ---------------------------------------------------------------
def cmd_plot(args):
    """The run's curves: a terminal chart, or an SVG/PNG file with --out."""
    from .plot import load_metrics, text_chart, write_plot

    run = args.run
    if run is None:
        run = newest_run()
        if run is None:
            raise UsageError("no run given and no run under %s/ here (give RUN, a folder that "
                             "`shoestring train` wrote)" % RUNS_DIR)
        print("shoestring: plotting %s, the newest run under %s/" % (run, RUNS_DIR),
              file=sys.stderr)

    def warn(msg):
        print("shoestring: warning: %s" % msg, file=sys.stderr)

    rows = load_metrics(run, warn=warn)
    if args.out:
        title = os.path.basename(os.path.normpath(run if os.path.isdir(run) else os.path.dirname(run) or "."))
        write_plot(rows, args.out, title=title)
        print("wrote %s (%d evaluation%s)" % (args.out, len(rows), "" if len(rows) == 1 else "s"))
        return 0
    width = args.width or min(100, _columns())
    chart = text_chart(rows, width=width - 1)
    if not chart:
        raise UsageError("%s has no bits/char figures to plot yet" % run)
    print(chart)
    return 0


def cmd_inspect(args):
    from .inspector import describe, format_text, to_json

    info = describe(resolve_checkpoint(args))
    print(to_json(info) if args.json else format_text(info))
    return 0


def cmd_prepare(args):
    from .dataset import atomic_write_text
    from .prepare import check_usable, format_corpus, format_problems, prepare, summary

    if args.out != "-":
        _check_out(args.out, args.inputs)          # never over an input (#17)
    res = prepare(args.inputs, fmt=args.format)
    for line in format_problems(res, limit=args.max_problems):
        print(line, file=sys.stderr)
    check_usable(res)
    text = format_corpus(res.dialogues)
    if args.out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        where = "standard output"
    else:
        atomic_write_text(args.out, text, what="corpus")
        where = args.out
    for line in summary(res, where, len(text)):
        print(line, file=sys.stderr)
    if args.out != "-":
        print("train on it: shoestring train --model-data %s" % args.out, file=sys.stderr)
    return 0


def cmd_export(args):
    from .export import export, output_paths, summary

    src = resolve_checkpoint(args)
    out = args.out
    if out is None:
        stem = os.path.splitext(src)[0]
        out = stem + ((".int8.json" if args.int8 else ".weights.json") if args.format == "json" else "")
    if not out:
        _check_out(out, [src])
    for path in output_paths(out, args.format, args.int8):   # never over the checkpoint (#17)
        _check_out(path, [src])
    written = export(src, out, fmt=args.format, int8=args.int8)
    for line in summary(src, written):
        print(line)
    return 0


# ---- serve --------------------------------------------------------------------------------------
def cmd_serve(args):
    """Serve the checkpoint over HTTP (shoestring.serve) until Ctrl-C or SIGTERM."""
    from .inference import load
    from . import serve

    path = resolve_checkpoint(args)
    model = load(path, int8=args.int8)
    model_id = serve.model_id_for(path)
    srv = serve.make_server(model, args.host, args.port, args.api_key, args.cache_mb,
                            args.max_tokens, args.max_body_kb, args.temperature, args.top_k,
                            args.top_p, model_id, None if args.quiet else sys.stderr, args.seed)
    if not srv.loopback:
        print("shoestring serve: warning: listening on %s: anyone who can reach port %d can use "
              "the model%s" % (args.host, srv.server_address[1], "" if args.api_key else
                               " (set --api-key to require a key)"), file=sys.stderr)
    print("shoestring serve: %s (model %s: %s)" % (srv.url, model_id, model.describe()), flush=True)
    print("shoestring serve: the API at %sv1 (OpenAI-compatible); Ctrl-C stops" % srv.url,
          flush=True)
    return serve.run(srv)

