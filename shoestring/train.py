"""train.py: the training loop of MODEL.md §2 and `shoestring train`.

Contiguous streams with carried state (truncated BPTT), mean cross-entropy, AdamW with
matrices-only decay, global-norm clip, warm-up + cosine schedule, gradient accumulation, seeded.
Checkpoints (`last.json`, `best.json`) are written atomically; resuming continues exactly where the
run stopped (data position, RNG state, optimiser state, carried recurrent state). Ctrl-C finishes
the current step, saves and exits 130. A non-finite loss or gradient stops training and keeps the
last good checkpoint. A stream whose recurrent state passes model.STATE_GUARD (or is not finite) is reset
to zero; every reset is counted and logged (MODEL.md §2, stability hazard).
"""
import hashlib
import json
import math
import os
import signal
import sys
import time

import numpy as np

from .checkpoint import (atomic_write_text, load_checkpoint, remove_stale_temp_files,
                         save_checkpoint)
from .data import default_corpus_path
from .dataset import Windows, read_texts
from .errors import CheckpointError, DataError, ShoestringError, TrainingError
from .model import Network, guard_state
from .optim import AdamW, default_warmup, lr_at
from .params import ModelConfig, ParamLayout

DEFAULT_EPOCHS = 5          # MODEL.md §6
BUNDLED_EPOCHS = 20         # on the bundled chat corpus (230 KB): about 1,000 steps
ARCH_FLAGS = {              # checkpoint config key -> (argparse dest, flag)
    "V": ("bpe_vocab_size", "--bpe-vocab-size"),
    "C": ("embedding_dim", "--embedding-dim"),
    "H": ("gru_hidden_size", "--gru-hidden-size"),
    "L": ("gru_layers", "--gru-layers"),
    "X": ("num_experts", "--num-experts"),
    "K": ("active_experts", "--active-experts"),
}


def _count(v, none_ok=False):
    return (v is None and none_ok) or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10 ** 12)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# Training settings a resume takes from the checkpoint when the flag is not given again.
RESUME_DEFAULTS = {
    "epochs": lambda v: _count(v) and v >= 1,
    "max_steps": lambda v: _count(v, none_ok=True),
    "lr": lambda v: _number(v) and v > 0,
    "wd": _number,
    "grad_clip": _number,
    "lr_schedule": lambda v: v in ("cosine", "constant"),
    "warmup_steps": lambda v: _count(v, none_ok=True),
    "eps_adamw": lambda v: _number(v) and v > 0,
    "val_fraction": lambda v: _number(v) and v <= 0.5,
}
RESUME_FIXED = ("seq_length", "batch_size", "accumulate")   # define the data position


def default_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def fingerprint(tokens):
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<i4").tobytes()).hexdigest()[:16]


