"""Training threads (issue #13, commit 281b80e): the pieces that run a step's shards and update.

- kernels.NetworkBinding (csrc/network.c): one shard's window in two C calls gives exactly the
  bits of the same kernels called one by one from Python in the order network.c documents, with
  and without dropout masks (embedding, locked inputs, head) and DropConnect on Wch, for an
  untied, a tied (C == H) and a dense (K == X) model; its argument errors name the argument.
- kernels.dropconnect_forward against ref.dropconnect_mask (awkward n and j0, ranges drawn in
  pieces, p in {0, 0.3, 0.95}, 64-bit seeds), its kept fraction, its argument errors; and
  model.dropconnect_seeds.
- kernels.grad_sum against numpy's shard-order sum and kernels.sumsq per block.
- kernels.state_guard against ref.state_guard and params.guard_state, also on a strided batch
  slice of a bigger state.
- kernels.Barrier and model.Workers: reuse, abort, result order, error propagation, close; the
  fused Network.forward_backward (kernels.StepBinding, csrc/step.c) against reduce_grads +
  grad_norm + AdamW.update, and its errors.
- The fused training step (Trainer.step without on_gradients hooks: the gradient sum and AdamW on
  the shard threads) against the unfused path (a no-op on_gradients hook), bit for bit; a
  non-finite or diverged loss leaves the parameters and optimiser untouched; the DropConnect
  masks of a step do not depend on the thread count.

Kernel comparisons run once per instruction set (the `isa` fixture of conftest.py).
"""
import threading
import time

import numpy as np
import pytest

from shoestring import kernels, model, optim, ref
from shoestring.config import NEW_RUN_CAP, TrainConfig, planned_dropout
from shoestring.data import default_corpus_path
from shoestring.errors import KernelArgumentError, TrainingError
from shoestring.model import (Masks, Network, Workers, dropconnect_seeds,
                              dropconnect_threshold, dropout_mask)
from shoestring.params import STATE_GUARD, ModelConfig, ParamLayout, guard_state, layer_views


def bits(a):
    """The raw bits of a float array (so NaN == NaN and -0.0 != 0.0)."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def same_bits(a, b, what=""):
    assert a.shape == b.shape, what
    assert np.array_equal(bits(a), bits(b)), "%s differs in %d elements" % (
        what, int(np.count_nonzero(bits(a) != bits(b))))


def small_block(monkeypatch, block):
    """A small optim.BLOCK (model.py reads it there at every call), so that the fused step's
    ranges and the norm's blocks cut a tiny model's buffer in many places."""
    monkeypatch.setattr(optim, "BLOCK", block)
    assert not hasattr(model, "BLOCK")        # one name to patch: the fused step reads optim's


# ================================================================================================
# 1. NetworkBinding: two C calls == the kernels one by one
# ================================================================================================
MODELS = {
    "untied": ModelConfig(V=29, C=12, H=16, L=2, X=3, K=2, cap=3.0),
    "tied": ModelConfig(V=29, C=16, H=16, L=2, X=3, K=2, cap=3.0, tie_embeddings=True),
    "dense": ModelConfig(V=29, C=12, H=16, L=2, X=3, K=3, cap=3.0),
}
B, T = 4, 6


def _case(cfg, seed=0):
    lay = ParamLayout(cfg)
    params = lay.init(seed)
    rng = np.random.default_rng(seed + 1)
    params += 0.1 * rng.standard_normal(params.shape).astype(np.float32)   # non-trivial biases
    windows = [tuple(rng.integers(0, cfg.V, (B, T)).astype(np.int32) for _ in range(2))
               for _ in range(2)]                                           # (tokens, targets)
    h0 = (0.5 * rng.standard_normal((cfg.L, B, cfg.X, cfg.H))).astype(np.float32)
    return lay, params, windows, h0, rng


def _masks(rng, cfg, mode, tokens):
    if mode == "none":
        return None
    emb = dropout_mask(rng, (cfg.V,), 0.2)
    emb[tokens[0, 0]] = 0.0                       # a token of the window is dropped everywhere
    emb[tokens[1, 2]] = np.float32(1 / 0.8)
    inputs = [dropout_mask(rng, (B, cfg.layer_input(l)), 0.3) for l in range(cfg.L)]
    if mode == "some":                            # layer 0 unmasked, no head mask
        return Masks(embedding=emb, inputs=[None] + inputs[1:], head=None)
    return Masks(embedding=emb, inputs=inputs, head=dropout_mask(rng, (B, cfg.H), 0.3))


def _by_hand(cfg, params, windows, masks, h, dscale, wch_masks=None):
    """The kernels of csrc/network.c called one by one, in its documented order, over the
    windows (the first zeroes the gradient, the next ones add). -> grads, [losses per window],
    and the last window's x0 and layer outputs."""
    lay = ParamLayout(cfg)
    P = lay.views(params)
    grads = lay.zeros()
    G = lay.views(grads)
    head = P["Wo"] if "Wo" in P else P["WE"]
    ghead = G["Wo"] if "Wo" in G else G["WE"]
    N = B * T
    lw, scratch, all_losses = [], [], []
    for l in range(cfg.L):
        w = layer_views(P, l)
        if wch_masks is not None:                 # DropConnect: the layer runs on Wch * mask
            w = dict(w, Wch=w["Wch"] * wch_masks[l])
        lw.append(w)
        scratch.append(np.zeros_like(w["Wch"]))
    layers = [kernels.MoeGruBinding(
        lw[l], B, T, cfg.layer_input(l), cfg.K, cfg.eps_rmsnorm,
        grads=dict(layer_views(G, l), Wch=scratch[l]) if wch_masks is not None
        else layer_views(G, l), cap=cfg.cap) for l in range(cfg.L)]
    for (tokens, targets), mk in zip(windows, masks):
        mk = mk if mk is not None else Masks()
        ins = mk.inputs or [None] * cfg.L
        tok, tgt = tokens.reshape(-1), targets.reshape(-1)
        # forward: embedding, the layers (each input under its mask), the head's mask, the head,
        # the cross-entropy with dlogits
        x0 = np.zeros((B, T, cfg.C), np.float32)
        kernels.embedding_forward(x0.reshape(N, cfg.C), tok, P["WE"], mk.embedding)
        x, inps, outs = x0, [], []
        for l in range(cfg.L):
            if ins[l] is not None:
                xd = np.zeros((B, T, cfg.layer_input(l)), np.float32)
                kernels.dropout_forward(xd, x, ins[l])
                x = xd
            inps.append(x)
            out = np.zeros((B, T, cfg.H), np.float32)
            layers[l].forward(out, h[l], x)
            outs.append(out)
            x = out
        if mk.head is not None:
            xh = np.zeros((B, T, cfg.H), np.float32)
            kernels.dropout_forward(xh, x, mk.head)
            x = xh
        top = x.reshape(N, cfg.H)
        logits = np.zeros((N, cfg.V), np.float32)
        kernels.matmul_forward(logits, top, head, P["bo"])
        losses = np.zeros(N, np.float32)
        dlogits = np.zeros((N, cfg.V), np.float32)
        kernels.crossentropy_forward(losses, dlogits, logits, tgt, dscale)
        all_losses.append(losses)
        # backward: the head, its mask, the layers in reverse (each Wch gradient masked under
        # DropConnect), their input masks, the embedding
        dtop = np.zeros((B, T, cfg.H), np.float32)
        kernels.matmul_backward(dtop.reshape(N, cfg.H), ghead, G["bo"], dlogits, top, head)
        dout = dtop
        if mk.head is not None:
            dxh = np.zeros((B, T, cfg.H), np.float32)
            kernels.dropout_backward(dxh, dtop, mk.head)
            dout = dxh
        for l in reversed(range(cfg.L)):
            dx = np.zeros((B, T, cfg.layer_input(l)), np.float32)
            if wch_masks is not None:
                scratch[l].fill(0.0)
            layers[l].backward(dx, dout, inps[l])
            if wch_masks is not None:
                G["l%d.Wch" % l][...] += scratch[l] * wch_masks[l]
            dout = dx
            if ins[l] is not None:
                dxd = np.zeros_like(dx)
                kernels.dropout_backward(dxd, dx, ins[l])
                dout = dxd
        kernels.embedding_backward(G["WE"], dout.reshape(N, cfg.C), tok, mk.embedding)
    return grads, all_losses, x0, outs


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mode", ["none", "all", "some", "dropconnect"])
def test_network_binding_is_the_kernels_one_by_one(isa, name, mode):
    """Network.forward_backward on one thread (NetworkBinding: two C calls per window) gives the
    bits of the wrappers called one by one: gradient buffer, losses, h, x0 and every layer's
    output, over two windows (the first zeroes stale gradients, the second adds)."""
    cfg = MODELS[name]
    lay, params, windows, h0, rng = _case(cfg, seed=len(name) + len(mode))
    masks = [_masks(rng, cfg, "all" if mode == "dropconnect" else mode, tok) for tok, _ in windows]
    wch = None
    if mode == "dropconnect":     # p = 0.5: the mask's 2.0 makes d * m exact (no FMA question)
        wch = [dropout_mask(rng, (cfg.X, cfg.H, cfg.H), 0.5) for _ in range(cfg.L)]
    dscale = 1.0 / (2 * B * T)
    net = Network(cfg, params, B, T, threads=1, weight_drop=wch is not None)
    if wch is not None:
        net.set_weight_masks(wch)
        for l in range(cfg.L):
            same_bits(net.wch_eff[l], layer_views(lay.views(params), l)["Wch"] * wch[l], "Wch_eff")
    net.shards[0].grads.fill(7.0)                 # stale: zero=True must clear them
    h = h0.copy()
    loss = 0.0
    for a, ((tokens, targets), mk) in enumerate(zip(windows, masks)):
        loss += net.forward_backward(tokens, targets, h, dscale, mk, zero=a == 0)
    h_hand = h0.copy()
    grads, losses, x0, outs = _by_hand(cfg, params, windows, masks, h_hand, dscale, wch)
    same_bits(net.shards[0].grads, grads, "gradient")
    same_bits(net.shards[0].losses, losses[-1], "losses")
    same_bits(h, h_hand, "h")
    same_bits(net.x0, x0, "x0")
    for l in range(cfg.L):
        same_bits(net.outs[l], outs[l], "outs[%d]" % l)
    assert np.isfinite(grads).all() and np.any(grads != 0)
    assert loss == sum(float(np.sum(x, dtype=np.float64)) for x in losses)   # nats, in order
    if mode != "none":            # the masks act: the unmasked model gives other gradients
        plain, *_ = _by_hand(cfg, params, windows, [None, None], h0.copy(), dscale)
        assert not np.array_equal(plain, grads)
    net.close()


