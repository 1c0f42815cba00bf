"""model.py: the MoE-GRU language model for training: embedding -> L layers -> head -> loss.

A window of B streams x T steps is two C calls per shard (csrc/network.c): the forward
(embedding, the layers, the head matmul, the fused cross-entropy) and the backward. The batch is
cut into S contiguous shards (S = threads), each with its own activations and gradient buffer, run
on S threads (model.Workers; cffi releases the GIL inside C). Shard gradients are summed in shard
order, so the result does not depend on timing: the same seed and thread count give the same
bits. With a kernels.StepBinding (step_binding) the threads also sum the gradient and run the
optimiser, each on its own range of the flat buffers, in one C call (csrc/step.c).

Layouts (batch-major, so a shard's slice is contiguous): tokens/targets (B,T) int32,
activations (B,T,I), recurrent state h (L,B,X,H).

Regularisers (training only, issue #11): the dropout masks come from the trainer's seeded
generator (see Masks): embedding dropout scales whole vocabulary rows, locked dropout masks each
layer's input and the head's input with one (B,I) mask per window shared by its T steps.
DropConnect replaces Wch by Wch * mask in a separate buffer for one optimiser step (each shard
masks its Wch gradient the same way); its masks are a hash of (seed, step, layer, index)
(draw_weight_masks), so the threads draw them in ranges right after their range's update.
The candidate's soft cap (cfg.cap) is part of the model. With tied embeddings
(cfg.tie_embeddings) the head's weight is WE and its gradient adds into WE's.
"""
import os
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np

from . import kernels, optim
from .params import ParamLayout, layer_views


