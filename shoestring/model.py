"""model.py: the MoE-GRU language model for training: embedding -> L layers -> head -> loss.

A window of B streams x T steps is a handful of C calls per shard: embedding, one call per layer
forward, the head matmul, the fused cross-entropy, then the same in reverse. The batch is cut into
S contiguous shards (S = threads), each with its own activations and gradient buffer, run on S
Python threads (cffi releases the GIL inside C). Shard gradients are summed in shard order, so
the result does not depend on timing: the same seed and thread count give the same bits.

Layouts (batch-major, so a shard's slice is contiguous): tokens/targets (B,T) int32,
activations (B,T,I), recurrent state h (L,B,X,H).

Regularisers (training only, issue #11) come as masks drawn by the trainer from its seeded
generator (see Masks): embedding dropout scales whole vocabulary rows, locked dropout masks each
layer's input and the head's input with one (B,I) mask per window shared by its T steps, and
DropConnect replaces Wch by Wch * mask in a separate buffer for one optimiser step (its gradient
is masked the same way in reduce_grads). The candidate's soft cap (cfg.cap) is part of the
model. With tied embeddings (cfg.tie_embeddings) the head's weight is WE and its gradient adds
into WE's.
"""
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from . import kernels
from .optim import thread_ranges
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


def head_weight(views):
    """The head's (V,H) weight: Wo, or WE when the embeddings are tied (no Wo in the layout)."""
    return views["Wo"] if "Wo" in views else views["WE"]