def test_network_binding_forward_only_ignores_masks_and_matches_forward(isa):
    """A forward without dscale (evaluation) ignores set masks and gives the training forward's
    unmasked losses and h; a training forward then applies them."""
    cfg = MODELS["untied"]
    lay, params, windows, h0, rng = _case(cfg, seed=11)
    (tokens, targets), _ = windows
    net = Network(cfg, params, B, T, threads=1)
    h_eval = h0.copy()
    ev = net.forward(tokens, targets, h_eval)
    eval_losses = net.shards[0].losses.copy()
    h_train = h0.copy()
    tr = net.forward_backward(tokens, targets, h_train, 1.0, None, zero=True)
    same_bits(net.shards[0].losses, eval_losses, "losses")
    same_bits(h_train, h_eval, "h")
    assert tr == ev
    bind = net.shards[0].bind
    bind.set_masks(head=dropout_mask(rng, (B, cfg.H), 0.5))
    h_masked = h0.copy()
    bind.forward(tokens, targets, h_masked)                  # forward only: masks do not apply
    same_bits(net.shards[0].losses, eval_losses, "losses under masks, forward only")
    bind.forward(tokens, targets, h0.copy(), dscale=1.0)     # training: the head mask applies
    assert not np.array_equal(net.shards[0].losses, eval_losses)
    net.close()


def _binding_parts(cfg, train=True, Bs=B):
    """Everything a NetworkBinding binds, freshly allocated, as keyword arguments."""
    lay = ParamLayout(cfg)
    params = lay.init(0)
    P = lay.views(params)
    grads = lay.zeros()
    G = lay.views(grads)
    N, I = Bs * T, [cfg.layer_input(l) for l in range(cfg.L)]
    layers = [kernels.MoeGruBinding(layer_views(P, l), Bs, T, I[l], cfg.K, cfg.eps_rmsnorm,
                                    grads=layer_views(G, l) if train else None, cap=cfg.cap)
              for l in range(cfg.L)]
    parts = dict(layers=layers, WE=P["WE"], head=P["Wo"], bo=P["bo"],
                 x0=np.zeros((Bs, T, cfg.C), np.float32),
                 outs=[np.zeros((Bs, T, cfg.H), np.float32) for _ in range(cfg.L)],
                 logits=np.zeros((N, cfg.V), np.float32), losses=np.zeros(N, np.float32),
                 train=None)
    if train:
        parts["train"] = dict(
            grads=grads, gWE=G["WE"], ghead=G["Wo"], gbo=G["bo"],
            dlogits=np.zeros((N, cfg.V), np.float32), dtop=np.zeros((Bs, T, cfg.H), np.float32),
            xh=np.zeros((Bs, T, cfg.H), np.float32), dxh=np.zeros((Bs, T, cfg.H), np.float32),
            xd=[np.zeros((Bs, T, i), np.float32) for i in I],
            dxd=[np.zeros((Bs, T, i), np.float32) for i in I],
            dx=[np.zeros((Bs, T, i), np.float32) for i in I])
    return parts


def _bind(parts):
    return kernels.NetworkBinding(**parts)