def split_batch(B, S):
    """[(b0, b1)] cutting B rows into S nearly equal contiguous shards (no empty shard)."""
    S = max(1, min(S, B))
    bounds = [B * s // S for s in range(S + 1)]
    return [(bounds[s], bounds[s + 1]) for s in range(S)]


@dataclass
class Masks:
    """The dropout masks of one window (each None when that regulariser is off); they hold 0 or
    1/(1-p). embedding (V): row scales; inputs: [(B,I)] per layer; head (B,H)."""
    embedding: object = None
    inputs: list = field(default_factory=list)
    head: object = None


def dropout_mask(rng, shape, p):
    """A float32 mask of `shape`: 0 with probability p, else 1/(1-p) (inverted dropout, so
    evaluation uses the weights as they are); drawn from the numpy Generator rng."""
    if p <= 0:
        return np.ones(shape, np.float32)
    keep = rng.random(shape) >= p
    return (keep * np.float32(1.0 / (1.0 - p))).astype(np.float32, copy=False)


def dropconnect_threshold(p):
    """(threshold, scale) of kernels.dropconnect_forward for drop probability p: an element is
    dropped when its 24-bit hash is below round(p * 2^24); kept ones hold float32(1/(1-p))."""
    return int(round(p * (1 << 24))), float(np.float32(1.0 / (1.0 - p)))


def dropconnect_seeds(seed, step, L):
    """The L 64-bit hash seeds of optimiser step `step`'s DropConnect masks in a run seeded
    `seed`: splitmix64's finaliser over (seed, step, layer), a pure function (resume-proof)."""
    def mix(z):
        z &= (1 << 64) - 1
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (1 << 64) - 1
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (1 << 64) - 1
        return z ^ (z >> 31)
    base = mix(seed * 0x9E3779B97F4A7C15 + step + 1)
    return [mix(base + (l + 1) * 0x9E3779B97F4A7C15) for l in range(L)]


def loss_sum(losses):
    """The shards' loss sums added in shard order from 0.0 (what csrc/step.c's check adds)."""
    total = 0.0
    for x in losses:
        total += x
    return total


def head_weight(views):
    """The head's (V,H) weight: Wo, or WE when the embeddings are tied (no Wo in the layout)."""
    return views["Wo"] if "Wo" in views else views["WE"]


def usable_cores():
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def spin_seconds(threads):
    """How long a training thread spins at a barrier before it yields: 3 ms (more than the gap
    between two windows) when every thread has a core, none when they share cores."""
    return 0.003 if threads <= usable_cores() else 0.0


def _nothing():
    return None


_IDLE = (_nothing, ())                          # the item of a worker with nothing to do


class Workers:
    """n persistent threads for Network.run. Between items a worker waits inside C (a spinning
    kernels.Barrier: spin_seconds of pauses, then yields and naps), so handing it the next
    window takes microseconds instead of a Python queue's wake-up (0.1 to 0.2 ms here).
    run(fn, items) gives worker i items[i] and runs the last item on the calling thread."""

    def __init__(self, n):
        self.n = n
        spin = spin_seconds(n + 1)
        self.start = kernels.Barrier(n + 1, spin)   # the caller and the workers: items are set
        self.end = kernels.Barrier(n + 1, spin)     # every item has finished
        self.items = [_IDLE] * n
        self.out = [None] * n
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True,
                                         name="shoestring-shard-%d" % i) for i in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self, i):
        while True:
            try:
                self.start.wait()
            except kernels.BrokenBarrier:      # close()
                return
            fn, args = self.items[i]
            try:
                self.out[i] = (None, fn(*args))
            except BaseException as exc:       # reported to the caller by run
                self.out[i] = (exc, None)
            fn = args = exc = None              # this frame keeps no caller object alive
            self.end.wait()

    def run(self, fn, items):
        """[fn(*args) for args in items] (1 <= len(items) <= n + 1), worker i running items[i],
        the calling thread the last. Raises the first error in item order, but prefers a
        worker's own error to the caller's BrokenBarrier (the caller's step barrier broke
        because that worker failed). Whatever happens, it returns only once every worker has
        finished its item (a KeyboardInterrupt included)."""
        k = len(items) - 1
        if not 0 <= k <= self.n:
            raise ValueError("Workers.run: %d items for %d threads" % (len(items), self.n + 1))
        for i in range(self.n):
            self.items[i] = (fn, items[i]) if i < k else _IDLE
        gen = self.start.generation()
        try:
            self.start.wait()
            last = fn(*items[-1])
        except BaseException as exc:
            if self.start.generation() != gen:  # the workers started: wait for them
                self.end.wait()
            out = self._collect(k)
            if isinstance(exc, kernels.BrokenBarrier):
                for err, _ in out:
                    if err is not None and not isinstance(err, kernels.BrokenBarrier):
                        raise err from None
            raise
        self.end.wait()
        out = self._collect(k)
        for err, _ in out:
            if err is not None:
                raise err
        return [r for _, r in out] + [last]

    def _collect(self, k):
        """The workers' (error, result) pairs of the finished run; forgets the run's items and
        results (no references kept to the callers' objects)."""
        out = self.out[:k]
        self.items, self.out = [_IDLE] * self.n, [None] * self.n
        return out

    def close(self):
        """End the threads; never blocks on them for long (they finish their current item
        first), can be called again, and from any thread (a garbage collection may run it)."""
        self.start.abort()
        if threading.current_thread() not in self.threads:
            for t in self.threads:
                t.join()


