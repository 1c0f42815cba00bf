"""trainer.py: `shoestring.train(...)`, the training loop of MODEL.md §2 (the CLI calls it too).

    import shoestring
    result = shoestring.train(shoestring.TrainConfig(max_steps=200), model_data=["data.txt"])
    print(result.best_checkpoint, result.metrics[-1]["bits_per_char"])

Contiguous streams with carried state (truncated BPTT), mean cross-entropy, AdamW with
matrices-only decay, global-norm clip, warm-up + cosine schedule, gradient accumulation, seeded.
Checkpoints (`last.json`, `best.json`) are written atomically; resuming continues exactly where the
run stopped (data position, RNG state, optimiser state, carried recurrent state). Ctrl-C, SIGTERM
and SIGHUP (in the main thread) finish the current step, save last.json and return with
`interrupted` set (and `stop_signal`, so the CLI exits 130, 143 or 129); a second one stops at
once, last.json as it was. Progress output that cannot be written (a closed pipe or terminal, a
full disk) is dropped, never the run (safeio.SafeStream). Checkpoints are saved before the
metrics row, which is appended whole or not at all. A run owns its folder (rundir.py: a lock,
no second run in a folder holding one, no rewinding of a newer last.json). A
non-finite loss or gradient stops training and keeps the last good checkpoint. A stream whose
recurrent state passes params.STATE_GUARD (or is not finite) is reset to zero; every reset is
counted and logged (MODEL.md §2, stability hazard).

Issue #11: dropout masks (locked, embedding rows, DropConnect on Wch) are drawn from the run's
seeded generator, so a resumed run draws the same ones; `ema` keeps a moving average of the
weights that validation, best.json and the chat use (the checkpoint's `params`; the weights being
trained go into its optimizer section); `minutes` plans warm-up + cosine to end when the budget
does, from the measured steps per second, re-planned every PLAN_EVERY steps, the training time
spent so far kept in the checkpoint. Validation scores the validation text as one stream
(evaluate.score_tokens), exactly as `shoestring eval` does.

Callbacks: objects with any of the methods below, or dicts {event: function}, called as
`on_train_start(run)`, `on_step_end(run, step, metrics)`, `on_gradients(run, step)` (after the
backward and the clip, before AdamW: run.grads are writable named views of the gradient),
`on_eval(run, metrics)`, `on_checkpoint(run, path)`, `on_train_end(run)`. `run` is a Run: named
read-only params, grads, activations(), stop() (validate, save and return), the config. Callbacks
that do not write gradients leave the run bitwise identical to one without them. A callback that
raises stops the run with a TrainingError naming it (the last good checkpoint is kept).

This module knows no command line and no inference: it reads only a TrainConfig.
"""
import dataclasses
import hashlib
import json
import math
import os
import secrets
import signal
import sys
import time

import numpy as np

from . import kernels
from .checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from .config import (BUNDLED_MINUTES, DEFAULT_MINUTES, TrainConfig, planned_dropout, planned_vocab,
                     resume_config)
from .data import default_corpus_path
from .dataset import Windows, atomic_write_text, remove_stale_temp_files
from .errors import CheckpointError, DataError, ShoestringError, TrainingError, UsageError
from .evaluate import score_tokens
from .model import (Masks, Network, dropconnect_seeds, dropconnect_threshold, dropout_mask,
                    usable_cores)
from .optim import AdamW, clip_scale, default_warmup, grad_norm, lr_at
from .params import STATE_GUARD, ModelConfig, ParamLayout
from .progress import Progress, fmt_seconds  # noqa: F401  (fmt_seconds: used by commands)
from .rundir import RunLock, check_folder, fresh_run_dir
from .safeio import SafeStream, os_error_hint, os_error_text, take_pending_stop
from .tokens import cached_encode, check_texts, count_chars, encode_files

# Signals that stop a run the way Ctrl-C does (SIGHUP: a closed terminal or SSH session).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, n))


PLAN_EVERY = 50            # steps between re-plans of a time budget
PLAN_AFTER = 20            # steps measured before the first plan
PROVISIONAL_WARMUP = 200   # warm-up used before the first plan (default_warmup's largest)
EVALS_PER_BUDGET = 20      # validations in a time-budgeted run without eval_every


def default_threads():
    """One training thread per usable core."""
    return usable_cores()


def fingerprint(tokens, block=1 << 20):
    """SHA-256 of the ids as little-endian int32 (whatever their array type), 16 hex digits;
    hashed a block at a time, so a big corpus is never copied whole."""
    h = hashlib.sha256()
    for i in range(0, len(tokens), block):
        h.update(np.ascontiguousarray(tokens[i:i + block], dtype="<i4").tobytes())
    return h.hexdigest()[:16]


# The progress display (tqdm on a terminal, plain lines in logs) is progress.Progress.


# ---- callbacks -------------------------------------------------------------------------------
EVENTS = ("on_train_start", "on_step_end", "on_gradients", "on_eval", "on_checkpoint",
          "on_train_end")


def callback_table(callbacks):
    """{event: [(function, name)]} from callback objects and {event: function} dicts."""
    table = {e: [] for e in EVENTS}
    for cb in callbacks:
        if isinstance(cb, dict):
            unknown = sorted(set(cb) - set(EVENTS))
            if unknown:
                raise UsageError("unknown callback event %s (the events are %s)"
                                 % (", ".join(map(repr, unknown)), ", ".join(EVENTS)))
            pairs = [(e, f, getattr(f, "__qualname__", repr(f))) for e, f in cb.items()]
        else:
            pairs = [(e, getattr(cb, e), "%s.%s" % (type(cb).__name__, e)) for e in EVENTS
                     if getattr(cb, e, None) is not None]
            if not pairs:
                raise UsageError("callback %r has none of the methods %s" % (cb, ", ".join(EVENTS)))
        for event, fn, name in pairs:
            if not callable(fn):
                raise UsageError("callback %s for %s is not callable" % (name, event))
            table[event].append((fn, name))
    return table