def test_network_binding_rejects_bad_buffers():
    cfg = MODELS["untied"]
    V, C, H = cfg.V, cfg.C, cfg.H

    def bad(match, **change):
        parts = _binding_parts(cfg)
        for k, v in change.items():
            if k.startswith("train_"):
                parts["train"] = dict(parts["train"], **{k[6:]: v})
            else:
                parts[k] = v(parts) if callable(v) else v
        with pytest.raises(KernelArgumentError, match=match):
            _bind(parts)

    _bind(_binding_parts(cfg))                                  # the unchanged parts bind
    _bind(_binding_parts(cfg, train=False))
    bad(r"NetworkBinding: layers must be a non-empty list", layers=[])
    bad(r"NetworkBinding: layer 1 is bound for", layers=lambda p: [p["layers"][0]] * 2)
    bad(r"NetworkBinding: layer 1 is bound for", layers=lambda p: [
        p["layers"][0], _binding_parts(cfg, Bs=B + 1)["layers"][1]])
    bad(r"NetworkBinding: WE must be a 2-D", WE=np.zeros(V * C, np.float32))
    bad(r"NetworkBinding: head has shape \(29, 12\), expected \(V,H\)",
        head=np.zeros((V, C), np.float32))
    bad(r"NetworkBinding: bo has shape", bo=np.zeros(V + 1, np.float32))
    bad(r"NetworkBinding: x0 has shape \(4, 6, 16\), expected \(B,T,C\)",
        x0=np.zeros((B, T, H), np.float32))
    bad(r"NetworkBinding: x0 must have dtype float32", x0=np.zeros((B, T, C)))
    bad(r"NetworkBinding: outs must be a list of 2", outs=lambda p: p["outs"][:1])
    bad(r"NetworkBinding: outs\[1\] has shape", outs=lambda p: [p["outs"][0],
                                                                np.zeros((B, T, C), np.float32)])
    bad(r"NetworkBinding: logits has shape", logits=np.zeros((B * T, V + 1), np.float32))
    bad(r"NetworkBinding: losses has shape", losses=np.zeros(B * T - 1, np.float32))
    bad(r"NetworkBinding: outs\[0\] and outs\[1\] overlap", outs=lambda p: [p["outs"][0]] * 2)
    bad(r"NetworkBinding: train\['grads'\] must be the flat float32 gradient buffer",
        train_grads=None)
    bad(r"NetworkBinding: train\['dlogits'\] has shape",
        train_dlogits=np.zeros((B * T, V - 1), np.float32))
    bad(r"NetworkBinding: train\['ghead'\] is required", train_ghead=None)
    bad(r"NetworkBinding: train\['xd'\] must be a list of 2", train_xd=[])
    bad(r"NetworkBinding: train\['dx'\]\[0\] has shape",
        train_dx=[np.zeros((B, T, H), np.float32)] * 2)
    bad(r"NetworkBinding: train\['wch_mask'\] must be a list of 2", train_wch_mask=[None])
    bad(r"NetworkBinding: train\['wch_mask'\] must be a list of 2",     # an array, not a list
        train_wch_mask=np.ones((cfg.X, H, H), np.float32))
    bad(r"NetworkBinding: train\['wch_mask'\]\[1\] has shape",
        train_wch_mask=[None, np.ones((cfg.X, H, H - 1), np.float32)])
    parts = _binding_parts(cfg)
    parts["train"]["xh"] = parts["train"]["dtop"]
    with pytest.raises(KernelArgumentError, match=r"train\['dtop'\] and train\['xh'\] overlap"):
        _bind(parts)
    parts = _binding_parts(cfg, train=False)
    parts["train"] = _binding_parts(cfg)["train"]        # train buffers, but layers without grads
    with pytest.raises(KernelArgumentError, match="NetworkBinding: layer 0 has no grads to train"):
        _bind(parts)


def test_network_binding_rejects_bad_calls():
    cfg = MODELS["untied"]
    rng = np.random.default_rng(0)
    parts = _binding_parts(cfg)
    bind = _bind(parts)
    evaluator = _bind(_binding_parts(cfg, train=False))
    tok = rng.integers(0, cfg.V, (B, T)).astype(np.int32)
    h = np.zeros((cfg.L, B, cfg.X, cfg.H), np.float32)
    F = "NetworkBinding.forward: "
    with pytest.raises(KernelArgumentError, match="NetworkBinding.backward: needs a training "
                                                  "forward first"):
        bind.backward()
    bind.forward(tok, tok, h)                                # forward only: still no backward
    with pytest.raises(KernelArgumentError, match="needs a training forward first"):
        bind.backward()
    with pytest.raises(KernelArgumentError, match=F + "dscale given but this binding has no "
                                                      "train buffers"):
        evaluator.forward(tok, tok, h, dscale=1.0)
    evaluator.forward(tok, tok, h)
    for t, name in ((tok, "targets"), (tok.copy(), "tokens")):
        badt = tok.copy()
        badt[B - 1, T - 1] = cfg.V                            # one id outside [0, V)
        args = (badt, t) if name == "tokens" else (t, badt)
        with pytest.raises(KernelArgumentError, match=F + r"%s \(B,T\) has ids outside \[0, V\) "
                                                          r"= \[0, 29\)" % name):
            bind.forward(*args, h, dscale=1.0)
        badt[B - 1, T - 1] = -1
        with pytest.raises(KernelArgumentError, match=r"%s \(B,T\) has ids outside" % name):
            bind.forward(*args, h)
    with pytest.raises(KernelArgumentError, match=r"tokens \(B,T\) must be a numpy int32"):
        bind.forward(tok[:, :-1], tok, h)                    # wrong shape
    with pytest.raises(KernelArgumentError, match=r"targets \(B,T\) must be a numpy int32"):
        bind.forward(tok, tok.astype(np.int64), h)
    for badh in (np.zeros((cfg.L, B + 1, cfg.X, cfg.H), np.float32),
                 np.zeros((cfg.L, B, cfg.X, cfg.H)),                            # float64
                 np.zeros((cfg.L, B, cfg.X, 2 * cfg.H), np.float32)[..., ::2],   # strided rows
                 np.zeros((cfg.L, B, cfg.H, cfg.X), np.float32).transpose(0, 1, 3, 2)):
        with pytest.raises(KernelArgumentError, match=F + r"h must be a writable float32 array "
                                                          r"\(L,B,X,H\)"):
            bind.forward(tok, tok, badh, dscale=1.0)
    ro = h.copy()
    ro.flags.writeable = False
    with pytest.raises(KernelArgumentError, match=r"h must be a writable"):
        bind.forward(tok, tok, ro)
    S = "NetworkBinding.set_masks: "
    with pytest.raises(KernelArgumentError, match=S + r"embedding has shape \(28,\)"):
        bind.set_masks(embedding=np.ones(cfg.V - 1, np.float32))
    with pytest.raises(KernelArgumentError, match=S + "inputs must be a list of 2 masks"):
        bind.set_masks(inputs=[None])
    with pytest.raises(KernelArgumentError, match=S + r"inputs\[1\] has shape"):
        bind.set_masks(inputs=[None, np.ones((B, cfg.C), np.float32)])
    with pytest.raises(KernelArgumentError, match=S + r"head has shape"):
        bind.set_masks(head=np.ones((B + 1, cfg.H), np.float32))
    # after all that, the binding still trains: the call after a failed one is a whole window
    grads = parts["train"]["grads"]
    grads.fill(np.nan)
    bind.forward(tok, tok, h, dscale=1.0)
    bind.backward(zero=True)
    assert np.isfinite(grads).all() and np.any(grads != 0)


# ================================================================================================
# 2. DropConnect masks from a hash
# ================================================================================================
P_DROP = [0.0, 0.3, 0.95]
SEEDS = [0, 1, 0x0123456789ABCDEF, 2 ** 64 - 1]
SPANS = [(1, 0), (7, 3), (33, 1 << 20), (1000, 0), (4099, 17), (9, 2 ** 32 - 4), (5, 2 ** 40 + 3)]


def _draw(n, j0, seed, p, W=None):
    threshold, scale = dropconnect_threshold(p)
    W = np.random.default_rng(n).standard_normal(n).astype(np.float32) if W is None else W
    out = np.full(n, np.nan, np.float32)
    mask = np.full(n, np.nan, np.float32)
    kernels.dropconnect_forward(out, mask, W, j0, seed, threshold, scale)
    return out, mask, W