class _Shard:
    """Buffers of one batch shard: activations, scratch, its own gradient buffer, and the
    NetworkBinding that runs the shard's forward and backward in two C calls."""

    def __init__(self, net, b0, b1, train):
        cfg, T = net.cfg, net.T
        self.b0, self.b1 = b0, b1
        Bs = b1 - b0
        N = Bs * T
        self.N = N
        self.x0 = net.x0[b0:b1]                         # (Bs,T,C) embedding output
        self.outs = [o[b0:b1] for o in net.outs]        # (Bs,T,H) each layer's output
        self.logits = np.zeros((N, cfg.V), np.float32)
        self.losses = np.zeros(N, np.float32)
        self.grads = gviews = None
        self.resets = 0                     # streams the state guard reset in the last window
        bufs = None
        if train:
            self.grads = net.layout.zeros()
            gviews = net.layout.views(self.grads)
            I = [cfg.layer_input(l) for l in range(cfg.L)]
            bufs = dict(
                grads=self.grads, gWE=gviews["WE"], ghead=head_weight(gviews), gbo=gviews["bo"],
                dlogits=np.zeros((N, cfg.V), np.float32),
                dtop=np.zeros((Bs, T, cfg.H), np.float32),
                # the head's and the layers' inputs after locked dropout, and their gradients
                xh=np.zeros((Bs, T, cfg.H), np.float32),
                dxh=np.zeros((Bs, T, cfg.H), np.float32),
                xd=[np.zeros((Bs, T, i), np.float32) for i in I],
                dxd=[np.zeros((Bs, T, i), np.float32) for i in I],
                dx=[np.zeros((Bs, T, i), np.float32) for i in I],
                wch_mask=net.wch_mask)        # DropConnect: the layers' Wch grads get the mask
        # one prepared layer call per layer: weights, this shard's grads, acts and scratch bound
        layers = [
            kernels.MoeGruBinding(net.lw[l], Bs, T, cfg.layer_input(l), cfg.K, cfg.eps_rmsnorm,
                                  grads=layer_views(gviews, l) if train else None, cap=cfg.cap)
            for l in range(cfg.L)]
        self.bind = kernels.NetworkBinding(layers, net.views["WE"], net.head, net.views["bo"],
                                           self.x0, self.outs, self.logits, self.losses, bufs)