def _read_only(a):
    v = a.view()
    v.flags.writeable = False
    return v


class Run:
    """What a callback sees of the run (its first argument).

    config (TrainConfig), model_config, tokenizer, out_dir; step (optimiser steps done), metrics
    (the validation rows so far), chat_data; params: {name: read-only view} of the parameters;
    flat_params: the flat buffer, read-only; grads: {name: writable view} of the gradient (what
    on_gradients may change: zeroing a tensor's gradient freezes it for that step, given no
    weight decay on it); activations(); stop(); message(text).
    """

    def __init__(self, trainer):
        self._trainer = trainer
        self.config, self.model_config = trainer.config, trainer.cfg
        self.tokenizer, self.out_dir = trainer.tok, trainer.out_dir
        self.flat_params = _read_only(trainer.params)
        self.params = trainer.layout.views(self.flat_params)
        self.grads = trainer.layout.views(trainer.grads)

    @property
    def step(self):
        return self._trainer.opt.step

    @property
    def metrics(self):
        return self._trainer.metrics

    @property
    def chat_data(self):
        return self._trainer.chat_data

    def stop(self):
        """End the run after the current step: validate, save last.json (and best.json if it is
        the best), fire on_train_end, return. A resume continues exactly."""
        self._trainer.stop_clean = True

    def activations(self):
        """Read-only views of the last training window's activations: {"embedding": (B,T,C),
        "l0": (B,T,H), ... one per layer} (with accumulate > 1, the last window of the step)."""
        net = self._trainer.net
        out = {"embedding": _read_only(net.x0)}
        out.update(("l%d" % l, _read_only(o)) for l, o in enumerate(net.outs))
        return out

    def message(self, text):
        """Print a line above the progress display (nothing when quiet)."""
        self._trainer.progress.message(text)


