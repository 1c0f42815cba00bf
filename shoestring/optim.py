"""optim.py: AdamW over the flat parameter buffer, the global-norm clip and the lr schedule.

The update itself is one C call (ss_adamw_step) over the whole buffer; weight decay covers only
the matrices (the [0, n_decay) prefix of the layout); the clip is folded into the same pass as a
gradient scale. The learning rate is a pure function of the step.
"""
import math

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


def grad_norm(grads):
    """The global L2 norm of the flat gradient buffer (summed in float64)."""
    return math.sqrt(kernels.sumsq(grads))


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

    def update(self, params, grads, lr, clip, norm=None):
        """One step, the gradients scaled by clip_scale(norm, clip) inside the same C pass.
        Returns the gradient's global norm (computed unless given; not finite: no update)."""
        norm = grad_norm(grads) if norm is None else norm
        if not math.isfinite(norm):
            return norm
        scale = clip_scale(norm, clip)
        self.step += 1
        bc1 = 1.0 - self.beta1 ** self.step
        bc2 = 1.0 - self.beta2 ** self.step
        kernels.adamw_step(params, grads, self.m, self.v, self.n_decay, lr, self.beta1, self.beta2,
                           self.eps, self.weight_decay, scale, bc1, bc2)
        return norm

    def state_dict(self):
        return {"step": self.step, "m": self.m, "v": self.v}

    def load_state_dict(self, d):
        if d["m"].shape != (self.n,) or d["v"].shape != (self.n,):
            raise ValueError("optimizer state has the wrong length")
        self.step = int(d["step"])
        self.m = np.array(d["m"], np.float32)
        self.v = np.array(d["v"], np.float32)