@pytest.mark.parametrize("p", P_DROP)
@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: "seed%x" % s)
def test_dropconnect_matches_reference(p, seed):
    threshold, scale = dropconnect_threshold(p)
    assert threshold == round(p * 2 ** 24) and scale == np.float32(1 / (1 - p))
    for n, j0 in SPANS:
        out, mask, W = _draw(n, j0, seed, p)
        want = ref.dropconnect_mask(n, j0, seed, threshold, scale)
        assert want.dtype == np.float32
        same_bits(mask, want, "mask n=%d j0=%d" % (n, j0))
        same_bits(out, W * want, "out n=%d j0=%d" % (n, j0))
        assert set(np.unique(mask).tolist()) <= {0.0, scale}
    if p == 0.0:                                  # nothing dropped, the weights as they are
        out, mask, W = _draw(500, 7, seed, p)
        assert (mask == 1.0).all() and np.array_equal(out, W)


@pytest.mark.parametrize("p", P_DROP)
def test_dropconnect_ranges_drawn_in_pieces_are_the_whole(p):
    """Drawing [0, n) at once equals drawing [0, k) and [k, n) with j0 = k (threads draw their
    own ranges), for cuts inside and at the ends."""
    n, seed = 2053, 2 ** 64 - 1
    W = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    whole_out, whole_mask, _ = _draw(n, 0, seed, p, W)
    for k in (0, 1, 8, 1000, 2052, 2053):
        out = np.full(n, np.nan, np.float32)
        mask = np.full(n, np.nan, np.float32)
        threshold, scale = dropconnect_threshold(p)
        for lo, hi in ((0, k), (k, n)):
            if lo < hi:
                kernels.dropconnect_forward(out[lo:hi], mask[lo:hi], W[lo:hi], lo, seed,
                                            threshold, scale)
        same_bits(mask, whole_mask, "mask cut at %d" % k)
        same_bits(out, whole_out, "out cut at %d" % k)
    # an offset draw is the same range of a draw from 0
    _, part_mask, _ = _draw(100, 900, seed, p, W[900:1000].copy())
    same_bits(part_mask, whole_mask[900:1000])