class Network:
    """Forward/backward of the whole model over (B, T) windows, sharded over threads.

    params: the flat float32 buffer (owned by the caller; updated in place by the optimiser).
    weight_drop: the layers run on a separate Wch buffer that set_weight_masks fills (DropConnect).
    """

    def __init__(self, cfg, params, B, T, threads=1, train=True, weight_drop=False):
        self.cfg, self.B, self.T = cfg, B, T
        self.layout = ParamLayout(cfg)
        self.params = params
        self.views = self.layout.views(params)
        self.head = head_weight(self.views)
        self.train = train
        self.lw = [layer_views(self.views, l) for l in range(cfg.L)]
        self.wch_mask = None
        if weight_drop:     # the layers run on Wch * mask (an all-ones mask until one is set)
            self.wch = [w["Wch"] for w in self.lw]
            self.wch_eff = [np.array(w) for w in self.wch]                   # (X,H,H) each
            self.wch_mask = [np.ones_like(w) for w in self.wch]              # (X,H,H) each
            self.lw = [dict(w, Wch=e) for w, e in zip(self.lw, self.wch_eff)]
        self.masks_step = None    # the optimiser step the DropConnect masks were drawn for
        self.resets = 0           # streams the state guard reset in the last forward_backward
        self.updated = False      # the last forward_backward's update changed the weights
        self.masks = Masks()
        # the last window's activations, all shards in one buffer each (a shard owns its rows)
        self.x0 = np.zeros((B, T, cfg.C), np.float32)                        # (B,T,C)
        self.outs = [np.zeros((B, T, cfg.H), np.float32) for _ in range(cfg.L)]   # (B,T,H)
        self.shards = [_Shard(self, b0, b1, train) for b0, b1 in split_batch(B, threads)]
        # workers for all shards but the last, which the calling thread runs (see run)
        self.pool = Workers(len(self.shards) - 1) if len(self.shards) > 1 else None
        if self.pool is not None:             # a Network dropped without close() ends them too
            weakref.finalize(self, Workers.close, self.pool)
        self.barrier = kernels.Barrier(len(self.shards), spin_seconds(len(self.shards)))
        # where each layer's Wch sits in the flat buffer (draw_weight_masks draws ranges of it)
        self.wch_at = [self.layout.offset("l%d.Wch" % l) for l in range(cfg.L)]

    def close(self):
        """End the worker threads (also done when the Network is garbage-collected)."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()

    # ---- one shard: forward, and the training step (forward then backward) --------------------
    # Letters: Bs = the shard's streams, T = steps, N = Bs*T tokens, C = embedding width,
    # I = a layer's input width (C for layer 0, else H), H = state width, X = experts, V = vocab.
    # csrc/network.c runs embedding -> L x (locked dropout, MoE-GRU) -> head dropout -> head ->
    # cross-entropy and back in two C calls, so a shard's thread holds the GIL only between them.
    def _forward_shard(self, sh, tokens, targets, h):
        """The shard's rows of the window through the model, no gradients; h (L,B,X,H): the
        shard's rows advanced to the final state. Returns their loss sum (nats)."""
        sh.bind.forward(tokens[sh.b0:sh.b1], targets[sh.b0:sh.b1], h[:, sh.b0:sh.b1])
        return float(np.sum(sh.losses, dtype=np.float64))

    def _step_shard(self, sh, tokens, targets, h, dscale, zero=False, guard=0.0):
        """One shard's training work on its own thread: the forward with this window's dropout
        masks (and dlogits = dscale * dloss/dlogits), the state guard on its rows (guard > 0:
        kernels.state_guard; sh.resets counts them), then the backward adding dloss/dparams into
        the shard's own gradient buffer (zero: zeroed first). Returns the shard's loss sum."""
        mk, b0, b1 = self.masks, sh.b0, sh.b1
        sh.bind.set_masks(mk.embedding,
                          [m[b0:b1] if m is not None else None for m in mk.inputs] or None,
                          mk.head[b0:b1] if mk.head is not None else None)
        try:
            sh.bind.forward(tokens[b0:b1], targets[b0:b1], h[:, b0:b1], dscale)
            sh.resets = kernels.state_guard(h[:, b0:b1], guard) if guard > 0 else 0
            sh.bind.backward(zero)
        finally:
            sh.bind.set_masks()
        return float(np.sum(sh.losses, dtype=np.float64))

    # ---- whole batch --------------------------------------------------------------------------
    def _run(self, fn, *args):
        """[fn(shard, *args)] over the shards in shard order, one thread each: the calling thread
        runs the last shard itself (one hand-off fewer per window), the pool the others."""
        return self.run(fn, [(sh,) + args for sh in self.shards])

    def forward_backward(self, tokens, targets, h, dscale, masks=None, zero=False, update=None,
                         guard=0.0):
        """Loss sum (nats) over the window; adds dscale * dloss/dparams into the shard gradient
        buffers (collect them with reduce_grads; zero: they are zeroed first, as zero_grads does,
        each on its shard's thread); h (L,B,X,H) is advanced to the final state.
        masks: this window's dropout Masks (None: no dropout).
        guard > 0: the state guard runs on each shard's rows after its forward (streams whose
        state norm passes guard, or is not finite, start afresh); self.resets counts them.
        update: a kernels.StepBinding from step_binding (None: none), its set() done: in the
        same hand-off, each thread then sums its range of the gradient and runs the optimiser
        on it (reduce_grads' and the optimiser's bits); update.norm and update.loss tell the
        outcome, and self.updated whether the weights changed."""
        self.masks = masks if masks is not None else Masks()
        try:
            if update is None:
                losses = self._run(self._step_shard, tokens, targets, h, dscale, zero, guard)
                self.updated = False
            else:
                S = len(self.shards)
                ranges = optim.split_blocks(update.n, S)
                ranges += [(0, 0)] * (S - len(ranges))      # more threads than blocks
                self.barrier.reset()
                out = self.run(self._step_and_update, [
                    (i, sh, tokens, targets, h, dscale, zero, guard, update, ranges[i])
                    for i, sh in enumerate(self.shards)])
                losses = [loss for loss, _ in out]
                self.updated = out[-1][1]
            self.resets = sum(sh.resets for sh in self.shards)
            return loss_sum(losses)
        finally:
            self.masks = Masks()

    def _step_and_update(self, i, sh, tokens, targets, h, dscale, zero, guard, update, rng):
        """Thread i's part of forward_backward with an update: its shard, then its range of the
        gradient sum and of the optimiser step (StepBinding.run). Returns (loss sum, updated)."""
        try:
            loss = self._step_shard(sh, tokens, targets, h, dscale, zero, guard)
            return loss, update.run(i, rng[0], rng[1], loss)
        except BaseException:
            self.barrier.abort()              # the other threads stop waiting for this one
            raise

    def step_binding(self, grads, params, m, v, n_decay):
        """The kernels.StepBinding that forward_backward(update=...) runs: this network's
        barrier, shard gradients and DropConnect buffers, with the summed gradient buffer grads
        and the optimiser's params, m and v (n floats each; decay on [0, n_decay))."""
        regions = []
        if self.wch_mask is not None:
            regions = [(at, e.reshape(-1), mk.reshape(-1))
                       for at, e, mk in zip(self.wch_at, self.wch_eff, self.wch_mask)]
        return kernels.StepBinding(self.barrier, [sh.grads for sh in self.shards], grads, params,
                                   m, v, n_decay, optim.BLOCK, regions)

    def set_weight_masks(self, masks):
        """DropConnect with given masks (a list of (X,H,H) arrays of 0 or 1/(1-p)): the layers
        run on Wch * mask, and their Wch gradients are masked the same way. Needs
        weight_drop=True; it reads the current Wch, so it must follow every update."""
        for l, m in enumerate(masks):
            np.copyto(self.wch_mask[l], m)
            w = self.wch[l]
            kernels.dropout_forward(self.wch_eff[l].reshape(-1, 1, w.shape[-1]),
                                    w.reshape(-1, 1, w.shape[-1]), m.reshape(-1, w.shape[-1]))

    def draw_weight_masks(self, seeds, p, lo=0, hi=None):
        """DropConnect masks drawn from the hash of (seeds[l], index) (kernels.dropconnect_forward)
        for the part of each layer's Wch inside [lo, hi) of the flat parameter buffer, and Wch *
        mask there: threads may each draw their own range, after their range's update."""
        hi = self.params.shape[0] if hi is None else hi
        threshold, scale = dropconnect_threshold(p)
        for l, at in enumerate(self.wch_at):
            size = self.wch_mask[l].size
            a, b = max(lo, at), min(hi, at + size)
            if a < b:
                kernels.dropconnect_forward(self.wch_eff[l].reshape(-1)[a - at:b - at],
                                            self.wch_mask[l].reshape(-1)[a - at:b - at],
                                            self.params[a:b], a - at, seeds[l], threshold, scale)

    def forward(self, tokens, targets, h):
        """Loss sum (nats) over the window, no gradients; h is advanced."""
        return sum(self._run(self._forward_shard, tokens, targets, h))

    @property
    def threads(self):
        return len(self.shards)

    def run(self, fn, items):
        """[fn(*args) for args in items], the calls spread over the worker threads (in order):
        the workers run all but the last, the calling thread the last (Workers.run); at most
        one item per thread."""
        if self.pool is None or len(items) < 2:
            return [fn(*args) for args in items]
        return self.pool.run(fn, items)

    def zero_grads(self):
        for sh in self.shards:
            sh.grads.fill(0.0)

    def _reduce_range(self, out, lo, hi, partials=None):
        """out[lo:hi] = the shard gradients' sum in shard order (the same bits however the buffer
        is cut); partials: their block sums of squares (kernels.grad_sum)."""
        kernels.grad_sum(out[lo:hi], [sh.grads[lo:hi] for sh in self.shards], optim.BLOCK,
                         partials)

    def reduce_grads(self, out):
        """out = sum of the shard gradients, added in shard order for every element; the threads
        share the buffer in ranges (thread_ranges: one thread below optim.PARALLEL_MIN
        elements)."""
        ranges = optim.thread_ranges(out.shape[0], self.threads)
        self.run(self._reduce_range, [(out, lo, hi) for lo, hi in ranges])
        return out