class _Shard:
    """Buffers of one batch shard: activations, scratch, its own gradient buffer."""

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
        self.tok = self.top = None          # the last forward's (N,) tokens and (N,H) head input
        self.grads = self.gviews = None
        if train:
            self.dlogits = np.zeros((N, cfg.V), np.float32)
            self.dx = [np.zeros((Bs, T, cfg.layer_input(l)), np.float32) for l in range(cfg.L)]
            self.dtop = np.zeros((Bs, T, cfg.H), np.float32)
            self.grads = net.layout.zeros()
            self.gviews = net.layout.views(self.grads)
            self.ghead = head_weight(self.gviews)
            # inputs after locked dropout and their gradients (used only when masks are given)
            self.xd = [np.zeros((Bs, T, cfg.layer_input(l)), np.float32) for l in range(cfg.L)]
            self.dxd = [np.zeros_like(a) for a in self.xd]
            self.xh = np.zeros((Bs, T, cfg.H), np.float32)
            self.dxh = np.zeros_like(self.xh)
        # one prepared layer call per layer: weights, this shard's grads, acts and scratch bound
        self.layers = [
            kernels.MoeGruBinding(net.lw[l], Bs, T, cfg.layer_input(l), cfg.K, cfg.eps_rmsnorm,
                                  grads=layer_views(self.gviews, l) if train else None,
                                  cap=cfg.cap)
            for l in range(cfg.L)]


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
        self.wch_masks = None
        if weight_drop:
            self.wch = [w["Wch"] for w in self.lw]
            self.wch_eff = [np.array(w) for w in self.wch]
            self.lw = [dict(w, Wch=e) for w, e in zip(self.lw, self.wch_eff)]
        self.masks = Masks()
        # the last window's activations, all shards in one buffer each (a shard owns its rows)
        self.x0 = np.zeros((B, T, cfg.C), np.float32)                        # (B,T,C)
        self.outs = [np.zeros((B, T, cfg.H), np.float32) for _ in range(cfg.L)]   # (B,T,H)
        self.shards = [_Shard(self, b0, b1, train) for b0, b1 in split_batch(B, threads)]
        # workers for all shards but the last, which the calling thread runs (see run)
        self.pool = ThreadPoolExecutor(len(self.shards) - 1) if len(self.shards) > 1 else None

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    # ---- one shard: forward, backward, and the training step that runs both -------------------
    # Letters: Bs = the shard's streams, T = steps, N = Bs*T tokens, C = embedding width,
    # I = a layer's input width (C for layer 0, else H), H = state width, X = experts, V = vocab.
    def _forward_shard(self, sh, tokens, targets, h, dscale=None):
        """The shard's rows of the window through the model; returns their loss sum (nats).
        h (L,B,X,H): the shard's rows advanced to the final state. With dscale (training) the
        dropout masks apply, every layer saves what its backward needs, and the fused
        cross-entropy also writes dlogits = dscale * dloss/dlogits for _backward_shard."""
        cfg, v, mk = self.cfg, self.views, self.masks
        train = dscale is not None
        # 1. embedding: x0 = WE[tokens] (rows scaled by the embedding-dropout mask)
        sh.tok = np.ascontiguousarray(tokens[sh.b0:sh.b1]).reshape(-1)          # (N,)
        kernels.embedding_forward(sh.x0.reshape(sh.N, cfg.C), sh.tok, v["WE"],   # (N,C)
                                  mk.embedding if train else None)
        # 2. the L MoE-GRU layers, each input under its locked-dropout mask
        x = sh.x0                                                                # (Bs,T,C)
        for l in range(cfg.L):
            if train and mk.inputs and mk.inputs[l] is not None:
                kernels.dropout_forward(sh.xd[l], x, mk.inputs[l][sh.b0:sh.b1])  # (Bs,T,I)
                x = sh.xd[l]
            sh.layers[l].forward(sh.outs[l], h[l, sh.b0:sh.b1], x)    # (Bs,T,I) -> (Bs,T,H)
            x = sh.outs[l]
        if train and mk.head is not None:                              # the head's input mask
            kernels.dropout_forward(sh.xh, x, mk.head[sh.b0:sh.b1])                 # (Bs,T,H)
            x = sh.xh
        # 3. head: logits = top . W^T + bo, W = Wo or the tied WE
        sh.top = x.reshape(sh.N, cfg.H)                                          # (N,H)
        kernels.matmul_forward(sh.logits, sh.top, self.head, v["bo"])            # (N,V)
        # 4. cross-entropy against the next tokens (and, training, dlogits in the same pass)
        tgt = np.ascontiguousarray(targets[sh.b0:sh.b1]).reshape(-1)             # (N,)
        kernels.crossentropy_forward(sh.losses, sh.dlogits if train else None, sh.logits, tgt,
                                     dscale if train else 1.0)                   # (N,), (N,V)
        return float(np.sum(sh.losses, dtype=np.float64))

    def _backward_shard(self, sh):
        """Back from the dlogits of the last training _forward_shard: adds dloss/dparams into
        the shard's own gradient buffer (sh.grads)."""
        cfg, g, mk = self.cfg, sh.gviews, self.masks
        # 4'. head: dtop = dlogits . W; dW += dlogits^T . top; dbo += column sums of dlogits
        dtop = sh.dtop                                                           # (Bs,T,H)
        dtop.fill(0.0)
        kernels.matmul_backward(dtop.reshape(sh.N, cfg.H), sh.ghead, g["bo"], sh.dlogits,
                                sh.top, self.head)                   # (N,V) -> (N,H), (V,H)
        dout = dtop
        if mk.head is not None:
            sh.dxh.fill(0.0)
            kernels.dropout_backward(sh.dxh, dtop, mk.head[sh.b0:sh.b1])            # (Bs,T,H)
            dout = sh.dxh
        # 3'. the layers in reverse: dinp from dout (truncated BPTT: no gradient into h)
        for l in reversed(range(cfg.L)):
            masked = bool(mk.inputs) and mk.inputs[l] is not None
            inp = sh.xd[l] if masked else (sh.outs[l - 1] if l > 0 else sh.x0)    # (Bs,T,I)
            dinp = sh.dx[l]                                                      # (Bs,T,I)
            dinp.fill(0.0)
            sh.layers[l].backward(dinp, dout, inp)                    # (Bs,T,H) -> (Bs,T,I)
            dout = dinp
            if masked:
                sh.dxd[l].fill(0.0)
                kernels.dropout_backward(sh.dxd[l], dinp, mk.inputs[l][sh.b0:sh.b1])
                dout = sh.dxd[l]
        # 1'. embedding: dWE[tokens] += dx0 (rows scaled by the same mask)
        kernels.embedding_backward(g["WE"], dout.reshape(sh.N, cfg.C), sh.tok,     # (N,C)
                                   mk.embedding)

    def _step_shard(self, sh, tokens, targets, h, dscale, zero=False):
        """One shard's training work on its own thread: (zero: its gradient buffer first), the
        forward, then the backward. Returns the shard's loss sum (nats)."""
        if zero:
            sh.grads.fill(0.0)
        loss = self._forward_shard(sh, tokens, targets, h, dscale)
        self._backward_shard(sh)
        return loss

    # ---- whole batch --------------------------------------------------------------------------
    def _run(self, fn, *args):
        """[fn(shard, *args)] over the shards in shard order, one thread each: the calling thread
        runs the last shard itself (one hand-off fewer per window), the pool the others."""
        return self.run(fn, [(sh,) + args for sh in self.shards])

    def forward_backward(self, tokens, targets, h, dscale, masks=None, zero=False):
        """Loss sum (nats) over the window; adds dscale * dloss/dparams into the shard gradient
        buffers (collect them with reduce_grads; zero: they are zeroed first, as zero_grads does,
        each on its shard's thread); h (L,B,X,H) is advanced to the final state.
        masks: this window's dropout Masks (None: no dropout)."""
        self.masks = masks if masks is not None else Masks()
        try:
            return sum(self._run(self._step_shard, tokens, targets, h, dscale, zero))
        finally:
            self.masks = Masks()

    def set_weight_masks(self, masks):
        """DropConnect for the next optimiser step: Wch_eff = Wch * mask per layer (masks: a list
        of (X,H,H) arrays), so reduce_grads masks Wch's gradient the same way. Needs
        weight_drop=True; call it again after every update (it reads the current Wch)."""
        self.wch_masks = masks
        for l, m in enumerate(masks):
            w = self.wch[l]
            kernels.dropout_forward(self.wch_eff[l].reshape(-1, 1, w.shape[-1]),
                                    w.reshape(-1, 1, w.shape[-1]), m.reshape(-1, w.shape[-1]))

    def forward(self, tokens, targets, h):
        """Loss sum (nats) over the window, no gradients; h is advanced."""
        return sum(self._run(self._forward_shard, tokens, targets, h))

    @property
    def threads(self):
        return len(self.shards)

    def run(self, fn, items):
        """[fn(*args) for args in items], the calls spread over the worker threads (in order):
        the pool runs all but the last, the calling thread the last, then waits for the pool."""
        if self.pool is None or len(items) < 2:
            return [fn(*args) for args in items]
        futs = [self.pool.submit(fn, *args) for args in items[:-1]]
        try:
            last = fn(*items[-1])
        finally:
            wait(futs)                        # no worker still writing when this returns/raises
        return [f.result() for f in futs] + [last]

    def zero_grads(self):
        for sh in self.shards:
            sh.grads.fill(0.0)

    def _reduce_range(self, out, lo, hi):
        g = [sh.grads[lo:hi] for sh in self.shards]
        if len(g) == 1:
            np.copyto(out[lo:hi], g[0])
            return
        np.add(g[0], g[1], out=out[lo:hi])    # ((g0 + g1) + g2) + ...: one pass for two shards
        for x in g[2:]:
            np.add(out[lo:hi], x, out=out[lo:hi])

    def reduce_grads(self, out):
        """out = sum of the shard gradients, added in shard order for every element (so the same
        bits however the buffer is cut); the threads share the buffer in ranges (thread_ranges:
        one thread below optim.PARALLEL_MIN elements)."""
        self.run(self._reduce_range, [(out, lo, hi) for lo, hi in thread_ranges(out.shape[0],
                                                                                  self.threads)])
        if self.wch_masks is not None:       # d(Wch * mask)/dWch = mask
            gv = self.layout.views(out)
            for l, m in enumerate(self.wch_masks):
                gv["l%d.Wch" % l] *= m
        return out
