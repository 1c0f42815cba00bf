"""model.py: the MoE-GRU language model for training: embedding -> L layers -> head -> loss.

A window of B streams x T steps is a handful of C calls per shard: embedding, one call per layer
forward, the head matmul, the fused cross-entropy, then the same in reverse. The batch is cut into
S contiguous shards (S = threads), each with its own activations and gradient buffer, run on S
Python threads (cffi releases the GIL inside C). Shard gradients are summed in shard order, so
the result does not depend on timing: the same seed and thread count give the same bits.

Layouts (batch-major, so a shard's slice is contiguous): tokens/targets (B,T) int32,
activations (B,T,I), recurrent state h (L,B,X,H).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import kernels
from .optim import split_blocks
from .params import ParamLayout, layer_views


def split_batch(B, S):
    """[(b0, b1)] cutting B rows into S nearly equal contiguous shards (no empty shard)."""
    S = max(1, min(S, B))
    bounds = [B * s // S for s in range(S + 1)]
    return [(bounds[s], bounds[s + 1]) for s in range(S)]


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
        self.grads = self.gviews = None
        if train:
            self.dlogits = np.zeros((N, cfg.V), np.float32)
            self.dx = [np.zeros((Bs, T, cfg.layer_input(l)), np.float32) for l in range(cfg.L)]
            self.dtop = np.zeros((Bs, T, cfg.H), np.float32)
            self.grads = net.layout.zeros()
            self.gviews = net.layout.views(self.grads)
        # one prepared layer call per layer: weights, this shard's grads, acts and scratch bound
        self.layers = [
            kernels.MoeGruBinding(net.lw[l], Bs, T, cfg.layer_input(l), cfg.K, cfg.eps_rmsnorm,
                                  grads=layer_views(self.gviews, l) if train else None)
            for l in range(cfg.L)]


class Network:
    """Forward/backward of the whole model over (B, T) windows, sharded over threads.

    params: the flat float32 buffer (owned by the caller; updated in place by the optimiser).
    """

    def __init__(self, cfg, params, B, T, threads=1, train=True):
        self.cfg, self.B, self.T = cfg, B, T
        self.layout = ParamLayout(cfg)
        self.params = params
        self.views = self.layout.views(params)
        self.train = train
        self.lw = [layer_views(self.views, l) for l in range(cfg.L)]
        # the last window's activations, all shards in one buffer each (a shard owns its rows)
        self.x0 = np.zeros((B, T, cfg.C), np.float32)                        # (B,T,C)
        self.outs = [np.zeros((B, T, cfg.H), np.float32) for _ in range(cfg.L)]   # (B,T,H)
        self.shards = [_Shard(self, b0, b1, train) for b0, b1 in split_batch(B, threads)]
        self.pool = ThreadPoolExecutor(len(self.shards)) if len(self.shards) > 1 else None

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    # ---- one shard -------------------------------------------------------------------------
    def _forward_shard(self, sh, tokens, targets, h, dscale):
        cfg, v = self.cfg, self.views
        tok = np.ascontiguousarray(tokens[sh.b0:sh.b1]).reshape(-1)
        kernels.embedding_forward(sh.x0.reshape(sh.N, cfg.C), tok, v["WE"])
        x = sh.x0
        for l in range(cfg.L):
            sh.layers[l].forward(sh.outs[l], h[l, sh.b0:sh.b1], x)
            x = sh.outs[l]
        top = x.reshape(sh.N, cfg.H)
        kernels.matmul_forward(sh.logits, top, v["Wo"], v["bo"])
        tgt = np.ascontiguousarray(targets[sh.b0:sh.b1]).reshape(-1)
        train = dscale is not None
        kernels.crossentropy_forward(sh.losses, sh.dlogits if train else None, sh.logits, tgt,
                                     dscale if train else 1.0)
        if train:
            self._backward_shard(sh, tok)
        return float(np.sum(sh.losses, dtype=np.float64))

    def _backward_shard(self, sh, tok):
        cfg, v, g = self.cfg, self.views, sh.gviews
        top = sh.outs[-1].reshape(sh.N, cfg.H)
        dtop = sh.dtop
        dtop.fill(0.0)
        kernels.matmul_backward(dtop.reshape(sh.N, cfg.H), g["Wo"], g["bo"], sh.dlogits, top, v["Wo"])
        dout = dtop
        for l in reversed(range(cfg.L)):
            inp = sh.outs[l - 1] if l > 0 else sh.x0
            dinp = sh.dx[l]
            dinp.fill(0.0)
            sh.layers[l].backward(dinp, dout, inp)
            dout = dinp
        kernels.embedding_backward(g["WE"], dout.reshape(sh.N, cfg.C), tok)

    # ---- whole batch --------------------------------------------------------------------------
    def _run(self, tokens, targets, h, dscale):
        if self.pool is None:
            return [self._forward_shard(sh, tokens, targets, h, dscale) for sh in self.shards]
        futs = [self.pool.submit(self._forward_shard, sh, tokens, targets, h, dscale)
                for sh in self.shards]
        return [f.result() for f in futs]

    def forward_backward(self, tokens, targets, h, dscale):
        """Loss sum (nats) over the window; adds dscale * dloss/dparams into the shard gradient
        buffers (collect them with reduce_grads); h (L,B,X,H) is advanced to the final state."""
        return sum(self._run(tokens, targets, h, dscale))

    def forward(self, tokens, targets, h):
        """Loss sum (nats) over the window, no gradients; h is advanced."""
        return sum(self._run(tokens, targets, h, None))

    @property
    def threads(self):
        return len(self.shards)

    def run(self, fn, items):
        """[fn(*args) for args in items], the calls spread over the worker threads (in order)."""
        if self.pool is None or len(items) < 2:
            return [fn(*args) for args in items]
        futs = [self.pool.submit(fn, *args) for args in items]
        return [f.result() for f in futs]

    def zero_grads(self):
        for sh in self.shards:
            sh.grads.fill(0.0)

    def _reduce_range(self, out, lo, hi):
        np.copyto(out[lo:hi], self.shards[0].grads[lo:hi])
        for sh in self.shards[1:]:
            np.add(out[lo:hi], sh.grads[lo:hi], out=out[lo:hi])

    def reduce_grads(self, out):
        """out = sum of the shard gradients, added in shard order for every element (so the same
        bits however the buffer is cut); the threads share the buffer in ranges (split_blocks)."""
        self.run(self._reduce_range, [(out, lo, hi) for lo, hi in split_blocks(out.shape[0],
                                                                                 self.threads)])
        return out
