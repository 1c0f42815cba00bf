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
    if args.out:
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


# ---- train ----------------------------------------------------------------------------------
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
        from .checkpoint import load_checkpoint
        ckpt = load_checkpoint(args.checkpoint)
        return resume_config(ckpt["config"], given, given_model), ckpt
    given_model.setdefault("K", given_model.get("X", ModelConfig.X))   # default: dense
    given_model.setdefault("cap", NEW_RUN_CAP)          # bounded recurrence for new models
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

        m = Model(run.model_config, run.params.copy(), run.tokenizer)
        if run.chat_data:
            text = m.chat(max_response=self.max_tokens, temperature=0.0).send("hello")
        else:
            text = m.generate("\n", max_tokens=self.max_tokens, temperature=0.0)
        return text.replace("\n", " ")[:200]


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
        path = result.last_checkpoint
        print("shoestring: interrupted at step %d; saved %s (resume with "
              "`shoestring train --checkpoint %s`)" % (result.steps, path, path), file=sys.stderr)
        return 130
    if not args.quiet:
        per_step = config.batch_size * config.seq_length * config.accumulate
        summary = "done: %d steps in %s" % (result.tokens // per_step, fmt_seconds(result.seconds))
        if result.metrics:
            last = result.metrics[-1]
            summary += ("; val loss %.4f (best %.4f), %.3f bits/char; %d state resets; "
                        "checkpoints in %s" % (last["val_loss"], result.best_val,
                                               last["bits_per_char"], result.state_resets,
                                               result.out_dir))
        print(summary, file=sys.stderr)
    if not args.no_chat and sys.stdin.isatty() and sys.stdout.isatty():
        from .chat import run_chat
        from .inference import Model
        model = Model(result.model_config, result.params, result.tokenizer)
        if not args.quiet:
            print("opening the chat (leave with `exit` or Ctrl-D); later: shoestring chat "
                  "--checkpoint %s" % os.path.join(result.out_dir, "best.json"), file=sys.stderr)
        return run_chat(model, args.max_response, args.temperature, args.top_k, args.top_p, None)
    return 0


# ---- eval ---------------------------------------------------------------------------------------
def cmd_eval(args):
    """`shoestring eval --checkpoint F --data FILE [--json]` (MODEL.md §7, evaluate.py)."""
    import json

    from .dataset import read_texts
    from .evaluate import score_text
    from .inference import load

    model = load(args.checkpoint)
    text = "".join(t for _, t in read_texts([args.data], args.encoding_errors, "evaluation data"))
    r = score_text(model.cfg, model.params, model.tokenizer, text)
    if args.json:
        print(json.dumps({k: r[k] for k in ("bits_per_char", "nats_per_token", "tokens", "chars",
                                            "perplexity", "state_resets")}))
    else:
        print("%s: %.4f bits/char, %.4f nats/token, perplexity %.2f (%d tokens, %d characters, "
              "%d state resets)" % (args.data, r["bits_per_char"], r["nats_per_token"],
                                    r["perplexity"], r["tokens"], r["chars"], r["state_resets"]))
    return 0


# ---- chat, generate -----------------------------------------------------------------------------
def cmd_chat(args):
    from .chat import run_chat
    from .inference import load

    model = load(args.checkpoint)
    return run_chat(model, args.max_response, args.temperature, args.top_k, args.top_p, args.seed)


def cmd_generate(args):
    """Print the continuation of --prompt (or of standard input, less the one trailing newline
    that `echo` adds) as it streams, stopping early at [EOS]."""
    from .inference import load

    model = load(args.checkpoint)
    prompt = args.prompt
    if prompt is None:
        if sys.stdin.isatty():
            sys.stderr.write("(reading the prompt from standard input; end it with Ctrl-D)\n")
        prompt = sys.stdin.read()
        if prompt.endswith("\n"):        # `echo text |` adds one; it is not part of the prompt
            prompt = prompt[:-2] if prompt.endswith("\r\n") else prompt[:-1]
    out = sys.stdout
    for piece in model.generate(prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, seed=args.seed, stream=True):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    return 0
