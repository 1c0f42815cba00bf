"""optim.py: AdamW over the flat parameter buffer, the global-norm clip and the lr schedule.

The update is C calls (ss_adamw_step) over contiguous ranges of the buffer, which worker threads
may share (split_blocks); every element's update is the same arithmetic wherever its range
starts, so the result is bitwise the same for any number of threads. Weight decay covers only the
matrices (the [0, n_decay) prefix of the layout); the clip is folded into the same pass as a
gradient scale. The gradient's squared norm is the sum, in block order, of float64 partial sums
over fixed blocks of BLOCK elements: the same bits for any number of threads too. Training's
usual step runs the same arithmetic on the shard threads, each on its own range, in C
(csrc/step.c, model.Network.step_binding). update and grad_norm are the stand-alone forms (the
on_gradients path), where buffers of fewer than PARALLEL_MIN elements stay on one thread
(thread_ranges). The learning rate is a pure function of the step.
"""
import math
from itertools import chain

import numpy as np

from . import kernels


def lr_at(step, peak, total, warmup, schedule="cosine", floor=0.1):
    """Learning rate for optimiser step `step` (0-based): linear warm-up over `warmup` steps to
    `peak`, then cosine decay to floor*peak at `total` (constant after warm-up if schedule is
    'constant')."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def default_warmup(total):
    """2% of the run, at most 200 steps."""
    return min(200, max(0, int(0.02 * total)))


BLOCK = 1 << 16             # elements per partial sum of the gradient norm (fixed: see above)


def split_blocks(n, parts):
    """[(lo, hi)] cutting [0, n) into at most `parts` contiguous, nearly equal ranges whose
    boundaries fall on multiples of BLOCK (one range when n is a block or less)."""
    nb = max(1, -(-n // BLOCK))
    parts = max(1, min(parts, nb))
    bounds = [min(n, nb * s // parts * BLOCK) for s in range(parts + 1)]
    return [(bounds[s], bounds[s + 1]) for s in range(parts)]


# Below this many elements the stand-alone gradient sum and AdamW run on one thread. Measured on
# the 2-core Zen 4 guest with a Python thread pool (reduction of 2 shards + AdamW, 2 threads
# against 1, preliminary): 1.68x slower at 0.5 M, 0.78x (faster) at 2 M; with the spinning
# workers of model.Workers (Xeon, session 5): 0.96x at 0.5 M, 0.69x at 2 M.
PARALLEL_MIN = 1 << 21


def thread_ranges(n, threads):
    """The ranges `threads` workers share a buffer of n elements in: split_blocks(n, threads), or
    [(0, n)] when n < PARALLEL_MIN (the same bits either way; only the speed differs)."""
    return split_blocks(n, threads if n >= PARALLEL_MIN else 1)


def block_sumsq(x, lo, hi):
    """[float64 sum of squares of x[b:b+BLOCK]] for the blocks of [lo, hi), in order."""
    return [kernels.sumsq(x[b:min(b + BLOCK, hi)]) for b in range(lo, hi, BLOCK)]


def _serial(fn, items):
    return [fn(*it) for it in items]


def grad_norm(grads, run=None, parts=1):
    """The global L2 norm of the flat gradient buffer: float64 partial sums over BLOCKs, added in
    block order (the same bits for any `parts`; run as in AdamW.update)."""
    ranges = thread_ranges(grads.shape[0], parts)
    run = run if run is not None and len(ranges) > 1 else _serial
    total = 0.0                   # in order from 0.0, as csrc/step.c adds them (not sum(): its
    for x in chain.from_iterable(run(block_sumsq, [(grads, lo, hi) for lo, hi in ranges])):
        total += x                # compensated summation since Python 3.12 gives other bits)
    return math.sqrt(total)


def clip_scale(norm, clip):
    """The factor the global-norm clip applies: clip/norm when norm > clip > 0, else 1."""
    return clip / norm if 0 < clip < norm else 1.0


class AdamW:
    """AdamW state (m, v, step) mirroring the flat parameter buffer."""

    def __init__(self, n, n_decay, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        self.n, self.n_decay = n, n_decay
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.m = np.zeros(n, np.float32)
        self.v = np.zeros(n, np.float32)
        self.step = 0

    def update(self, params, grads, lr, clip, run=None, parts=1, norm=None):
        """One step, the gradients scaled by clip_scale(norm, clip) in the same C pass. Returns
        the gradient's global norm before clipping (computed unless given; not finite: no update).

        run(fn, [args, ...]) -> [fn(*args), ...] (in order) may run the calls on worker threads
        (model.Network.run); the buffer is then cut into `parts` ranges (thread_ranges)."""
        ranges = thread_ranges(self.n, parts)
        run = run if run is not None and len(ranges) > 1 else _serial
        norm = grad_norm(grads, run, parts) if norm is None else norm
        if not math.isfinite(norm):
            return norm
        plan = self.plan(lr, clip, norm)
        self.step += 1
        run(lambda lo, hi: self.apply(params, grads, plan, lo, hi), ranges)
        return norm

    def plan(self, lr, clip, norm):
        """The constants of the next step's update (lr, gradient scale, bias corrections), for
        apply; the caller adds 1 to step once every range is updated."""
        return (lr, clip_scale(norm, clip)) + self.bias_corrections()

    def bias_corrections(self):
        """(1 - beta1^t, 1 - beta2^t) of the next step t = step + 1."""
        t = self.step + 1
        return 1.0 - self.beta1 ** t, 1.0 - self.beta2 ** t

    def apply(self, params, grads, plan, lo, hi):
        """The update of [lo, hi) with plan's constants: the same bits however the buffer is
        cut, so threads may each take a range."""
        lr, scale, bc1, bc2 = plan
        decay = min(max(self.n_decay - lo, 0), hi - lo)
        kernels.adamw_step(params[lo:hi], grads[lo:hi], self.m[lo:hi], self.v[lo:hi], decay,
                           lr, self.beta1, self.beta2, self.eps, self.weight_decay, scale,
                           bc1, bc2)

    def state_dict(self):
        return {"step": self.step, "m": self.m, "v": self.v}

    def load_state_dict(self, d):
        if d["m"].shape != (self.n,) or d["v"].shape != (self.n,):
            raise ValueError("optimizer state has the wrong length")
        self.step = int(d["step"])
        self.m = np.array(d["m"], np.float32)
        self.v = np.array(d["v"], np.float32)