# ---- progress display ---------------------------------------------------------------------------
class Progress:
    """One status line on a terminal (rewritten in place), a line every few seconds otherwise."""

    def __init__(self, total, stream=None, quiet=False):
        stream = sys.stderr if stream is None else stream     # looked up now: redirects work
        self.total, self.stream, self.quiet = total, stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.time()
        self.last = 0.0
        self.start_step = 0       # the step this session started from (for the rate and ETA)

    def update(self, step, text):
        if self.quiet:
            return
        now = time.time()
        if not self.tty and now - self.last < 10 and step < self.total:
            return
        self.last = now
        frac = step / max(1, self.total)
        done = step - self.start_step
        rate = done / max(1e-9, now - self.t0)
        eta = (self.total - step) / rate if rate > 0 else 0
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = "[%s] %d/%d %s eta %s" % (bar, step, self.total, text, fmt_seconds(eta))
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150)[:150].rstrip() + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text):
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def fmt_seconds(s):
    s = int(s)
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) if s >= 3600 else "%d:%02d" % (s // 60, s % 60)


# ---- data preparation -----------------------------------------------------------------------
def build_tokenizer(args, model_paths, progress):
    from .tokenizer import Tokenizer

    bpe_paths = args.bpe_data or model_paths
    vocab = args.bpe_vocab_size or ModelConfig().V
    t0 = time.time()
    tok = Tokenizer.train(paths=bpe_paths, vocab_size=vocab, encoding_errors=args.encoding_errors)
    progress.message("tokenizer: %d tokens trained on %s in %.1f s"
                     % (tok.vocab_size, ", ".join(os.path.basename(p) for p in bpe_paths),
                        time.time() - t0))
    return tok


def encode_texts(tok, texts):
    parts = [tok.encode_array(t, allow_special=True) for _, t in texts]
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


# ---- the trainer -----------------------------------------------------------------------------
class Trainer:
    """Owns the model, optimiser, data windows and run state; run() trains to the end."""

    def __init__(self, args, cfg, tok, train_tokens, val_tokens, val_chars, params=None,
                 ckpt=None, out_dir=None, progress=None):
        self.args = args
        self.cfg, self.tok = cfg, tok
        self.layout = ParamLayout(cfg)
        self.B, self.T, self.acc = args.batch_size, args.seq_length, args.accumulate
        self.threads = args.threads or default_threads()
        self.train_win = Windows(train_tokens, self.B, self.T, "model data")
        self.val_tokens, self.val_chars = val_tokens, val_chars
        self.out_dir = out_dir
        self.progress = progress
        if self.acc > self.train_win.count:
            raise DataError(
                "--accumulate %d exceeds the %d windows in one epoch of the model data (lower "
                "--accumulate, --batch-size or --seq-length, or use more data)"
                % (self.acc, self.train_win.count))
        self.steps_per_epoch = max(1, self.train_win.count // self.acc)
        total = self.steps_per_epoch * args.epochs
        if args.max_steps:
            total = min(total, args.max_steps)
        self.total_steps = total
        self.warmup = args.warmup_steps if args.warmup_steps is not None else default_warmup(total)

        self.params = params if params is not None else self.layout.init(args.seed)
        self.grads = self.layout.zeros()
        self.opt = AdamW(self.layout.n, self.layout.n_decay, eps=args.eps_adamw, weight_decay=args.wd)
        self.net = Network(cfg, self.params, self.B, self.T, self.threads, train=True)
        self.h = np.zeros((cfg.L, self.B, cfg.X, cfg.H), np.float32)
        # run state (all of it goes into the checkpoint)
        self.rng = np.random.default_rng(args.seed)
        self.epoch = 0                # epochs completed
        self.window = 0               # next window within the epoch
        self.offset = None            # this epoch's stream offset (None: epoch not started)
        self.best_val = float("inf")
        self.metrics = []
        self.resets = 0
        self.train_fp = fingerprint(train_tokens)
        if ckpt is not None:
            self._restore(ckpt)
        self.stop_requested = False
        self.chat_data = False        # set by the CLI when the model data is in chat format
        # A loss this far above uniform guessing (ln V) means the run has blown up.
        self.diverged_above = 2.0 * math.log(cfg.V) + 1.0

    # ---- checkpoint state ----------------------------------------------------------------
    def _restore(self, ck):
        try:
            self._restore_state(ck)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CheckpointError(
                "the checkpoint's training state is malformed (%s: %s) (the file was edited or "
                "damaged; use another checkpoint)" % (type(exc).__name__, str(exc)[:120])) from None
        if not (0 <= self.window <= self.train_win.count and self.epoch >= 0 and
                (self.offset is None or 0 <= self.offset < self.train_win.n)):
            raise CheckpointError(
                "the checkpoint's data position (epoch %r, window %r, offset %r) is outside the "
                "model data (the file was edited or damaged; use another checkpoint)"
                % (self.epoch, self.window, self.offset))

    def _restore_state(self, ck):
        tr = ck["training"]
        for key in ("epoch", "window"):
            if not isinstance(tr[key], int) or isinstance(tr[key], bool):
                raise TypeError("%s must be a whole number, got %r" % (key, tr[key]))
        if tr["offset"] is not None and (not isinstance(tr["offset"], int)
                                         or isinstance(tr["offset"], bool)):
            raise TypeError("offset must be a whole number or null, got %r" % (tr["offset"],))
        if tr.get("train_fingerprint") != self.train_fp:
            raise CheckpointError(
                "the model data differs from the data this checkpoint was trained on "
                "(resume with the same --model-data, or start a new run)")
        if ck.get("optimizer") is not None:
            self.opt.load_state_dict(ck["optimizer"])
        self.rng.bit_generator.state = tr["rng"]
        self.epoch, self.window, self.offset = tr["epoch"], tr["window"], tr["offset"]
        self.best_val = float(tr["best_val"]) if tr["best_val"] is not None else float("inf")
        self.resets = int(tr.get("state_resets", 0))
        state = np.asarray(tr["state"], dtype=np.float32)
        if state.shape != self.h.shape:
            raise CheckpointError("checkpoint recurrent state has shape %s, expected %s"
                                  % (state.shape, self.h.shape))
        self.h[...] = state
        self.metrics = list(ck.get("metrics", []))

    def checkpoint_dict(self):
        a = self.args
        train_cfg = {k: getattr(a, k) for k in (
            "seq_length", "batch_size", "epochs", "max_steps", "lr", "wd", "grad_clip",
            "lr_schedule", "warmup_steps", "accumulate", "eps_adamw", "seed", "val_fraction",
            "max_response", "temperature", "top_k", "top_p")}
        train_cfg["threads"] = self.threads
        train_cfg["bpe_vocab_size"] = a.bpe_vocab_size or self.cfg.V     # asked for (V: trained)
        train_cfg["model_data"] = [os.path.abspath(p) for p in (a.model_data_resolved or [])]
        train_cfg["validation_data"] = os.path.abspath(a.validation_data) if a.validation_data else None
        return {
            "config": {"model": self.cfg.to_dict(), "train": train_cfg},
            "tokenizer": self.tok.to_dict(),
            "params": self.params,
            "optimizer": self.opt.state_dict(),
            "training": {
                "step": self.opt.step, "epoch": self.epoch, "window": self.window,
                "offset": self.offset, "rng": self.rng.bit_generator.state,
                "best_val": None if math.isinf(self.best_val) else self.best_val,
                "state_resets": self.resets, "train_fingerprint": self.train_fp,
                "state": self.h.tolist(),
            },
            "metrics": self.metrics,
        }

    def save(self, name):
        path = os.path.join(self.out_dir, name)
        save_checkpoint(path, self.checkpoint_dict())
        return path

    # ---- one optimiser step ---------------------------------------------------------------
    def _guard_state(self):
        """Reset training streams whose state is too large or not finite; count them."""
        self.resets += guard_state(self.h)

    def step(self):
        """Run `accumulate` windows and one AdamW update. Returns (loss mean, grad norm, lr)."""
        if self.offset is None:               # a new epoch: new stream offsets, fresh state
            self.offset = self.train_win.random_offset(self.rng)
            self.h.fill(0.0)
        self.net.zero_grads()
        dscale = 1.0 / (self.B * self.T * self.acc)
        loss = 0.0
        for _ in range(self.acc):
            tokens, targets = self.train_win.window(self.window, self.offset)
            loss += self.net.forward_backward(tokens, targets, self.h, dscale)
            self.window += 1
            self._guard_state()
        loss /= self.B * self.T * self.acc
        if not math.isfinite(loss):
            raise TrainingError(
                "the loss became %s at step %d (lower --lr or --grad-clip; the last good "
                "checkpoint is kept)" % (loss, self.opt.step + 1))
        if loss > self.diverged_above:
            raise TrainingError(
                "training diverged: the loss became %.1f at step %d, far worse than guessing "
                "uniformly (%.1f) (lower --lr or --grad-clip; the last good checkpoint is kept)"
                % (loss, self.opt.step + 1, math.log(self.cfg.V)))
        self.net.reduce_grads(self.grads)
        lr = lr_at(self.opt.step, self.args.lr, self.total_steps, self.warmup, self.args.lr_schedule)
        norm = self.opt.update(self.params, self.grads, lr, self.args.grad_clip)
        if not math.isfinite(norm):
            raise TrainingError(
                "the gradient norm became %s at step %d (lower --lr; the last good checkpoint is "
                "kept)" % (norm, self.opt.step + 1))
        if self.window + self.acc > self.train_win.count:   # epoch done
            self.epoch += 1
            self.window = 0
            self.offset = None
        return loss, norm, lr

    # ---- validation ---------------------------------------------------------------------------
    def evaluate(self):
        """(mean loss, perplexity, bits per character) on the validation tokens."""
        n = len(self.val_tokens)
        T = min(self.T, n - 1)
        B = max(1, min(self.B, (n - 1) // T))
        win = Windows(self.val_tokens, B, T, "validation data")
        net = Network(self.cfg, self.params, B, T, min(self.threads, B), train=False)
        h = np.zeros((self.cfg.L, B, self.cfg.X, self.cfg.H), np.float32)
        total = 0.0
        for w in range(win.count):
            tokens, targets = win.window(w)
            total += net.forward(tokens, targets, h)
            guard_state(h)                    # the same guard as in training
        net.close()
        count = B * T * win.count
        loss = total / count
        chars_per_token = self.val_chars / max(1, n)
        bpc = loss / math.log(2) / chars_per_token if chars_per_token > 0 else float("nan")
        return loss, math.exp(min(loss, 50.0)), bpc

    # ---- the loop -----------------------------------------------------------------------------
    def _on_sigint(self, signum, frame):
        if self.stop_requested:      # second Ctrl-C: stop now, last.json stays as it was
            raise KeyboardInterrupt
        self.stop_requested = True

    def run(self):
        a, prog = self.args, self.progress
        eval_every = a.eval_every or self.steps_per_epoch
        prog.start_step = self.opt.step
        prev = signal.signal(signal.SIGINT, self._on_sigint) if _main_thread() else None
        tokens_per_step = self.B * self.T * self.acc
        t_last, step_last, loss_acc, n_acc = time.time(), self.opt.step, 0.0, 0
        interrupted = False
        try:
            deadline = time.time() + 60.0 * a.max_minutes if a.max_minutes else None
            while self.opt.step < self.total_steps:
                if self.stop_requested:
                    interrupted = True
                    break
                loss, norm, lr = self.step()
                out_of_time = deadline is not None and time.time() >= deadline
                loss_acc += loss
                n_acc += 1
                step = self.opt.step
                now = time.time()
                tps = tokens_per_step * (step - step_last) / max(1e-9, now - t_last)
                prog.update(step, "loss %.3f lr %.2e %.0f tok/s" % (loss, lr, tps))
                if a.sample_every and step % a.sample_every == 0 and not a.quiet:
                    prog.message("step %d sample: %s" % (step, self.sample_text()))
                if step % eval_every == 0 or step == self.total_steps or out_of_time:
                    val, ppl, bpc = self.evaluate()
                    if not val <= self.diverged_above:      # NaN, inf or blown up: keep last.json
                        raise TrainingError(
                            "training diverged: the validation loss became %.4g at step %d (lower "
                            "--lr or --grad-clip; the last good checkpoint is kept)" % (val, step))
                    rec = {"step": step, "epoch": self.epoch + self.window / max(1, self.train_win.count),
                           "train_loss": loss_acc / n_acc, "val_loss": val, "perplexity": ppl,
                           "bits_per_char": bpc, "lr": lr, "grad_norm": norm,
                           "tokens_per_s": tps, "state_resets": self.resets,
                           "time": round(now, 3)}
                    self.metrics.append(rec)
                    self._append_metrics(rec)
                    prog.message("step %d: train loss %.4f, val loss %.4f, ppl %.2f, %.3f bits/char"
                                 % (step, rec["train_loss"], val, ppl, bpc))
                    if val < self.best_val:
                        self.best_val = val
                        self.save("best.json")
                    self.save("last.json")
                    t_last, step_last, loss_acc, n_acc = time.time(), step, 0.0, 0
                if out_of_time:
                    prog.message("--max-minutes %g reached at step %d; resume with --checkpoint"
                                 % (a.max_minutes, step))
                    break
        except KeyboardInterrupt:
            interrupted = True
            prog.close()
            raise
        finally:
            if prev is not None:
                signal.signal(signal.SIGINT, prev)
            self.net.close()
        prog.close()
        if interrupted:
            path = self.save("last.json")
            print("shoestring: interrupted at step %d; saved %s (resume with "
                  "`shoestring train --checkpoint %s`)" % (self.opt.step, path, path),
                  file=sys.stderr)
        return interrupted

    def _append_metrics(self, rec):
        path = os.path.join(self.out_dir, "metrics.jsonl")
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as exc:
            raise CheckpointError("could not write %s: %s (free some disk space or choose "
                                  "another --out-dir; the last checkpoint is kept)"
                                  % (path, exc.strerror or exc)) from None

    def sample_text(self, max_tokens=60):
        """A short greedy sample: the reply to "hello" for chat data, else a free continuation."""
        from .sample import Model

        m = Model(self.cfg, self.params.copy(), self.tok)
        if self.chat_data:
            text = m.chat(max_response=max_tokens, temperature=0.0).send("hello")
        else:
            text = m.generate("\n", max_tokens=max_tokens, temperature=0.0)
        return text.replace("\n", " ")[:200]


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


# ---- command line -----------------------------------------------------------------------------
def resolve_config(args, ckpt):
    """The ModelConfig: from the checkpoint (flags may only agree with it) or from the flags."""
    if ckpt is not None:
        m = dict(ckpt["config"]["model"])
        tr = ckpt["config"].get("train", {})
        _check_train_config(tr)
        for key, (dest, flag) in ARCH_FLAGS.items():
            given = getattr(args, dest)
            # the vocabulary asked for may exceed the one trained (the merges ran out): both agree
            agree = (m[key], tr.get("bpe_vocab_size")) if key == "V" else (m[key],)
            if given is not None and given not in agree:
                raise ShoestringError(
                    "%s %d contradicts the checkpoint, which has %d (drop the flag to resume, or "
                    "start a new run without --checkpoint)" % (flag, given, m[key]))
        if args.bpe_vocab_size is None:
            args.bpe_vocab_size = tr.get("bpe_vocab_size")
        for dest in RESUME_FIXED:
            if dest in tr and getattr(args, dest) != tr[dest] and _given(args, dest):
                raise ShoestringError(
                    "--%s %s contradicts the checkpoint, which has %s (drop the flag to resume)"
                    % (dest.replace("_", "-"), getattr(args, dest), tr[dest]))
            if dest in tr:
                setattr(args, dest, tr[dest])
        for dest, ok in RESUME_DEFAULTS.items():     # the run's plan, unless a flag changes it
            if dest in tr and not _given(args, dest):
                if not ok(tr[dest]):
                    raise CheckpointError(
                        "the checkpoint's config.train.%s is %r, which is not valid (the file was "
                        "edited or damaged; give --%s explicitly)"
                        % (dest, tr[dest], dest.replace("_", "-")))
                setattr(args, dest, tr[dest])
        return ModelConfig(**m)
    d = ModelConfig()                           # the defaults of MODEL.md §6
    X = args.num_experts or d.X
    return ModelConfig(V=args.bpe_vocab_size or d.V, C=args.embedding_dim or d.C,
                       H=args.gru_hidden_size or d.H, L=args.gru_layers or d.L, X=X,
                       K=args.active_experts or X, eps_rmsnorm=args.eps_rmsnorm)


def memory_needed(cfg, B, T, threads):
    """Bytes a training run holds at its peak, roughly: parameters, the summed and per-shard
    gradients, AdamW m and v, the checkpoint text being written, and the activations."""
    from .kernels import moegru_sizes

    n = ParamLayout(cfg).n
    S = max(1, min(threads, B))
    per_token = cfg.C + cfg.L * cfg.H + 2 * cfg.V + 2 + cfg.C + (cfg.L - 1) * cfg.H + cfg.H
    acts = B * T * per_token
    for l in range(cfg.L):
        a, w = moegru_sizes(B, T, cfg.layer_input(l), cfg.H, cfg.X, cfg.K)
        acts += a + w
    return 4 * n * (4 + S) + 64 * n + 4 * acts


def physical_memory():
    """Bytes of RAM in this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(cfg, B, T, threads):
    """Refuse a run that cannot fit in this machine's memory, before allocating any of it."""
    need, have = memory_needed(cfg, B, T, threads), physical_memory()
    if have and need > have:
        raise ShoestringError(
            "this run needs about %.1f GB of memory (%s parameters; --batch-size %d x "
            "--seq-length %d), more than this machine's %.1f GB (lower --embedding-dim, "
            "--gru-hidden-size, --num-experts, --gru-layers, --bpe-vocab-size, --batch-size or "
            "--seq-length)" % (need / 1e9, format(ParamLayout(cfg).n, ","), B, T, have / 1e9))


def _check_train_config(tr):
    """The training section of a checkpoint's config: the fields a resume takes from it."""
    if not isinstance(tr, dict):
        raise CheckpointError("the checkpoint's config.train is not an object (the file was "
                              "edited or damaged; use another checkpoint)")
    for dest in RESUME_FIXED:
        v = tr.get(dest)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 10 ** 6):
            raise CheckpointError("the checkpoint's config.train.%s is %r, not a whole number in "
                                  "[1, 1000000] (the file was edited or damaged; use another "
                                  "checkpoint)" % (dest, v))
    bv = tr.get("bpe_vocab_size")
    if bv is not None and not (_count(bv) and 1 <= bv <= 10 ** 6):
        raise CheckpointError("the checkpoint's config.train.bpe_vocab_size is %r, not a whole "
                              "number in [1, 1000000] (the file was edited or damaged; use another "
                              "checkpoint)" % (bv,))
    md = tr.get("model_data")
    if md is not None and (not isinstance(md, list) or not all(isinstance(p, str) for p in md)):
        raise CheckpointError("the checkpoint's config.train.model_data is not a list of paths "
                              "(the file was edited or damaged; pass --model-data)")


def _given(args, dest):
    """Whether --<dest> was written on the command line (argparse cannot tell a default)."""
    flag = "--" + dest.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in getattr(args, "argv", []))


def cli_train(args):
    progress = Progress(0, quiet=args.quiet)
    ckpt = load_checkpoint(args.checkpoint) if args.checkpoint else None
    cfg_model = resolve_config(args, ckpt)
    if cfg_model.K > cfg_model.X:
        raise ShoestringError("--active-experts %d exceeds --num-experts %d" % (cfg_model.K, cfg_model.X))
    threads = args.threads or default_threads()
    # before reading data or training a tokenizer: the smallest vocabulary it could produce
    check_memory(ModelConfig(**dict(cfg_model.to_dict(), V=min(cfg_model.V, 261))),
                 args.batch_size, args.seq_length, threads)

    # data
    bundled = False
    if args.model_data:
        model_paths = list(args.model_data)
    elif ckpt is not None and ckpt["config"].get("train", {}).get("model_data"):
        model_paths = ckpt["config"]["train"]["model_data"]
    else:
        model_paths = [default_corpus_path()]
        bundled = True
        progress.message("no --model-data given: training on the bundled chat corpus (%s)"
                         % model_paths[0])
    if args.epochs is None:       # the bundled corpus is small: more passes to learn to chat
        args.epochs = BUNDLED_EPOCHS if bundled else DEFAULT_EPOCHS
    texts = read_texts(model_paths, args.encoding_errors)
    from .dataset import expand_paths
    args.model_data_resolved = expand_paths(model_paths)

    if ckpt is not None:
        from .tokenizer import Tokenizer
        try:
            tok = Tokenizer.from_dict(ckpt["tokenizer"])
        except ShoestringError as exc:
            raise CheckpointError("checkpoint %s: %s (use another checkpoint)"
                                  % (args.checkpoint, exc)) from None
        if tok.vocab_size != cfg_model.V:
            raise CheckpointError(
                "checkpoint %s: its tokenizer has %d tokens but its model has V=%d (the file was "
                "edited or mixes two runs; use another checkpoint)"
                % (args.checkpoint, tok.vocab_size, cfg_model.V))
    else:
        tok = build_tokenizer(args, args.model_data_resolved, progress)
    if tok.vocab_size != cfg_model.V:
        cfg_model = ModelConfig(**dict(cfg_model.to_dict(), V=tok.vocab_size))
    check_memory(cfg_model, args.batch_size, args.seq_length, threads)

    all_tokens = encode_texts(tok, texts)
    if args.validation_data:
        vtexts = read_texts([args.validation_data], args.encoding_errors, "validation data")
        val_tokens = encode_texts(tok, vtexts)
        val_chars = sum(len(t) for _, t in vtexts)
        train_tokens = all_tokens
    else:
        n_val = int(len(all_tokens) * args.val_fraction)
        n_val = max(n_val, min(len(all_tokens) // 2, args.seq_length + 1))
        train_tokens, val_tokens = all_tokens[:-n_val], all_tokens[-n_val:]
        total_chars = sum(len(t) for _, t in texts)
        val_chars = total_chars * len(val_tokens) / max(1, len(all_tokens))
    if len(val_tokens) < 2:
        raise DataError("validation data is too short (needs at least 2 tokens; give more text)")

    out_dir = args.out_dir
    if out_dir is None:
        out_dir = os.path.dirname(os.path.abspath(args.checkpoint)) if ckpt is not None else \
            os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ShoestringError("cannot create --out-dir %s: %s (choose another folder)"
                              % (out_dir, exc.strerror or exc)) from None
    for name in remove_stale_temp_files(out_dir):      # left by a run killed mid-save
        progress.message("removed %s, an unfinished save of a killed run" % name)

    params = np.array(ckpt["params"], np.float32) if ckpt is not None else None
    trainer = Trainer(args, cfg_model, tok, train_tokens, val_tokens, val_chars, params=params,
                      ckpt=ckpt, out_dir=out_dir, progress=progress)
    trainer.chat_data = any("[USER]" in t for _, t in texts)
    progress.total = trainer.total_steps
    atomic_write_text(os.path.join(out_dir, "config.json"), json.dumps(
        trainer.checkpoint_dict()["config"], indent=2, sort_keys=True) + "\n")
    n_par = trainer.layout.n
    progress.message(
        "model: %s parameters (V=%d C=%d H=%d L=%d X=%d K=%d); %d training tokens, %d validation "
        "tokens; %d steps of %d x %d x %d tokens on %d thread%s; writing to %s"
        % (f"{n_par:,}", cfg_model.V, cfg_model.C, cfg_model.H, cfg_model.L, cfg_model.X,
           cfg_model.K, len(train_tokens), len(val_tokens), trainer.total_steps, trainer.B,
           trainer.T, trainer.acc, trainer.threads, "s" if trainer.threads > 1 else "", out_dir))
    if trainer.opt.step >= trainer.total_steps:
        progress.message("the checkpoint has already done %d of %d steps (raise --epochs to "
                         "train further)" % (trainer.opt.step, trainer.total_steps))
    t0 = time.time()
    step0 = trainer.opt.step
    interrupted = trainer.run()
    if interrupted:
        return 130
    dt = time.time() - t0
    last = trainer.metrics[-1] if trainer.metrics else None
    summary = "done: %d steps in %s" % (trainer.opt.step - step0, fmt_seconds(dt))
    if last:
        summary += ("; val loss %.4f (best %.4f), %.3f bits/char; %d state resets; checkpoints "
                    "in %s" % (last["val_loss"], trainer.best_val, last["bits_per_char"],
                               trainer.resets, out_dir))
    progress.message(summary)
    if not args.no_chat and sys.stdin.isatty() and sys.stdout.isatty():
        from .chat import run_chat
        from .sample import Model
        model = Model(cfg_model, trainer.params.copy(), tok)
        progress.message("opening the chat (leave with `exit` or Ctrl-D); later: "
                         "shoestring chat --checkpoint %s" % os.path.join(out_dir, "best.json"))
        return run_chat(model, args.max_response, args.temperature, args.top_k, args.top_p, None)
    return 0