@pytest.mark.parametrize("p", P_DROP)
def test_dropconnect_keeps_about_one_minus_p(p):
    n = 400_000
    _, mask, _ = _draw(n, 0, 12345, p, np.ones(n, np.float32))
    kept = float(np.mean(mask != 0))
    assert abs(kept - (1 - p)) < 0.005, kept
    # another seed gives another mask (unless nothing is dropped), with the same fraction
    _, other, _ = _draw(n, 0, 12346, p, np.ones(n, np.float32))
    assert np.array_equal(mask, other) == (p == 0.0)
    # the mask has no structure by index: the halves and the odd/even elements agree
    for part in (mask[: n // 2], mask[n // 2:], mask[::2], mask[1::2]):
        assert abs(float(np.mean(part != 0)) - (1 - p)) < 0.01


def test_dropconnect_threshold_extremes():
    n = 3000
    W = np.ones(n, np.float32)
    out, mask = np.empty(n, np.float32), np.empty(n, np.float32)
    kernels.dropconnect_forward(out, mask, W, 0, 5, 1 << 24, 7.0)        # p = 1: all dropped
    assert (mask == 0).all() and (out == 0).all()
    kernels.dropconnect_forward(out, mask, W, 0, 5, 0, 1.0)              # p = 0: all kept
    assert (mask == 1).all() and (out == 1).all()
    kernels.dropconnect_forward(out[:0], mask[:0], W[:0], 0, 5, 0, 1.0)  # n = 0 is fine


def test_dropconnect_rejects_bad_arguments():
    n = 10
    W = np.ones(n, np.float32)
    out, mask = np.zeros(n, np.float32), np.zeros(n, np.float32)
    F = "dropconnect_forward: "

    def bad(match, **kw):
        args = dict(out=out, mask=mask, W=W, j0=0, seed=1, threshold=100, scale=1.0)
        args.update(kw)
        with pytest.raises(KernelArgumentError, match=F + match):
            kernels.dropconnect_forward(**args)

    for seed in (-1, 2 ** 64, 1.5, "1", None):
        bad(r"seed must be an integer in \[0, 2\^64\)", seed=seed)
    bad(r"threshold must be <= 2\^24, got 16777217", threshold=(1 << 24) + 1)
    bad(r"threshold must be an integer >= 0", threshold=-1)
    bad(r"threshold must be an integer >= 0", threshold=0.5)
    bad(r"j0 must be an integer >= 0", j0=-1)
    bad(r"out has shape \(11,\), expected \(n\)", out=np.zeros(n + 1, np.float32))
    bad(r"mask has shape \(9,\), expected \(n\)", mask=np.zeros(n - 1, np.float32))
    bad(r"mask must be a 1-D numpy float32 array", mask=np.zeros((2, 5), np.float32))
    bad(r"W must be a 1-D numpy float32 array", W=[1.0] * n)
    bad(r"W must have dtype float32", W=np.ones(n))
    bad(r"out must be C-contiguous", out=np.zeros(2 * n, np.float32)[::2])
    bad(r"out and mask overlap", mask=out)
    bad(r"out and W overlap", out=W)
    ro = np.zeros(n, np.float32)
    ro.flags.writeable = False
    bad(r"mask must be writable", mask=ro)
    for a in (out, mask):
        assert (a == 0).all()                     # nothing was written by a rejected call


def test_dropconnect_seeds_are_a_pure_function_of_seed_step_layer():
    assert dropconnect_seeds(1337, 5, 3) == dropconnect_seeds(1337, 5, 3)
    assert dropconnect_seeds(1337, 5, 2) == dropconnect_seeds(1337, 5, 3)[:2]
    every = [s for step in range(200) for s in dropconnect_seeds(1337, step, 4)]
    assert len(set(every)) == len(every)                       # all steps x layers differ
    assert all(isinstance(s, int) and 0 <= s < 2 ** 64 for s in every)
    assert dropconnect_seeds(1338, 5, 3) != dropconnect_seeds(1337, 5, 3)
    assert set(dropconnect_seeds(0, 0, 8)).isdisjoint(dropconnect_seeds(1, 0, 8))
    big = dropconnect_seeds(2 ** 63 - 1, 10 ** 9, 2)           # huge seeds and steps stay in range
    assert all(0 <= s < 2 ** 64 for s in big)
    # the high and low halves both vary (the hash reads both: seed_lo and seed_hi)
    assert len({s >> 32 for s in every}) == len(every)
    assert len({s & 0xFFFFFFFF for s in every}) == len(every)


# ================================================================================================
# 3. The shards' gradient sum
# ================================================================================================
def _shards(rng, S, n):
    """Gradients of very different magnitudes, so the order of the additions shows in the bits."""
    return [(rng.standard_normal(n) * 10.0 ** rng.integers(-6, 7, n)).astype(np.float32)
            for _ in range(S)]


@pytest.mark.parametrize("S", [1, 2, 3, 4])
@pytest.mark.parametrize("n,block", [(1, 1), (1, 64), (17, 4), (1000, 64), (4099, 1000),
                                     (70001, 1 << 16), (4096, 1024)])
def test_grad_sum_is_numpy_shard_order_and_sumsq_per_block(isa, S, n, block):
    rng = np.random.default_rng(n * 10 + S)
    g = _shards(rng, S, n)
    want = g[0].copy()
    for x in g[1:]:
        want = want + x                            # ((g0 + g1) + g2) + ... in float32
    out = np.full(n, np.nan, np.float32)
    nb = -(-n // block)
    partials = np.full(nb, np.nan)
    kernels.grad_sum(out, g, block, partials)
    same_bits(out, want, "out")
    want_p = np.array([kernels.sumsq(want[b:b + block]) for b in range(0, n, block)])
    same_bits(partials, want_p, "partials")
    out2 = np.full(n, np.nan, np.float32)
    kernels.grad_sum(out2, g, block)               # partials=None: the same sum
    same_bits(out2, want, "out without partials")
    if S >= 3 and n >= 1000:                       # the test can tell the orders apart
        assert not np.array_equal(want, g[0] + (g[1] + g[2]) + sum(g[3:], np.float32(0)))


def test_grad_sum_of_ranges_is_the_whole(isa):
    """Block-aligned ranges summed apart (as the threads do) give the whole sum's bits and its
    partial sums in block order."""
    rng = np.random.default_rng(9)
    n, block = 10_000, 512
    g = _shards(rng, 3, n)
    whole = np.empty(n, np.float32)
    wp = np.empty(-(-n // block))
    kernels.grad_sum(whole, g, block, wp)
    out, parts = np.empty(n, np.float32), []
    for lo, hi in ((0, 2048), (2048, 2560), (2560, n)):
        p = np.empty(-(-(hi - lo) // block))
        kernels.grad_sum(out[lo:hi], [x[lo:hi] for x in g], block, p)
        parts.extend(p)
    same_bits(out, whole)
    same_bits(np.array(parts), wp)


def test_grad_sum_rejects_bad_arguments():
    n = 12
    g = [np.ones(n, np.float32), np.ones(n, np.float32)]
    out = np.zeros(n, np.float32)
    F = "grad_sum: "
    for shards in ([], (), None, g[0]):
        with pytest.raises(KernelArgumentError, match=F + "shards must be a non-empty list"):
            kernels.grad_sum(out, shards, 4)
    with pytest.raises(KernelArgumentError, match=F + r"shards\[1\] has shape \(11,\)"):
        kernels.grad_sum(out, [g[0], np.ones(n - 1, np.float32)], 4)
    with pytest.raises(KernelArgumentError, match=F + r"shards\[0\] must have dtype float32"):
        kernels.grad_sum(out, [np.ones(n), g[1]], 4)
    with pytest.raises(KernelArgumentError, match=F + r"out must be a 1-D"):
        kernels.grad_sum(out.reshape(3, 4), g, 4)
    with pytest.raises(KernelArgumentError, match=F + r"out and shards\[1\] overlap"):
        kernels.grad_sum(g[1], g, 4)
    with pytest.raises(KernelArgumentError, match=F + r"block must be an integer >= 1"):
        kernels.grad_sum(out, g, 0)
    with pytest.raises(KernelArgumentError, match=F + r"partials has shape \(4,\), expected "
                                                      r"\(blocks\) = \(3,\)"):
        kernels.grad_sum(out, g, 4, np.zeros(4))
    with pytest.raises(KernelArgumentError, match=F + r"partials must have dtype float64"):
        kernels.grad_sum(out, g, 4, np.zeros(3, np.float32))
    assert (out == 0).all()


# ================================================================================================
# 4. The training state guard in C
# ================================================================================================
def _runaway_state(L=2, Bn=9, X=3, H=5, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((L, Bn, X, H)).astype(np.float32)
    h[:, 1] *= 1e4                                # ran away
    h[1, 2, 0, 3] = np.nan                        # not finite
    h[0, 3, 2, 0] = np.inf
    h[1, 4, 1, 1] = -np.inf
    h[:, 5] = 0.0
    h[0, 5, 0, 0] = STATE_GUARD                   # exactly at the limit: kept
    h[:, 6] = 0.0
    h[1, 6, 2, 4] = np.nextafter(np.float32(STATE_GUARD), np.float32(np.inf))   # just past
    h[:, 7] = 3e38                                # the float64 sum of squares does not overflow
    return h


def test_state_guard_matches_reference_and_guard_state():
    h = _runaway_state()
    want, n = ref.state_guard(h, STATE_GUARD)
    assert n == 6                                 # streams 1, 2, 3, 4, 6, 7
    got = h.copy()
    assert kernels.state_guard(got, STATE_GUARD) == n
    same_bits(got, want, "h")
    old = h.copy()
    assert guard_state(old) == n
    same_bits(got, old, "h vs params.guard_state")
    assert got[0, 5, 0, 0] == STATE_GUARD and (got[:, 0] == h[:, 0]).all()
    assert kernels.state_guard(got, STATE_GUARD) == 0         # nothing left to reset
    same_bits(got, want)
    small = h.copy()                              # a lower limit resets every non-zero stream
    assert kernels.state_guard(small, 1e-3) == ref.state_guard(h, 1e-3)[1] == 9
    assert (small == 0).all()


@pytest.mark.parametrize("b0,b1", [(0, 9), (2, 5), (8, 9), (0, 1), (4, 4)])
def test_state_guard_on_a_batch_slice_touches_only_the_slice(b0, b1):
    """A shard's rows h[:, b0:b1] of the whole (L,B,X,H) state (strided along L): the slice's
    streams are guarded as the reference does, every other stream keeps its bits (runaway ones
    included)."""
    big = _runaway_state(L=3, Bn=9, seed=1)
    before = big.copy()
    sl = big[:, b0:b1]
    assert not sl.flags.c_contiguous or b1 - b0 in (0, 9)
    want, n = ref.state_guard(before[:, b0:b1], STATE_GUARD)
    assert kernels.state_guard(sl, STATE_GUARD) == n
    same_bits(big[:, b0:b1], want, "the slice")
    same_bits(big[:, :b0], before[:, :b0], "rows before the slice")
    same_bits(big[:, b1:], before[:, b1:], "rows after the slice")


def test_state_guard_rejects_bad_state():
    F = "state_guard: "
    with pytest.raises(KernelArgumentError, match=F + r"h must be a 4-D numpy float32 array"):
        kernels.state_guard(np.zeros((2, 3, 4), np.float32), 1.0)
    for bad in (np.zeros((2, 3, 4, 5)),                                         # float64
                np.zeros((2, 3, 4, 10), np.float32)[..., ::2],                  # strided H
                np.zeros((2, 3, 5, 4), np.float32).transpose(0, 1, 3, 2),      # X,H swapped
                np.zeros((3, 2, 4, 5), np.float32).transpose(1, 0, 2, 3)):     # B before L
        with pytest.raises(KernelArgumentError, match=F + r"h must be a writable float32 array "
                                                          r"\(L,B,X,H\)"):
            kernels.state_guard(bad, 1.0)
    ro = np.full((2, 3, 4, 5), np.nan, np.float32)
    ro.flags.writeable = False
    with pytest.raises(KernelArgumentError, match=F + r"h must be a writable"):
        kernels.state_guard(ro, 1.0)


# ================================================================================================
# 5. Barrier, Workers, and the fused Network.forward_backward
# ================================================================================================
def _threads(target, n, *args):
    ts = [threading.Thread(target=target, args=(i,) + args, daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    return ts


def _joined(ts, timeout=20.0):
    end = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, end - time.monotonic()))
    return not any(t.is_alive() for t in ts)


def test_barrier_lets_three_threads_pass_many_times_in_step():
    rounds, parties = 150, 3
    bar = kernels.Barrier(parties)
    arrived = [0] * rounds
    lock = threading.Lock()
    errors = []

    def work(i):
        try:
            for r in range(rounds):
                with lock:
                    arrived[r] += 1
                bar.wait()
                with lock:                          # nobody passes before everyone arrived
                    if arrived[r] != parties:
                        errors.append((i, r, arrived[r]))
        except BaseException as exc:               # noqa: BLE001 (reported below)
            errors.append((i, exc))

    ts = _threads(work, parties)
    assert _joined(ts), "the barrier deadlocked"
    assert errors == [] and arrived == [parties] * rounds


@pytest.mark.parametrize("spin", [0.0, 0.003], ids=["no-spin", "spin"])
def test_barrier_with_or_without_spinning(spin):
    """spin=0 (threads sharing cores) yields at once; both pass many rounds the same way."""
    bar = kernels.Barrier(2, spin)
    assert bar.spin == spin
    count = []

    def work(i):
        for _ in range(100):
            bar.wait()
        count.append(i)

    ts = _threads(work, 1)
    for _ in range(100):
        bar.wait()
    assert _joined(ts) and count == [0]


def test_barrier_spin_is_checked_and_chosen_by_cores(monkeypatch):
    for bad in (-0.001, 2.0, "1", None):
        with pytest.raises(KernelArgumentError, match="Barrier: spin must be 0 to 1 seconds"):
            kernels.Barrier(2, bad)
    monkeypatch.setattr(model, "usable_cores", lambda: 2)
    assert model.spin_seconds(1) == model.spin_seconds(2) == 0.003     # a core per thread
    assert model.spin_seconds(3) == 0.0                               # more threads than cores
    w = Workers(2)                                                    # 3 threads on 2 cores
    try:
        assert w.start.spin == w.end.spin == 0.0
        assert w.run(lambda x: x + 1, [(1,), (2,), (3,)]) == [2, 3, 4]
    finally:
        w.close()


def test_barrier_abort_breaks_waiting_and_later_waits_until_reset():
    bar = kernels.Barrier(2)
    got = []

    def waiter(i):
        try:
            bar.wait()
            got.append("passed")
        except kernels.BrokenBarrier as exc:
            got.append(exc)

    ts = _threads(waiter, 1)
    time.sleep(0.05)                               # the waiter is inside C, spinning or napping
    assert got == []
    bar.abort()
    assert _joined(ts, 10.0), "abort did not release the waiting thread"
    assert len(got) == 1 and isinstance(got[0], kernels.BrokenBarrier)
    assert "another thread of the training step failed" in str(got[0])
    with pytest.raises(kernels.BrokenBarrier):     # broken for every later wait, at once
        bar.wait()
    bar.reset()                                    # reset: usable again
    got.clear()
    ts = _threads(waiter, 1)
    bar.wait()
    assert _joined(ts) and got == ["passed"]
    kernels.Barrier(1).wait()                      # one party: never waits
    with pytest.raises(KernelArgumentError, match="Barrier: parties must be an integer >= 1"):
        kernels.Barrier(0)


def test_workers_run_in_item_order_on_their_threads():
    w = Workers(2)
    try:
        def where(i):
            return i, threading.current_thread().name
        me = threading.current_thread().name
        assert w.run(where, [(0,), (1,), (2,)]) == [
            (0, "shoestring-shard-0"), (1, "shoestring-shard-1"), (2, me)]
        assert w.run(where, [(5,), (6,)]) == [(5, "shoestring-shard-0"), (6, me)]   # fewer items
        assert w.run(where, [(7,)]) == [(7, me)]
        for _ in range(50):                        # many hand-offs, results never mixed up
            assert w.run(lambda a, b: a * b, [(1, 2), (3, 4), (5, 6)]) == [2, 12, 30]
        with pytest.raises(ValueError, match=r"Workers.run: 4 items for 3 threads"):
            w.run(where, [(0,), (1,), (2,), (3,)])
        with pytest.raises(ValueError, match=r"Workers.run: 0 items"):
            w.run(where, [])
        assert w.run(where, [(8,), (9,), (10,)])[2] == (10, me)     # still working
    finally:
        w.close()
    assert not any(t.is_alive() for t in w.threads)


def test_workers_raise_errors_after_every_item_ended_and_keep_working():
    w = Workers(2)
    done = []

    def fn(i, fail):
        if fail:
            raise fail("item %d" % i)
        time.sleep(0.03)
        done.append(i)
        return i

    try:
        with pytest.raises(KeyError, match="item 0"):              # a worker's error
            w.run(fn, [(0, KeyError), (1, None), (2, None)])
        assert sorted(done) == [1, 2]
        done.clear()
        with pytest.raises(RuntimeError, match="item 2"):          # the caller's error
            w.run(fn, [(0, None), (1, None), (2, RuntimeError)])
        assert sorted(done) == [0, 1]                              # the workers had finished
        with pytest.raises(KeyError, match="item 0"):              # the first in item order
            w.run(fn, [(0, KeyError), (1, RuntimeError), (2, None)])
        assert w.run(fn, [(0, None), (1, None), (2, None)]) == [0, 1, 2]

        # the caller's BrokenBarrier came from a worker's failure: the worker's error is raised
        bar = kernels.Barrier(2)

        def meet(i):
            if i == 0:
                bar.abort()
                raise ZeroDivisionError("the real failure")
            bar.wait()

        with pytest.raises(ZeroDivisionError, match="the real failure"):
            w.run(meet, [(0,), (1,)])
        bar.reset()
        bar2 = kernels.Barrier(2)

        def both_broken(i):                        # nothing but BrokenBarrier: that is raised
            if i == 0:
                bar2.abort()
            bar2.wait()

        with pytest.raises(kernels.BrokenBarrier):
            w.run(both_broken, [(0,), (1,)])
        assert w.run(lambda i: -i, [(1,), (2,), (3,)]) == [-1, -2, -3]
    finally:
        w.close()
    assert not any(t.is_alive() for t in w.threads)


NET_CFG = ModelConfig(V=31, C=12, H=16, L=2, X=3, K=2, cap=3.0)


def _net_case(seed=0, Bn=6, Tn=5):
    lay = ParamLayout(NET_CFG)
    params = lay.init(seed)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, NET_CFG.V, (Bn, Tn)).astype(np.int32)
    targets = rng.integers(0, NET_CFG.V, (Bn, Tn)).astype(np.int32)
    h0 = (0.3 * rng.standard_normal((NET_CFG.L, Bn, NET_CFG.X, NET_CFG.H))).astype(np.float32)
    return lay, params, tokens, targets, h0


def _step_case(net, lay, params, block_lr=1e-3, clip=0.5, diverged_above=float("inf"),
               prior=2.5, tokens=30):
    """A StepBinding over fresh buffers for net, set for one AdamW step."""
    grads, m, v = lay.zeros(), lay.zeros(), lay.zeros()
    bind = net.step_binding(grads, params, m, v, lay.n_decay)
    opt = optim.AdamW(lay.n, lay.n_decay, weight_decay=0.01)
    bc1, bc2 = opt.bias_corrections()
    bind.set(prior=prior, tokens=tokens, diverged_above=diverged_above, lr=block_lr,
             beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps, weight_decay=opt.weight_decay,
             clip=clip, bc1=bc1, bc2=bc2)
    return bind, grads, m, v


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("block", [256, 1 << 16])
@pytest.mark.parametrize("clip", [0.5, 0.0], ids=["clip", "no-clip"])
def test_fused_forward_backward_is_reduce_grads_grad_norm_and_adamw(threads, block, clip,
                                                                   monkeypatch):
    """forward_backward with a StepBinding (csrc/step.c): the summed gradient has reduce_grads'
    bits, the norm grad_norm's, and the weights, m and v AdamW.update's; the loss it checked is
    (prior + the window's loss sum) / tokens."""
    small_block(monkeypatch, block)
    lay, params, tokens, targets, h0 = _net_case(seed=threads)
    out = {}
    for fused in (False, True):
        p = params.copy()
        net = Network(NET_CFG, p, 6, 5, threads=threads)
        h = h0.copy()
        net.forward_backward(targets, tokens, h, 0.01, zero=True)          # an earlier window
        if fused:
            bind, g, m, v = _step_case(net, lay, p, clip=clip)
            loss = net.forward_backward(tokens, targets, h, 0.01, update=bind)
            assert net.updated and bind.loss == (2.5 + loss) / 30
            norm = bind.norm
            assert np.isfinite(np.sum(bind.param_sumsq))
        else:
            loss = net.forward_backward(tokens, targets, h, 0.01)
            assert not net.updated
            g = net.reduce_grads(lay.zeros())
            opt = optim.AdamW(lay.n, lay.n_decay, weight_decay=0.01)
            norm = opt.update(p, g, 1e-3, clip, net.run, net.threads)
            m, v = opt.m, opt.v
        out[fused] = (loss, g, norm, h, p, m, v)
        net.close()
    a, b = out[False], out[True]
    assert a[0] == b[0] and a[2] == b[2] and np.isfinite(a[2]) and a[2] > 0
    for i, what in ((1, "summed gradient"), (3, "h"), (4, "params"), (5, "m"), (6, "v")):
        same_bits(b[i], a[i], what)
    assert not np.array_equal(out[True][4], params)                     # it did update


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_forward_backward_with_an_unfit_loss_updates_nothing(threads):
    lay, params, tokens, targets, h0 = _net_case(seed=7)
    p = params.copy()
    net = Network(NET_CFG, p, 6, 5, threads=threads)
    bind, g, m, v = _step_case(net, lay, p, diverged_above=-1.0)
    net.forward_backward(tokens, targets, h0.copy(), 0.01, zero=True, update=bind)
    assert not net.updated and bind.loss > -1.0 and np.isfinite(bind.norm)
    same_bits(p, params, "params")
    assert not m.any() and not v.any()
    net.close()


def test_fused_forward_backward_errors_propagate_and_the_next_window_works(monkeypatch):
    """A shard that fails (a bad token in a worker's rows, or in the calling thread's) or a bad
    update range ends forward_backward with that error, not the others' BrokenBarrier and not a
    hang, and updates nothing; the next window then gives the bits of a fresh network's."""
    small_block(monkeypatch, 256)
    lay, params, tokens, targets, h0 = _net_case(seed=4)
    p = params.copy()
    net = Network(NET_CFG, p, 6, 5, threads=3)
    bind, g, m, v = _step_case(net, lay, p)
    bad = tokens.copy()
    bad[0, 0] = NET_CFG.V                          # row 0: the first shard, a worker thread
    with pytest.raises(KernelArgumentError, match=r"tokens \(B,T\) has ids outside"):
        net.forward_backward(bad, targets, h0.copy(), 0.1, zero=True, update=bind)
    bad = tokens.copy()
    bad[5, 4] = -3                                 # the last shard: the calling thread
    with pytest.raises(KernelArgumentError, match=r"tokens \(B,T\) has ids outside"):
        net.forward_backward(bad, targets, h0.copy(), 0.1, zero=True, update=bind)
    same_bits(p, params, "params")                 # nobody updated with a partial gradient
    with pytest.raises(KernelArgumentError, match=r"StepBinding.run: bad thread"):
        bind.run(0, 3, 256, 0.0)                   # a range that is not block-aligned
    with pytest.raises(KernelArgumentError, match=r"StepBinding.set: 1 seeds"):
        bind.set(seeds=[1])                        # this network has no DropConnect regions

    q = params.copy()
    fresh = Network(NET_CFG, q, 6, 5, threads=3)
    res = []
    for n, w in ((net, p), (fresh, q)):
        h = h0.copy()
        b, gg, mm, vv = _step_case(n, lay, w)
        loss = n.forward_backward(tokens, targets, h, 0.1, zero=True, update=b)
        res.append((loss, gg, b.norm, h, w))
        n.close()
    assert res[0][0] == res[1][0] and res[0][2] == res[1][2]
    for i in (1, 3, 4):
        same_bits(res[0][i], res[1][i])


def test_step_binding_rejects_bad_buffers():
    lay, params, *_ = _net_case()
    net = Network(NET_CFG, params, 6, 5, threads=2)
    shards = [sh.grads for sh in net.shards]
    z = lay.zeros
    with pytest.raises(KernelArgumentError, match="StepBinding: barrier must be"):
        kernels.StepBinding(None, shards, z(), params, z(), z(), 0, 256)
    with pytest.raises(KernelArgumentError, match="shards must be a list of 2"):
        kernels.StepBinding(net.barrier, shards[:1], z(), params, z(), z(), 0, 256)
    with pytest.raises(KernelArgumentError, match=r"StepBinding: m has shape"):
        kernels.StepBinding(net.barrier, shards, z(), params, np.zeros(3, np.float32), z(), 0,
                            256)
    with pytest.raises(KernelArgumentError, match="grads and params overlap"):
        kernels.StepBinding(net.barrier, shards, params, params, z(), z(), 0, 256)
    with pytest.raises(KernelArgumentError, match="n_decay=.* exceeds"):
        kernels.StepBinding(net.barrier, shards, z(), params, z(), z(), lay.n + 1, 256)
    with pytest.raises(KernelArgumentError, match=r"regions\[0\] runs past"):
        kernels.StepBinding(net.barrier, shards, z(), params, z(), z(), 0, 256,
                            [(lay.n - 2, np.zeros(4, np.float32), np.zeros(4, np.float32))])
    net.close()


def test_network_close_joins_the_workers():
    lay, params, tokens, targets, h0 = _net_case()
    net = Network(NET_CFG, params, 6, 5, threads=3)
    threads = list(net.pool.threads)
    assert len(threads) == 2 and all(t.is_alive() for t in threads)
    net.forward_backward(tokens, targets, h0.copy(), 0.1, zero=True)
    net.close()
    assert net.pool is None and not any(t.is_alive() for t in threads)
    net.close()                                    # twice is fine
    assert net.run(lambda i: i + 1, [(1,), (2,)]) == [2, 3]   # closed: serial, still correct


# ================================================================================================
# 6. The fused training step against the unfused one
# ================================================================================================
STEP_CFG = ModelConfig(V=300, K=2, cap=NEW_RUN_CAP, C=32, H=48, X=4)
STEP_TOKENS = np.random.default_rng(0).integers(0, 300, 30_000).astype(np.uint16)


@pytest.fixture(scope="module")
def tok():
    from shoestring.tokenizer import Tokenizer
    t = Tokenizer.train(paths=[default_corpus_path()], vocab_size=300)
    assert t.vocab_size == STEP_CFG.V
    return t


def _trainer(tok, threads, accumulate=1, hooked=False, **kw):
    """A tiny Trainer with the default regularisers (dropout, embedding dropout, DropConnect);
    hooked: a no-op on_gradients callback, which takes the unfused path."""
    from shoestring.trainer import Trainer
    kw.setdefault("warmup_steps", 2)               # a real learning rate from the third step
    config = planned_dropout(TrainConfig(model=STEP_CFG, threads=threads, batch_size=12,
                                         seq_length=24, accumulate=accumulate,
                                         max_steps=10 ** 6, **kw))
    assert config.dropout > 0 and config.embedding_dropout > 0 and config.weight_drop > 0
    hooks = []
    cbs = [{"on_gradients": lambda run, step: hooks.append(step)}] if hooked else []
    tr = Trainer(config, STEP_CFG, tok, STEP_TOKENS, STEP_TOKENS[:500], callbacks=cbs)
    tr.hook_calls = hooks
    fused = []
    real = tr.net.forward_backward

    def spy(*a, **k):                              # which path each window took
        fused.append(k.get("update") is not None)
        return real(*a, **k)
    tr.net.forward_backward = spy
    tr.fused_windows = fused
    return tr


def _expected_masks(tr, step):
    c = tr.config
    threshold, scale = dropconnect_threshold(c.weight_drop)
    seeds = dropconnect_seeds(c.seed, step, tr.cfg.L)
    return [ref.dropconnect_mask(m.size, 0, seeds[l], threshold, scale).reshape(m.shape)
            for l, m in enumerate(tr.net.wch_mask)]


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("block", [None, 4096], ids=["BLOCK", "block4096"])
def test_fused_step_is_bitwise_the_unfused_step(tok, threads, accumulate, block, monkeypatch):
    """Trainer.step without on_gradients hooks (gradient sum and AdamW on the shard threads,
    the next step's DropConnect masks drawn in the update ranges) against the path a no-op hook
    takes (reduce_grads, grad_norm, the clip on the buffer, AdamW): params, m, v, h and the
    returned (loss, norm, lr) after 4 steps, bit for bit. block4096: the update ranges cut
    through the Wch matrices, so the masks are drawn in pieces."""
    if block:
        small_block(monkeypatch, block)
    runs = {}
    for hooked in (False, True):
        tr = _trainer(tok, threads, accumulate, hooked)
        try:
            runs[hooked] = ([tr.step() for _ in range(4)], tr)
        finally:
            tr.net.close()
    (out_f, f), (out_u, u) = runs[False], runs[True]
    assert f.fused_windows == ([False] * (accumulate - 1) + [True]) * 4 and f.hook_calls == []
    assert not any(u.fused_windows) and u.hook_calls == [1, 2, 3, 4]
    assert out_f == out_u
    assert all(norm > f.config.grad_clip for _, norm, _ in out_f)   # the clip engaged
    assert out_f[-1][2] == pytest.approx(f.config.lr)               # past the warm-up
    assert f.opt.step == u.opt.step == 4
    same_bits(f.params, u.params, "params")
    same_bits(f.opt.m, u.opt.m, "m")
    same_bits(f.opt.v, u.opt.v, "v")
    same_bits(f.h, u.h, "h")
    assert not np.array_equal(f.params, f.layout.init(f.config.seed))      # it trained
    # the fused step drew step 4's masks on the updated weights; the unfused path draws them at
    # the start of the next step
    assert f.net.masks_step == 4 and u.net.masks_step == 3
    for l, (m, want) in enumerate(zip(f.net.wch_mask, _expected_masks(f, 4))):
        same_bits(m, want, "fused layer %d mask" % l)
        wch = f.layout.views(f.params)["l%d.Wch" % l]
        same_bits(f.net.wch_eff[l], wch * m, "fused layer %d Wch * mask" % l)
    for m, want in zip(u.net.wch_mask, _expected_masks(u, 3)):
        same_bits(m, want, "unfused mask")


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_step_without_clip_is_bitwise_the_unfused_step(tok, threads):
    runs = []
    for hooked in (False, True):
        tr = _trainer(tok, threads, 1, hooked, grad_clip=0.0)
        try:
            runs.append(([tr.step() for _ in range(3)], tr.params.copy(), tr.opt.m.copy(),
                         tr.opt.v.copy()))
        finally:
            tr.net.close()
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1:], runs[1][1:]):
        same_bits(a, b)


def _snapshot(tr):
    return dict(params=tr.params.copy(), m=tr.opt.m.copy(), v=tr.opt.v.copy(), step=tr.opt.step,
                masks=[m.copy() for m in tr.net.wch_mask],
                eff=[e.copy() for e in tr.net.wch_eff], masks_step=tr.net.masks_step)


def _untouched(tr, snap):
    same_bits(tr.params, snap["params"], "params")
    same_bits(tr.opt.m, snap["m"], "m")
    same_bits(tr.opt.v, snap["v"], "v")
    assert tr.opt.step == snap["step"] and tr.net.masks_step == snap["masks_step"]
    for a, b in zip(tr.net.wch_mask + tr.net.wch_eff, snap["masks"] + snap["eff"]):
        same_bits(a, b, "DropConnect buffers")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_step_with_a_diverged_loss_updates_nothing(tok, threads, monkeypatch):
    small_block(monkeypatch, 4096)                 # several update ranges, all skipped
    tr = _trainer(tok, threads)
    try:
        tr.step()
        tr.step()
        snap = _snapshot(tr)
        limit, tr.diverged_above = tr.diverged_above, -1.0
        with pytest.raises(TrainingError, match="training diverged: the loss became .* at step 3"):
            tr.step()
        assert tr.fused_windows[-1] is True
        _untouched(tr, snap)
        tr.diverged_above = limit                  # the run may go on: the next step updates
        loss, _, _ = tr.step()
        assert np.isfinite(loss) and tr.opt.step == 3 and tr.net.masks_step == 3
        assert not np.array_equal(tr.params, snap["params"])
    finally:
        tr.net.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_step_with_a_nan_loss_updates_nothing(tok, threads):
    tr = _trainer(tok, threads)
    try:
        tr.step()
        tr.params[tr.layout.offset("bo") + 3] = np.nan      # every logit row gets a NaN
        snap = _snapshot(tr)
        with pytest.raises(TrainingError, match="the loss became nan at step 2"):
            tr.step()
        assert tr.fused_windows[-1] is True
        _untouched(tr, snap)
    finally:
        tr.net.close()


def test_dropconnect_masks_do_not_depend_on_the_thread_count(tok, monkeypatch):
    small_block(monkeypatch, 4096)
    seen = {}
    for threads in (1, 2, 3):
        tr = _trainer(tok, threads)
        try:
            masks = []
            for _ in range(3):
                tr.step()
                masks.append([m.copy() for m in tr.net.wch_mask])
        finally:
            tr.net.close()
        seen[threads] = masks
    for step, (a, b, c) in enumerate(zip(seen[1], seen[2], seen[3])):
        for l, want in enumerate(_expected_masks(tr, step + 1)):
            same_bits(a[l], want, "threads 1, step %d, layer %d" % (step + 1, l))
            same_bits(b[l], want, "threads 2, step %d, layer %d" % (step + 1, l))
            same_bits(c[l], want, "threads 3, step %d, layer %d" % (step + 1, l))
    assert not np.array_equal(seen[1][0][0], seen[1][1][0])        # a new mask every step
    assert not np.array_equal(seen[1][0][0], seen[1][0][1])        # and for every layer