# ---- the trainer -----------------------------------------------------------------------------
class Trainer:
    """One training run: model, optimiser, data windows, run state; run() trains to the end.
    Buffers: params, grads (n,) flat float32 (ParamLayout order); h (L,B,X,H) the carried state.
    Callbacks see it through a Run (self.run_view)."""

    def __init__(self, config, model_cfg, tok, train_tokens, val_tokens, params=None,
                 ckpt=None, out_dir=None, progress=None, callbacks=()):
        config = planned_dropout(config)          # train() has chosen them from the data
        if config.model.V is None:                # and V (planned_vocab): the tokenizer's size
            config = config.replace(model=dataclasses.replace(config.model, V=model_cfg.V))
        self.config = config
        self.cfg, self.tok = model_cfg, tok
        self.layout = ParamLayout(model_cfg)
        self.B, self.T, self.acc = config.batch_size, config.seq_length, config.accumulate
        self.threads = config.threads or default_threads()
        self.train_win = Windows(train_tokens, self.B, self.T, "model data")
        # what validation scores: [EOS], then at most config.val_tokens tokens of text, each
        # predicted once (evaluate.score_tokens); their characters counted exactly
        self.val_tokens = val_tokens
        self.val_chars = count_chars(tok, val_tokens[1:])
        # tokens per character of the training text (train() sets it; plots convert with it)
        self.train_tokens_per_char = float("nan")
        self.out_dir = out_dir
        self.progress = progress if progress is not None else Progress(0, quiet=True)
        self.hooks = callback_table(callbacks)
        if self.acc > self.train_win.count:
            raise DataError(
                "accumulate %d exceeds the %d windows in one epoch of the model data (lower "
                "accumulate, batch_size or seq_length, or use more data)"
                % (self.acc, self.train_win.count), setting=("accumulate", "batch_size", "seq_length"))
        self.steps_per_epoch = max(1, self.train_win.count // self.acc)
        self.budget_s = 60.0 * config.minutes if config.minutes else None
        self.elapsed_s = 0.0          # training seconds of earlier sessions (time budget)
        self.planned = False          # the time budget's plan was made (warm-up fixed)
        total = self.steps_per_epoch * config.epochs if config.epochs else 10 ** 12
        if config.max_steps:
            total = min(total, config.max_steps)
        self.total_steps = total
        if self.budget_s is not None and config.warmup_steps is None:
            self.warmup = PROVISIONAL_WARMUP
        else:
            self.warmup = config.warmup_steps if config.warmup_steps is not None else \
                default_warmup(total)

        self.params = params if params is not None else self.layout.init(config.seed)
        self.grads = self.layout.zeros()
        self.ema = self.params.copy() if config.ema else None     # moving average of params
        self._ema_tmp = self.layout.zeros() if config.ema else None
        self.opt = AdamW(self.layout.n, self.layout.n_decay, eps=config.eps_adamw,
                         weight_decay=config.wd)
        self.net = Network(model_cfg, self.params, self.B, self.T, self.threads, train=True,
                           weight_drop=config.weight_drop > 0)
        self.h = np.zeros((model_cfg.L, self.B, model_cfg.X, model_cfg.H), np.float32)  # (L,B,X,H)
        self.run_view = Run(self)     # what callbacks see
        # run state (all of it goes into the checkpoint)
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0                # epochs completed
        self.window = 0               # next window within the epoch
        self.offset = None            # this epoch's stream offset (None: epoch not started)
        self.best_val = float("inf")
        self.since_best = 0           # validations in a row without a new best (patience)
        self.early_stopped = False    # this session ended by patience
        self.metrics = []
        self.resets = 0
        self.train_fp = fingerprint(train_tokens)
        self.data_paths = []          # the model data files (recorded in the checkpoint)
        self.run_id = secrets.token_hex(8)    # one id for a run and all its resumes
        self.validation_path = None
        if ckpt is not None:
            self._restore(ckpt)
        self.stop_requested = False
        self.stop_signal = None       # the signal that asked the run to stop
        self.stop_clean = False       # Run.stop(): validate, save and return
        self.chat_data = False        # the model data is in the chat format of MODEL.md §4
        self.best_path = self.last_path = None
        # A loss this far above uniform guessing (ln V) means the run has blown up.
        self.diverged_above = 2.0 * math.log(model_cfg.V) + 1.0

    def message(self, text):
        """Print a line above the progress display (nothing when quiet)."""
        self.progress.message(text)

    def _emit(self, event, *args):
        for fn, name in self.hooks[event]:
            try:
                fn(self.run_view, *args)
            except Exception as exc:
                raise TrainingError(
                    "callback %s raised %s: %s (the run stopped at step %d; the last good "
                    "checkpoint is kept)" % (name, type(exc).__name__, exc, self.opt.step)) from exc

    # ---- checkpoint state ----------------------------------------------------------------
    def _restore(self, ck):
        if ck.training.get("weights_only"):
            raise CheckpointError(
                "this checkpoint is a weights-only export (no optimiser or run state), which can "
                "chat and be evaluated but not resume training (resume from the run's last.json)")
        try:
            self._restore_state(ck)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
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
        tr = ck.training
        for key in ("epoch", "window"):
            if not isinstance(tr[key], int) or isinstance(tr[key], bool):
                raise TypeError("%s must be a whole number, got %r" % (key, tr[key]))
        if tr["offset"] is not None and (not isinstance(tr["offset"], int)
                                         or isinstance(tr["offset"], bool)):
            raise TypeError("offset must be a whole number or null, got %r" % (tr["offset"],))
        if tr.get("train_fingerprint") != self.train_fp:
            raise CheckpointError(
                "the model data differs from the data this checkpoint was trained on "
                "(resume with the same model_data, or start a new run)", setting="model_data")
        if ck.optimizer is not None:
            self.opt.load_state_dict(ck.optimizer)
        self.rng.bit_generator.state = tr["rng"]
        self.epoch, self.window, self.offset = tr["epoch"], tr["window"], tr["offset"]
        self.best_val = float(tr["best_val"]) if tr["best_val"] is not None else float("inf")
        self.resets = int(tr.get("state_resets", 0))
        self.since_best = int(tr.get("since_best", 0))
        state = ck.state              # validated by checkpoint.py: shape (L,B,X,H), float32
        if state is None or state.shape != self.h.shape:
            raise CheckpointError("the checkpoint's carried recurrent state is %s, expected shape %s "
                                  "(use the run's last.json)"
                                  % ("missing" if state is None else state.shape, self.h.shape))
        self.h[...] = state
        self.metrics = list(ck.metrics)
        opt = ck.optimizer or {}
        if self.ema is not None and "train_params" in opt:
            self.ema[...] = ck.params             # params holds the average, see checkpoint_dict
        self.elapsed_s = float(tr.get("elapsed_s", 0.0))
        saved_minutes = (ck.config.get("train") or {}).get("minutes")
        if (self.budget_s is not None and tr.get("planned_total") is not None
                and saved_minutes == self.config.minutes):      # the same budget: the same plan
            self.total_steps = int(tr["planned_total"])
            self.warmup = int(tr["warmup"])
            self.planned = True
        run_id = tr.get("run_id")
        if run_id is not None:
            if not (isinstance(run_id, str) and 0 < len(run_id) <= 64
                    and all(c in "0123456789abcdef" for c in run_id)):
                raise ValueError("run_id must be a short hex string, got %r" % (run_id,))
            self.run_id = run_id

    def checkpoint_dict(self):
        train_cfg = dict(self.config.to_dict(), threads=self.threads,
                         bpe_vocab_size=self.config.model.V,        # asked for (model V: trained)
                         model_data=[os.path.abspath(p) for p in self.data_paths],
                         validation_data=(os.path.abspath(self.validation_path)
                                          if self.validation_path else None))
        opt = self.opt.state_dict()
        if self.ema is not None:              # params: the average; the trained weights kept too
            opt = dict(opt, train_params=self.params)
        return {
            "config": {"model": self.cfg.to_dict(), "train": train_cfg},
            "tokenizer": self.tok.to_dict(),
            "params": self.eval_params,
            "optimizer": opt,
            "training": {
                "step": self.opt.step, "epoch": self.epoch, "window": self.window,
                "offset": self.offset, "rng": self.rng.bit_generator.state,
                "best_val": None if math.isinf(self.best_val) else self.best_val,
                "state_resets": self.resets, "since_best": self.since_best,
                "train_fingerprint": self.train_fp,
                "run_id": self.run_id,
                "elapsed_s": round(self.elapsed(), 3),
                "planned_total": self.total_steps if self.planned else None,
                "warmup": self.warmup,
            },
            "metrics": self.metrics,
            "state": self.h,
        }

    def save(self, name):
        path = os.path.join(self.out_dir, name)
        save_checkpoint(path, self.checkpoint_dict())
        self._emit("on_checkpoint", path)
        return path

    # ---- one optimiser step ---------------------------------------------------------------
    @property
    def eval_params(self):
        """The weights validation, best.json and the chat use: the average when ema is on."""
        return self.ema if self.ema is not None else self.params

    def elapsed(self):
        """Training seconds of this run so far (all sessions)."""
        t0 = getattr(self, "_session_t0", None)
        return self.elapsed_s + (time.time() - t0 if t0 is not None else 0.0)

    def _window_masks(self):
        """This window's dropout masks from the run's generator (None when dropout is off)."""
        c, cfg = self.config, self.cfg
        if not (c.dropout or c.embedding_dropout):
            return None
        r, p = self.rng, c.dropout
        return Masks(
            embedding=dropout_mask(r, (cfg.V,), c.embedding_dropout) if c.embedding_dropout else None,
            inputs=[dropout_mask(r, (self.B, cfg.layer_input(l)), p) if p else None
                    for l in range(cfg.L)],
            head=dropout_mask(r, (self.B, cfg.H), p) if p else None)

    def _step_binding(self):
        """The C step (model.Network.step_binding) over this run's buffers, rebuilt when a
        restore replaced one of them."""
        want = (self.grads, self.params, self.opt.m, self.opt.v)
        if getattr(self, "_bound", None) is None or any(x is not y for x, y in
                                                          zip(self._bound, want)):
            self._bind = self.net.step_binding(*want, self.layout.n_decay)
            self._bound = want
        return self._bind

    def step(self):
        """Run `accumulate` windows and one AdamW update. Returns (loss mean, grad norm, lr)."""
        c = self.config
        # 1. a new epoch: new stream offsets (from the run's generator), fresh carried state
        if self.offset is None:
            self.offset = self.train_win.random_offset(self.rng)
            self.h.fill(0.0)
        # 2. forward and backward over `accumulate` windows of (B,T) tokens; the shards' gradient
        #    buffers collect dscale * dloss/dparams, so the sum is the mean loss's gradient
        #    DropConnect: this step's Wch masks (the last fused update drew them already)
        if c.weight_drop and self.net.masks_step != self.opt.step:
            self.net.draw_weight_masks(dropconnect_seeds(c.seed, self.opt.step, self.cfg.L),
                                       c.weight_drop)
            self.net.masks_step = self.opt.step
        dscale = 1.0 / (self.B * self.T * self.acc)
        lr = lr_at(self.opt.step, c.lr, self.total_steps, self.warmup, c.lr_schedule)
        # without on_gradients hooks, the last window's threads also sum the gradient and run
        # AdamW on their own ranges in C (steps 3 to 5 below, in the same hand-off: same bits)
        fused = not self.hooks["on_gradients"]
        loss, update = 0.0, None
        for a in range(self.acc):             # the first window zeroes the shards' buffers
            tokens, targets = self.train_win.window(self.window, self.offset)   # (B,T) each
            if fused and a == self.acc - 1:
                update = self._step_binding()
                bc1, bc2 = self.opt.bias_corrections()
                threshold, scale = dropconnect_threshold(c.weight_drop) if c.weight_drop \
                    else (0, 1.0)
                update.set(prior=loss, tokens=self.B * self.T * self.acc,
                           diverged_above=self.diverged_above, lr=lr, beta1=self.opt.beta1,
                           beta2=self.opt.beta2, eps=self.opt.eps,
                           weight_decay=self.opt.weight_decay, clip=c.grad_clip, bc1=bc1,
                           bc2=bc2, threshold=threshold, scale=scale,
                           seeds=dropconnect_seeds(c.seed, self.opt.step + 1, self.cfg.L)
                           if c.weight_drop else ())
            # h carries over; runaway streams start afresh (the guard, on each shard's thread)
            loss += self.net.forward_backward(tokens, targets, self.h, dscale,
                                              self._window_masks(), zero=a == 0, update=update,
                                              guard=STATE_GUARD)
            self.window += 1
            self.resets += self.net.resets
        loss /= self.B * self.T * self.acc
        # 3. a blown-up loss stops the run before any update (last.json stays the last good one)
        if not math.isfinite(loss):
            raise TrainingError(
                "the loss became %s at step %d (lower lr or grad_clip; the last good "
                "checkpoint is kept)" % (loss, self.opt.step + 1), setting=("lr", "grad_clip"))
        if loss > self.diverged_above:
            raise TrainingError(
                "training diverged: the loss became %.1f at step %d, far worse than guessing "
                "uniformly (%.1f) (lower lr or grad_clip; the last good checkpoint is kept)"
                % (loss, self.opt.step + 1, math.log(self.cfg.V)), setting=("lr", "grad_clip"))
        run, parts = self.net.run, self.net.threads
        if fused:
            norm = update.norm
            if self.net.updated:
                self.opt.step += 1            # every range was updated with the same constants
                self.net.masks_step = self.opt.step if c.weight_drop else None
        else:
            # 4. the gradient: the shards' buffers summed in shard order (deterministic)
            self.net.reduce_grads(self.grads)
            # 5. AdamW with the global-norm clip folded in (worker threads share the buffer);
            #    the clip is applied to the buffer first (the same float32 product), the
            #    on_gradients hooks see and may change the clipped gradient, AdamW runs unscaled
            norm = grad_norm(self.grads, run, parts)
            if math.isfinite(norm):
                scale = clip_scale(norm, c.grad_clip)
                if scale != 1.0:
                    self.grads *= np.float32(scale)
                self._emit("on_gradients", self.opt.step + 1)
                self.opt.update(self.params, self.grads, lr, 0.0, run, parts, norm=norm)
        if not math.isfinite(norm):
            raise TrainingError(
                "the gradient norm became %s at step %d (lower lr; the last good checkpoint is "
                "kept)" % (norm, self.opt.step + 1), setting="lr")
        # NaN/inf weights with a finite gradient come from the update itself (a step too large
        # for float32, or 0/0 in AdamW): for float32 values, the float64 sum of squares is not
        # finite exactly then (the fused path summed each range on its thread)
        sumsq = float(np.sum(update.param_sumsq)) if fused else kernels.sumsq(self.params)
        if not math.isfinite(sumsq):
            bad = int(self.params.size - np.count_nonzero(np.isfinite(self.params)))
            raise TrainingError(
                "the AdamW update at step %d made %d parameters non-finite with a finite gradient "
                "(lower lr, or raise eps_adamw; the last good checkpoint is kept)"
                % (self.opt.step, bad), setting=("lr", "eps_adamw"))
        if self.ema is not None:              # warm-up: early steps average over fewer
            t = self.opt.step
            d = min(c.ema, (1.0 + t) / (10.0 + t))
            self.ema *= np.float32(d)
            np.multiply(self.params, np.float32(1.0 - d), out=self._ema_tmp)
            self.ema += self._ema_tmp
        # 6. the data position: the epoch ends when another step would run past its windows
        if self.window + self.acc > self.train_win.count:
            self.epoch += 1
            self.window = 0
            self.offset = None
        return loss, norm, lr

    # ---- validation ---------------------------------------------------------------------------
    def evaluate(self):
        """(mean loss, perplexity, bits per character) on the validation text, scored as one
        stream from [EOS] (evaluate.score_tokens, what `shoestring eval` reports), with the
        weights eval_params; state resets there are counted too."""
        r = score_tokens(self.cfg, self.eval_params, self.val_tokens, self.val_chars)
        self.resets += r["state_resets"]
        return r["nats_per_token"], r["perplexity"], r["bits_per_char"]

    # ---- the time budget ----------------------------------------------------------------------
    def _plan(self, session_steps, session_s):
        """Fit warm-up + cosine into the time left, from the steps per second measured in this
        session (validation included); the warm-up is fixed by the first plan."""
        rate = session_steps / max(1e-9, session_s)
        left = max(0.0, self.budget_s - self.elapsed())
        total = self.opt.step + max(1, int(left * rate))
        if self.config.max_steps:
            total = min(total, self.config.max_steps)
        self.total_steps = max(total, self.opt.step + 1)
        if not self.planned:
            self.planned = True
            if self.config.warmup_steps is None:
                self.warmup = default_warmup(self.total_steps)
        self.progress.total = self.total_steps

    # ---- the loop -----------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if self.stop_requested:      # a second signal: stop now, last.json stays as it was
            if signum == getattr(signal, "SIGINT", None):
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.stop_requested = True
        self.stop_signal = signum

    def _install_signals(self):
        """Route SIGINT/SIGTERM/SIGHUP to _on_signal (main thread only); the previous handlers.
        A signal the parent set to be ignored stays ignored (`nohup` keeps a run alive when its
        terminal closes; a background job of a script ignores Ctrl-C). A stop signal that
        arrived during start-up and was swallowed on the way (safeio.take_pending_stop) stops
        the run before its first step, saved, as if it had arrived now."""
        if not _main_thread():
            return {}
        prev = {}
        for sig in STOP_SIGNALS:
            try:
                if signal.getsignal(sig) == signal.SIG_IGN:
                    continue
                prev[sig] = signal.signal(sig, self._on_signal)
            except (OSError, ValueError):
                pass
        pending = take_pending_stop()    # raised during start-up, then swallowed on the way
        if pending is not None and not self.stop_requested:
            self.stop_requested, self.stop_signal = True, pending
        return prev

    def run(self):
        """Train until total_steps, max_minutes or a stop; True if stopped by a signal (Ctrl-C,
        SIGTERM, SIGHUP: last.json saved without validating; the signal is self.stop_signal).
        Run.stop() ends after the current step, validated and saved."""
        c, prog = self.config, self.progress
        budget = self.budget_s is not None

        def cadence():
            if c.eval_every:
                return c.eval_every
            if budget:
                return max(1, self.total_steps // EVALS_PER_BUDGET)
            return self.steps_per_epoch
        eval_every = cadence()
        prog.start_step = self.opt.step
        self._session_t0 = time.time()
        session_step0 = self.opt.step
        prev = self._install_signals()
        tokens_per_step = self.B * self.T * self.acc
        t_last, step_last, loss_acc, n_acc = time.time(), self.opt.step, 0.0, 0
        interrupted = False
        self._emit("on_train_start")
        try:
            deadline = time.time() + 60.0 * c.max_minutes if c.max_minutes else None
            # a new run takes its first step whatever the budget, so that it always leaves a
            # validated checkpoint behind (a budget shorter than the start-up once left none)
            while self.opt.step < self.total_steps and not (
                    budget and self.opt.step > 0 and self.elapsed() >= self.budget_s):
                if self.stop_requested:
                    interrupted = True
                    break
                if self.stop_clean:           # stop() before the first step: nothing to save
                    break
                loss, norm, lr = self.step()
                out_of_time = deadline is not None and time.time() >= deadline
                done = self.opt.step - session_step0
                if budget and (done == PLAN_AFTER or (done > PLAN_AFTER and done % PLAN_EVERY == 0)):
                    self._plan(done, time.time() - self._session_t0)
                    eval_every = cadence()
                budget_over = budget and self.elapsed() >= self.budget_s
                out_of_time = out_of_time or budget_over
                loss_acc += loss
                n_acc += 1
                step = self.opt.step
                now = time.time()
                tps = tokens_per_step * (step - step_last) / max(1e-9, now - t_last)
                prog.update(step, "loss %.3f lr %.2e %.0f tok/s" % (loss, lr, tps))
                self._emit("on_step_end", step, {"step": step, "train_loss": loss, "lr": lr,
                                                 "grad_norm": norm, "tokens_per_s": tps})
                if (step % eval_every == 0 or step == self.total_steps or out_of_time
                        or self.stop_clean):
                    val, ppl, bpc = self.evaluate()
                    if not val <= self.diverged_above:      # NaN, inf or blown up: keep last.json
                        raise TrainingError(
                            "training diverged: the validation loss became %.4g at step %d (lower "
                            "lr or grad_clip; the last good checkpoint is kept)" % (val, step),
                            setting=("lr", "grad_clip"))
                    rec = {"step": step, "epoch": self.epoch + self.window / max(1, self.train_win.count),
                           "train_loss": loss_acc / n_acc, "val_loss": val, "perplexity": ppl,
                           "bits_per_char": bpc,
                           "train_bits_per_char": loss_acc / n_acc / math.log(2) * self.train_tokens_per_char,
                           "lr": lr, "grad_norm": norm,
                           "tokens_per_s": tps, "state_resets": self.resets,
                           "time": round(now, 3)}
                    self.metrics.append(rec)
                    prog.message("step %d: train loss %.4f, val loss %.4f, ppl %.2f, %.3f bits/char"
                                 % (step, rec["train_loss"], val, ppl, bpc))
                    self._emit("on_eval", rec)
                    if val < self.best_val:
                        self.best_val, self.since_best = val, 0
                        self.best_path = self.save("best.json")
                    else:
                        self.since_best += 1
                    self.last_path = self.save("last.json")
                    self._write_metrics(step)          # after the checkpoints it describes
                    t_last, step_last, loss_acc, n_acc = time.time(), step, 0.0, 0
                if budget_over:
                    prog.message("the time budget of %g minutes is spent at step %d"
                                 % (c.minutes, step))
                    break
                if self.stop_clean:
                    prog.message("stopped by a callback at step %d" % step)
                    break
                if c.patience is not None and self.since_best >= c.patience:
                    prog.message("early stop at step %d: %d validations without a new best "
                                 "(best.json holds the best model)" % (step, self.since_best))
                    self.early_stopped = True
                    break
                if out_of_time:
                    prog.message("max_minutes %g reached at step %d; resume from last.json"
                                 % (c.max_minutes, step))
                    break
            if interrupted:             # saved while the handlers still hold the signals
                self.last_path = self.save("last.json")
        except KeyboardInterrupt:
            prog.close()
            raise
        finally:
            for sig, handler in prev.items():
                try:
                    signal.signal(sig, handler)
                except (OSError, ValueError, TypeError):
                    pass
            self.net.close()
            self.elapsed_s = self.elapsed()
            self._session_t0 = None
        prog.close()
        self._emit("on_train_end")
        return interrupted

    def _write_metrics(self, step):
        """metrics.jsonl: one JSON object per validation, rewritten atomically (whole or not at
        all), after the checkpoints of `step` that it describes, so a failure here loses none."""
        try:
            atomic_write_text(os.path.join(self.out_dir, "metrics.jsonl"),
                              "".join(json.dumps(r) + "\n" for r in self.metrics), "metrics log")
        except CheckpointError as exc:
            msg = str(exc)
            note = "the checkpoints of step %d were saved: resume from %s" % (step, self.last_path)
            msg = msg[:-1] + "; " + note + ")" if msg.endswith(")") else "%s (%s)" % (msg, note)
            raise CheckpointError(msg, setting=exc.settings + ("out_dir",)) from None


def _some_names(paths, most=3):
    """A short list of file names: `a.txt, b.txt, c.txt and 9,997 more files` (a progress line
    for a folder of 10,000 files stays one short line)."""
    names = [os.path.basename(os.fspath(p)) for p in paths[:most]]
    more = len(paths) - most
    return ", ".join(names) + (" and %s more file%s" % (format(more, ","), "s" if more > 1 else "")
                               if more > 0 else "")


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


# ---- the entry point --------------------------------------------------------------------------
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
            "this run needs about %.1f GB of memory (%s parameters; batch_size %d x "
            "seq_length %d), more than this machine's %.1f GB (lower C, H, X, L, V, batch_size "
            "or seq_length)" % (need / 1e9, format(ParamLayout(cfg).n, ","), B, T, have / 1e9),
            setting=("C", "H", "X", "L", "V", "batch_size", "seq_length"))




@dataclasses.dataclass
class TrainResult:
    """What shoestring.train returns."""
    best_checkpoint: str          # path of best.json (None if no validation ran)
    last_checkpoint: str          # path of last.json (None if nothing was saved)
    metrics: list                 # the metrics rows, also in metrics.jsonl
    steps: int                    # optimiser steps done in total (this session and before)
    tokens: int                   # tokens trained on in this session
    seconds: float                # wall time of this session's training loop
    interrupted: bool             # stopped by a signal (last.json saved without validating)
    stopped: bool                 # ended by a callback's run.stop() (validated and saved)
    out_dir: str
    best_val: float               # best validation loss (inf if none)
    state_resets: int
    model_config: ModelConfig     # the trained model's (V is the tokenizer's)
    tokenizer: object
    params: np.ndarray            # the final parameters (a copy)
    stop_signal: int = None       # the signal that stopped the run (SIGINT, SIGTERM, SIGHUP)
    early_stopped: bool = False   # ended by patience: validations without a new best


def _resolve(config, ckpt):
    """The TrainConfig of this run: `config` (a new run), or the checkpoint's merged with it."""
    if config is not None and not isinstance(config, TrainConfig):
        raise ShoestringError("config must be a TrainConfig, got %s" % type(config).__name__)
    if ckpt is None:
        return config if config is not None else TrainConfig()
    if config is None:
        return resume_config(ckpt.config)
    given = {k: v for k, v in config.to_dict().items() if v is not None}
    return resume_config(ckpt.config, given,
                         {k: v for k, v in config.model.to_dict().items() if v is not None})



def train(config=None, model_data=None, validation_data=None, out_dir=None, callbacks=(),
          checkpoint=None, bpe_data=None, quiet=False):
    """Train a tokenizer (unless resuming) and a model; returns a TrainResult.

    config: a TrainConfig (default: TrainConfig(), or when resuming the checkpoint's own).
    model_data: text files or folders of .txt files (default: the checkpoint's, else the chat
    corpus shipped with shoestring). validation_data: a held-out text file (default: the
    checkpoint's when resuming, else the last config.val_fraction of the model data). out_dir:
    where checkpoints and metrics.jsonl go (default: the checkpoint's folder, else a fresh
    runs/<timestamp>). checkpoint: a path (or a Checkpoint from read_checkpoint) to resume from; a
    config given with it may only change the run's plan. bpe_data: text files for the tokenizer
    (default: the model data; refused when resuming). quiet: no progress display.
    callbacks: objects with on_<event> methods or {event: function} dicts (see the module's
    docstring).
    out_dir is the run's own folder (see rundir.py): locked while training; a new run refuses a
    folder that holds another run; a resumed one refuses to rewind a newer last.json there.
    """
    progress = Progress(0, stream=SafeStream(sys.stderr), quiet=quiet)
    ckpt = checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        ckpt = read_checkpoint(checkpoint)
    elif checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise UsageError("checkpoint must be a path or a Checkpoint, got %s"
                         % type(checkpoint).__name__, setting="checkpoint")
    ckpt_path = ckpt.path if ckpt is not None else None
    if ckpt is not None and bpe_data:
        raise ShoestringError("bpe_data cannot apply when resuming: the tokenizer comes from the "
                              "checkpoint (leave bpe_data out, or start a new run)",
                              setting="bpe_data")
    config = _resolve(config, ckpt)
    resume_step = ckpt.training.get("step") if ckpt is not None else None
    if ckpt is not None and not isinstance(resume_step, int):
        resume_step = 0
    run_id = ckpt.training.get("run_id") if ckpt is not None else None
    if out_dir is None and ckpt_path:
        out_dir = os.path.dirname(os.path.abspath(ckpt_path))
    if out_dir is not None and os.path.isdir(out_dir):     # fail before the data work
        check_folder(os.fspath(out_dir), run_id, resume_step)
    elif out_dir is not None and os.path.lexists(out_dir):
        raise ShoestringError("out_dir %s is %s, not a folder (choose another out_dir)"
                              % (os.fspath(out_dir), "a broken symbolic link"
                                 if os.path.islink(out_dir) else "a file"), setting="out_dir")
    cfg_model = ckpt.model if ckpt is not None else config.model
    threads = config.threads or default_threads()
    # before reading data or training a tokenizer: the smallest vocabulary it could produce
    check_memory(ModelConfig(**dict(cfg_model.to_dict(), V=min(cfg_model.V or 261, 261))),
                 config.batch_size, config.seq_length, threads)

    # data
    if isinstance(model_data, (str, os.PathLike)):
        model_data = [model_data]
    bundled = False
    if model_data:
        model_paths = [os.fspath(p) for p in model_data]
    elif ckpt is not None and (ckpt.config.get("train") or {}).get("model_data"):
        model_paths = ckpt.config["train"]["model_data"]
        if not (isinstance(model_paths, list) and all(isinstance(p, str) for p in model_paths)):
            raise CheckpointError("the checkpoint's config.train.model_data is not a list of paths "
                                  "(the file was edited or damaged; pass model_data)",
                                  setting="model_data")
    else:
        model_paths = [default_corpus_path()]
        bundled = True
        progress.message("no model data given: training on the bundled chat corpus (%s)"
                         % model_paths[0])
    if config.epochs is None and config.minutes is None and config.max_steps is None:
        # no plan: a run told to stop after M minutes (--max-minutes) is planned to end then
        config = config.replace(minutes=config.max_minutes
                                or (BUNDLED_MINUTES if bundled else DEFAULT_MINUTES))
    if ckpt is not None:     # the split the checkpoint was trained on
        held = (ckpt.config.get("train") or {}).get("validation_data")
        if held is not None and not isinstance(held, str):
            raise CheckpointError("the checkpoint's config.train.validation_data is not a path "
                                  "(the file was edited or damaged; pass validation_data)",
                                  setting="validation_data")
        if validation_data and not _same_path(validation_data, held):
            raise ShoestringError(
                "validation_data %s contradicts the checkpoint, which held out %s: the run's "
                "data split would change (leave it out to resume, or start a new run)"
                % (os.fspath(validation_data), held if held else "the last %g%% of the model "
                   "data" % (100 * ckpt.config.get("train", {}).get("val_fraction", 0.1))),
                setting="validation_data")
        validation_data = validation_data or held
    data_paths = check_texts(model_paths, config.encoding_errors)   # fails early, holds no text
    if validation_data:       # before the tokenizer and the token cache, too
        check_texts([validation_data], config.encoding_errors, "validation data")

    if ckpt is not None:
        tok = ckpt.tokenizer                  # validated by Checkpoint
    else:
        from .tokenizer import Tokenizer
        if isinstance(bpe_data, (str, os.PathLike)):
            bpe_data = [bpe_data]
        bpe_paths = list(bpe_data) if bpe_data else data_paths
        train_bytes = sum(os.path.getsize(p) for p in data_paths) * (
            1 if validation_data else 1 - config.val_fraction)
        planned = planned_vocab(config, train_bytes)
        why = ("; %d asked for %s KB of training text" % (planned.model.V, format(
            round(train_bytes / 1000), ",")) if config.model.V is None else "")
        config = planned
        cfg_model = config.model
        t0 = time.time()
        tok = Tokenizer.train(paths=bpe_paths, vocab_size=config.model.V,
                              encoding_errors=config.encoding_errors)
        progress.message("tokenizer: %d tokens trained on %s in %.1f s%s"
                         % (tok.vocab_size, _some_names(bpe_paths), time.time() - t0, why))
    if tok.vocab_size != cfg_model.V:
        cfg_model = ModelConfig(**dict(cfg_model.to_dict(), V=tok.vocab_size))
    check_memory(cfg_model, config.batch_size, config.seq_length, threads)

    if out_dir is None:
        out_dir = fresh_run_dir("runs")
    out_dir = os.fspath(out_dir)
    if not out_dir:
        raise UsageError("out_dir is empty (give a folder name, or leave it out for a fresh "
                         "runs/<timestamp>)", setting="out_dir")
    created = not os.path.isdir(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ShoestringError("cannot create out_dir %s: %s (%s)"
                              % (out_dir, os_error_text(exc), os_error_hint(exc, "another folder")),
                              setting="out_dir") from None
    lock = RunLock(out_dir).acquire()
    ok = False
    try:
        check_folder(out_dir, run_id, resume_step)
        result = _train_in(config, cfg_model, tok, ckpt, out_dir, data_paths, validation_data,
                           progress, callbacks)
        ok = True
        return result
    finally:
        lock.release()
        if not ok and created:        # leave no empty folder behind a run that never began
            try:
                os.unlink(lock.path)
                os.rmdir(out_dir)
            except OSError:
                pass


def _same_path(a, b):
    """Whether paths a and b name one file (b may be None)."""
    if b is None:
        return False
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.abspath(a) == os.path.abspath(b)


def _train_in(config, cfg_model, tok, ckpt, out_dir, data_paths, validation_data, progress,
              callbacks):
    """The part of train() that runs with out_dir locked: the data, the Trainer, the run."""
    for name in remove_stale_temp_files(out_dir):      # left by a run killed mid-save
        progress.message("removed %s, an unfinished save of a killed run" % name)

    # the model data as a compact id array, from the token cache in out_dir when it is current
    t0 = time.time()
    enc, how = cached_encode(tok, data_paths, config.encoding_errors, out_dir, progress.message)
    progress.message("model data: %s tokens %s in %.1f s" % (
        format(len(enc.ids), ","), "read from the token cache" if how == "cache" else "encoded",
        time.time() - t0))
    all_tokens = enc.ids
    # validation scores at most val_tokens tokens, the first predicted from [EOS] (evaluate.py)
    keep = config.val_tokens if config.val_tokens else None
    if validation_data:
        vfiles = check_texts([validation_data], config.encoding_errors, "validation data")
        val_tokens = encode_files(tok, vfiles, config.encoding_errors, "validation data",
                                  limit=keep, specials="chat").ids     # eval's rule (§7)
        train_tokens = all_tokens
    else:
        n_val = int(len(all_tokens) * config.val_fraction)
        n_val = max(n_val, min(len(all_tokens) // 2, config.seq_length + 1))
        train_tokens, val_tokens = all_tokens[:-n_val], all_tokens[-n_val:]
    train_chars = enc.chars - (0 if validation_data else count_chars(tok, val_tokens))
    if len(val_tokens) < 2:
        raise DataError("validation data is too short (needs at least 2 tokens; give more text)")
    if keep is None or len(val_tokens) < keep:
        said = "all %s held-out tokens" % format(len(val_tokens), ",")
    else:
        held = "the validation data" if validation_data else \
            "%s held-out tokens" % format(len(val_tokens), ",")
        val_tokens = val_tokens[:keep]
        said = "the first %s tokens of %s (val_tokens; 0 scores them all)" % (
            format(keep, ","), held)
    progress.message("validation scores %s" % said)
    val_tokens = np.concatenate([np.array([tok.special_id("[EOS]")], np.int32),
                                 np.asarray(val_tokens, np.int32)])

    config = planned_dropout(config, train_chars)   # where the run names none, from the data
    params = None
    if ckpt is not None:          # with ema, params is the average; the trained weights are kept
        opt = ckpt.optimizer or {}
        params = np.array(opt.get("train_params", ckpt.params), np.float32)
    trainer = Trainer(config, cfg_model, tok, train_tokens, val_tokens, params=params,
                      ckpt=ckpt, out_dir=out_dir, progress=progress, callbacks=callbacks)
    trainer.data_paths = data_paths
    trainer.train_tokens_per_char = len(train_tokens) / max(1.0, train_chars)
    trainer.validation_path = validation_data
    trainer.chat_data = enc.chat
    # a time budget's last step is known once its plan is made from the measured speed
    progress.total = trainer.total_steps if trainer.budget_s is None or trainer.planned else None
    atomic_write_text(os.path.join(out_dir, "config.json"), json.dumps(
        trainer.checkpoint_dict()["config"], indent=2, sort_keys=True) + "\n")
    n_par = trainer.layout.n
    if trainer.budget_s is not None:
        length = "%s of training (%s left), the schedule planned from the measured speed" % (
            fmt_seconds(trainer.budget_s), fmt_seconds(max(0.0, trainer.budget_s - trainer.elapsed_s)))
        if config.max_steps:
            length += ", at most %d steps" % config.max_steps
    else:
        length = "%d steps" % trainer.total_steps
    regs = ", ".join("%s %g" % (n, getattr(config, n)) for n in
                     ("dropout", "embedding_dropout", "weight_drop", "ema") if getattr(config, n))
    progress.message(
        "model: %s parameters (V=%d C=%d H=%d L=%d X=%d K=%d%s%s); %d training tokens, %d "
        "validation tokens; %s of %d x %d x %d tokens on %d thread%s%s; writing to %s"
        % (f"{n_par:,}", cfg_model.V, cfg_model.C, cfg_model.H, cfg_model.L, cfg_model.X,
           cfg_model.K, ", cap %g" % cfg_model.cap if cfg_model.cap else "",
           ", tied embeddings" if cfg_model.tie_embeddings else "",
           len(train_tokens), len(val_tokens) - 1, length, trainer.B, trainer.T, trainer.acc,
           trainer.threads, "s" if trainer.threads > 1 else "", "; " + regs if regs else "",
           out_dir))
    if trainer.budget_s is not None and trainer.elapsed_s >= trainer.budget_s:
        progress.message("the checkpoint has already spent its %g-minute budget (give --minutes "
                         "to train further)" % config.minutes)
    elif trainer.opt.step >= trainer.total_steps:
        progress.message("the checkpoint has already done %d of %d steps (raise epochs to "
                         "train further)" % (trainer.opt.step, trainer.total_steps))
    t0 = time.time()
    step0 = trainer.opt.step
    interrupted = trainer.run()
    best = os.path.join(out_dir, "best.json")
    last = os.path.join(out_dir, "last.json")
    return TrainResult(
        best_checkpoint=best if os.path.isfile(best) else None,
        last_checkpoint=last if os.path.isfile(last) else None,
        metrics=list(trainer.metrics), steps=trainer.opt.step,
        tokens=(trainer.opt.step - step0) * trainer.B * trainer.T * trainer.acc,
        seconds=time.time() - t0, interrupted=interrupted, stopped=trainer.stop_clean,
        out_dir=out_dir,
        best_val=trainer.best_val, state_resets=trainer.resets, model_config=cfg_model,
        tokenizer=tok, params=trainer.eval_params.copy(), stop_signal=trainer.stop_signal,
        early_stopped=trainer.early_stopped)
