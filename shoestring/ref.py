"""ref.py: numpy reference of every C kernel, forward and backward: the test oracle.

Written for clarity, not speed; every function works in float32 and float64 (the dtype of its
inputs), so the backward passes can be checked against finite differences in float64.
Backward functions RETURN gradients (they do not accumulate), unlike the C kernels.
"""
import math

import numpy as np

from .params import layer_views

# ============================================================================================
# Foundation kernels: matmul, RMSNorm, AdamW, elementwise
# ============================================================================================


def matmul_forward(inp, W, b=None):
    """out(N,OC) = inp(N,C) . W(OC,C)^T + b(OC)."""
    out = inp @ W.T
    return out + b if b is not None else out


def matmul_backward(dout, inp, W):
    """-> dinp(N,C), dW(OC,C), db(OC)."""
    return dout @ W, dout.T @ inp, dout.sum(axis=0)


def rmsnorm_forward(inp, gain, eps):
    """-> out(N,H), rstd(N)."""
    rstd = 1.0 / np.sqrt(np.mean(inp * inp, axis=-1) + eps)
    return gain * inp * rstd[:, None], rstd


def rmsnorm_backward(dout, inp, gain, rstd):
    """-> dinp(N,H), dgain(H)."""
    H = inp.shape[-1]
    dot = np.sum(gain * dout * inp, axis=-1)
    dinp = rstd[:, None] * gain * dout - (dot * rstd ** 3 / H)[:, None] * inp
    dgain = np.sum(dout * inp * rstd[:, None], axis=0)
    return dinp, dgain


def adamw_step(params, grads, m, v, n_decay, lr, beta1, beta2, eps, weight_decay,
               grad_scale, bias_correction1, bias_correction2):
    """-> new params, m, v (textbook AdamW, decoupled decay on the [0, n_decay) prefix)."""
    g = grads * grad_scale
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    upd = (m / bias_correction1) / (np.sqrt(v / bias_correction2) + eps)
    decay = np.zeros_like(params)
    decay[:n_decay] = weight_decay * params[:n_decay]
    return params - lr * (upd + decay), m, v


def sumsq(x):
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def sigmoid_forward(inp):
    return 1.0 / (1.0 + np.exp(-inp))


def sigmoid_backward(dout, out):
    return dout * out * (1 - out)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_forward(inp):
    """Exact GELU: x * Phi(x)."""
    return (0.5 * inp * (1.0 + _erf(inp / math.sqrt(2.0)))).astype(inp.dtype)


def gelu_backward(dout, inp):
    cdf = 0.5 * (1.0 + _erf(inp / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * inp * inp) / math.sqrt(2.0 * math.pi)
    return (dout * (cdf + inp * pdf)).astype(inp.dtype)


def softmax_forward(inp):
    e = np.exp(inp - inp.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dout, out):
    return out * (dout - np.sum(dout * out, axis=-1, keepdims=True))


def crossentropy_forward_backward(logits, targets, dscale):
    """-> loss sum over rows (float), dlogits(N,V) = (softmax(logits) - onehot) * dscale."""
    p = softmax_forward(logits)
    N = logits.shape[0]
    loss = -np.sum(np.log(p[np.arange(N), targets]))
    d = p.copy()
    d[np.arange(N), targets] -= 1
    return float(loss), d * dscale


def embedding_forward(tokens, WE, row_scale=None):
    """out(N,C) = WE[tokens] (times row_scale(V)[tokens]: embedding dropout)."""
    out = WE[tokens]
    return out if row_scale is None else out * row_scale[tokens][..., None]


def embedding_backward(dout, tokens, V, row_scale=None):
    """-> dWE(V,C) with the rows of dout (times row_scale[tokens]) added at their tokens."""
    dWE = np.zeros((V, dout.shape[1]), dtype=dout.dtype)
    if row_scale is not None:
        dout = dout * row_scale[tokens][..., None]
    np.add.at(dWE, tokens, dout)
    return dWE


# ============================================================================================
# Regularisers (training only, issue #11): masks hold 0 or 1/(1-p)
# ============================================================================================


def dropout_forward(inp, mask):
    """out(B,T,C) = inp(B,T,C) * mask(B,C): one mask per stream, shared by its T steps."""
    return inp * mask[:, None, :]


def dropout_backward(dout, mask):
    """-> dinp(B,T,C) = dout * mask(B,C)."""
    return dout * mask[:, None, :]


def _fmix32(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def dropconnect_mask(n, j0, seed, threshold, scale):
    """Elements [j0, j0+n) of the hashed DropConnect mask (ss_dropconnect_forward): scale where
    the top 24 bits of fmix32(fmix32((j+1) * 0x9E3779B9 ^ seed_lo) + seed_hi) >= threshold."""
    j = (np.arange(n, dtype=np.uint64) + np.uint64(j0 + 1)).astype(np.uint32)
    with np.errstate(over="ignore"):
        z = _fmix32(_fmix32(j * np.uint32(0x9E3779B9) ^ np.uint32(seed & 0xFFFFFFFF))
                    + np.uint32(seed >> 32))
    return np.where((z >> np.uint32(8)) >= threshold, np.float32(scale), np.float32(0.0))


def state_guard(h, limit):
    """(h with every stream b of (L,B,X,H) whose float64 norm exceeds limit or is not finite
    zeroed, how many): what training's guard does (params.guard_state, ss_state_guard)."""
    h = np.array(h)
    norms = np.sqrt(np.sum(np.square(h, dtype=np.float64), axis=(0, 2, 3)))
    bad = ~(norms <= limit)
    h[:, bad] = 0.0
    return h, int(bad.sum())


def softcap(c, cap):
    """The candidate's soft cap: cap * tanh(c / cap); cap == 0 leaves c as it is."""
    return c if not cap else (cap * np.tanh(c / cap)).astype(c.dtype)


# ============================================================================================
# MoE-GRU layer and whole model (see MODEL.md §1)
# ============================================================================================



def topk_select(g, K):
    """Indices (..., K) of the K largest entries of g (..., X), ties to the lower index, listed in
    ascending expert order (the order the C kernel uses)."""
    order = np.argsort(-g, axis=-1, kind="stable")[..., :K]
    return np.sort(order, axis=-1)


def topk_margin(g, K):
    """Smallest gap, over all rows, between the K-th and (K+1)-th largest g (inf when K == X):
    how far the selection is from a tie (finite differences need it clear of one)."""
    X = g.shape[-1]
    if K >= X:
        return np.inf
    s = -np.sort(-g, axis=-1)
    return float(np.min(s[..., K - 1] - s[..., K]))


def moegru_forward(inp, h0, w, K, eps, cap=0.0):
    """One MoE-GRU layer (MODEL.md §1) over a window, written step by step for clarity.
    cap > 0: the candidate is c = cap * tanh(GELU(u) / cap) (bounded recurrence).

    inp (B,T,I), h0 (B,X,H), w: dict of the layer's weights (Wp/bp present iff I != H).
    -> out (B,T,H), hT (B,X,H), cache (everything moegru_backward needs).
    Every expert's candidate is computed for clarity; only the K selected experts update.
    """
    Wg, bg, Wz, bz = w["Wg"], w["bg"], w["Wz"], w["bz"]
    Wcx, Wch, bc, gamma = w["Wcx"], w["Wch"], w["bc"], w["gamma"]
    Wp, bp = w.get("Wp"), w.get("bp")
    B, T, I = inp.shape
    X, H = bz.shape
    g = softmax_forward(inp @ Wg.T + bg)                          # (B,T,X) router
    sel = topk_select(g, K)                                       # (B,T,K)
    gsel = np.take_along_axis(g, sel, axis=-1)                    # (B,T,K)
    S = gsel.sum(axis=-1, keepdims=True)                          # (B,T,1)
    ghat = gsel / S                                               # (B,T,K) renormalised gates
    mask = np.zeros((B, T, X), dtype=bool)                        # (B,T,X) expert e runs
    np.put_along_axis(mask, sel, True, axis=-1)
    z = sigmoid_forward(np.einsum("bti,ehi->bteh", inp, Wz) + bz)  # (B,T,X,H)
    ax = np.einsum("bti,ehi->bteh", inp, Wcx) + bc                 # (B,T,X,H) input half
    hs = np.zeros((T + 1, B, X, H), dtype=inp.dtype)              # states before/after steps
    hs[0] = h0
    a = np.zeros((B, T, X, H), dtype=inp.dtype)
    c = np.zeros_like(a)
    m = np.zeros((B, T, H), dtype=inp.dtype)
    bidx = np.arange(B)[:, None]
    for t in range(T):
        h = hs[t]                                                 # (B,X,H)
        a[:, t] = ax[:, t] + np.einsum("ehj,bej->beh", Wch, h)
        c[:, t] = softcap(gelu_forward(a[:, t]), cap)
        hnew = (1 - z[:, t]) * h + z[:, t] * c[:, t]
        hs[t + 1] = np.where(mask[:, t, :, None], hnew, h)        # unselected experts keep h
        m[:, t] = np.sum(ghat[:, t, :, None] * hs[t + 1][bidx, sel[:, t]], axis=1)
    res = inp if Wp is None else inp @ Wp.T + bp                  # (B,T,H)
    r = m + res
    out, rstd = rmsnorm_forward(r.reshape(B * T, H), gamma, eps)
    cache = dict(inp=inp, w=w, K=K, cap=cap, g=g, sel=sel, S=S, ghat=ghat, mask=mask, z=z, a=a, c=c,
                 hs=hs, r=r.reshape(B * T, H), rstd=rstd)
    return out.reshape(B, T, H), hs[T].copy(), cache


def moegru_backward(dout, cache, dhT=None):
    """Exact backward of moegru_forward through the whole window.

    dout (B,T,H); dhT (B,X,H) or None (zero: truncated BPTT).
    -> dinp (B,T,I), grads {key: array} (Wp/bp only when present), dh0 (B,X,H).
    """
    inp, w = cache["inp"], cache["w"]
    Wz, Wcx, Wch, Wg, gamma = w["Wz"], w["Wcx"], w["Wch"], w["Wg"], w["gamma"]
    Wp = w.get("Wp")
    g, sel, S, ghat, mask = cache["g"], cache["sel"], cache["S"], cache["ghat"], cache["mask"]
    z, a, c, hs = cache["z"], cache["a"], cache["c"], cache["hs"]
    B, T, I = inp.shape
    X, H = w["bz"].shape
    grads = {}
    dr, grads["gamma"] = rmsnorm_backward(dout.reshape(B * T, H), cache["r"], gamma, cache["rstd"])
    dr = dr.reshape(B, T, H)
    if Wp is None:
        dinp = dr.copy()
    else:
        dinp = dr @ Wp
        grads["Wp"] = np.einsum("bth,bti->hi", dr, inp)
        grads["bp"] = dr.sum(axis=(0, 1))
    dh = np.zeros((B, X, H), dtype=inp.dtype) if dhT is None else dhT.copy()
    dzpre = np.zeros_like(z)                                      # (B,T,X,H)
    da = np.zeros_like(a)                                         # (B,T,X,H)
    dghat = np.zeros((B, T, sel.shape[-1]), dtype=inp.dtype)      # (B,T,K)
    grads["Wch"] = np.zeros_like(Wch)
    bidx = np.arange(B)[:, None]
    for t in reversed(range(T)):
        hp, hn = hs[t], hs[t + 1]                                 # (B,X,H)
        dghat[:, t] = np.einsum("bh,bkh->bk", dr[:, t], hn[bidx, sel[:, t]])
        gate = np.zeros((B, X), dtype=inp.dtype)                  # ghat scattered to experts
        np.put_along_axis(gate, sel[:, t], ghat[:, t], axis=-1)
        dhn = dh + gate[:, :, None] * dr[:, t, None, :]           # dL/d(state after step t)
        mk = mask[:, t, :, None]
        zt, ct = z[:, t], c[:, t]
        dz = np.where(mk, dhn * (ct - hp), 0)
        dzpre[:, t] = dz * zt * (1 - zt)
        dct = dhn * zt
        if cache["cap"]:
            dct = dct * (1 - (ct / cache["cap"]) ** 2)             # through cap*tanh(./cap)
        da[:, t] = np.where(mk, gelu_backward(dct, a[:, t]), 0)
        dhp = dhn * (1 - zt) + np.einsum("beh,ehj->bej", da[:, t], Wch)
        dh = np.where(mk, dhp, dh)                                # unselected: passes through
        grads["Wch"] += np.einsum("beh,bej->ehj", da[:, t], hp)
    grads["Wz"] = np.einsum("bteh,bti->ehi", dzpre, inp)
    grads["bz"] = dzpre.sum(axis=(0, 1))
    grads["Wcx"] = np.einsum("bteh,bti->ehi", da, inp)
    grads["bc"] = da.sum(axis=(0, 1))
    dinp = dinp + np.einsum("bteh,ehi->bti", dzpre, Wz) + np.einsum("bteh,ehi->bti", da, Wcx)
    # router: ghat = g[sel] / sum(g[sel]) (selection itself is discrete), then the softmax
    dgsel = (dghat - np.sum(ghat * dghat, axis=-1, keepdims=True)) / S
    dg = np.zeros_like(g)
    np.put_along_axis(dg, sel, dgsel, axis=-1)
    dlog = softmax_backward(dg, g)                                # (B,T,X)
    grads["Wg"] = np.einsum("btx,bti->xi", dlog, inp)
    grads["bg"] = dlog.sum(axis=(0, 1))
    dinp = dinp + dlog @ Wg
    return dinp, grads, dh


def model_forward(P, cfg, tokens, h0, masks=None):
    """Whole model: embedding -> L MoE-GRU layers -> head.

    P: named views (ParamLayout(cfg).views(flat)); tokens (B,T) int; h0 (L,B,X,H).
    masks (training regularisers) or None: {"embedding": (V) row scales, "inputs": [(B,I) per
    layer], "head": (B,H), "Wch": [(X,H,H) per layer]}, any of them None or absent.
    The head weight is P["Wo"], or P["WE"] when the embeddings are tied (no "Wo").
    -> logits (B,T,V), hT (L,B,X,H), cache.
    """
    masks = masks or {}
    cap = getattr(cfg, "cap", 0.0)
    inputs = masks.get("inputs") or [None] * cfg.L
    wch = masks.get("Wch") or [None] * cfg.L
    x = embedding_forward(tokens, P["WE"], masks.get("embedding"))   # (B,T,C)
    hT = np.zeros_like(h0)
    caches = []
    for l in range(cfg.L):
        if inputs[l] is not None:
            x = dropout_forward(x, inputs[l])
        w = layer_views(P, l)
        if wch[l] is not None:
            w = dict(w, Wch=w["Wch"] * wch[l])                     # DropConnect on Wch
        x, hT[l], cl = moegru_forward(x, h0[l], w, cfg.K, cfg.eps_rmsnorm, cap)
        caches.append(cl)
    if masks.get("head") is not None:
        x = dropout_forward(x, masks["head"])
    Wo = P["Wo"] if "Wo" in P else P["WE"]
    logits = x @ Wo.T + P["bo"]                                    # (B,T,V)
    return logits, hT, dict(tokens=tokens, top=x, layers=caches, masks=masks, inputs=inputs,
                            wch=wch)


def model_loss_and_grads(P, cfg, tokens, targets, h0, masks=None):
    """Mean cross-entropy over all B*T positions and its gradient for every named tensor.

    The loss does not depend on the final state, so no gradient enters it (truncated BPTT).
    -> loss (float), grads {name: array shaped like P[name]}, hT (L,B,X,H).
    """
    logits, hT, cache = model_forward(P, cfg, tokens, h0, masks)
    B, T, V = logits.shape
    N = B * T
    loss_sum, dlogits = crossentropy_forward_backward(
        logits.reshape(N, V), np.asarray(targets).reshape(N), 1.0 / N)
    grads = {}
    top = cache["top"].reshape(N, -1)
    tied = "Wo" not in P
    Wo = P["WE"] if tied else P["Wo"]
    dx, dWo, grads["bo"] = matmul_backward(dlogits, top, Wo)
    dx = dx.reshape(B, T, -1)
    if cache["masks"].get("head") is not None:
        dx = dropout_backward(dx, cache["masks"]["head"])
    for l in reversed(range(cfg.L)):
        dx, gl, _ = moegru_backward(dx, cache["layers"][l])
        if cache["wch"][l] is not None:
            gl["Wch"] = gl["Wch"] * cache["wch"][l]
        if cache["inputs"][l] is not None:
            dx = dropout_backward(dx, cache["inputs"][l])
        for k, v in gl.items():
            grads["l%d.%s" % (l, k)] = v
    grads["WE"] = embedding_backward(dx.reshape(N, -1), np.asarray(tokens).reshape(N),
                                     P["WE"].shape[0], cache["masks"].get("embedding"))
    if tied:
        grads["WE"] = grads["WE"] + dWo
    else:
        grads["Wo"] = dWo
    return loss_sum / N, grads, hT


# ============================================================================================
# Decoding at batch 1 (csrc/decode.c), int8 weights, sampling (csrc/sample.c)
# ============================================================================================

def capped_gelu(u, cap):
    """The candidate's activation: GELU(u), or with a soft cap cap > 0: cap * tanh(GELU(u) / cap)."""
    c = 0.5 * u * (1.0 + _erf(u / math.sqrt(2.0)))
    return c if not cap else cap * np.tanh(c / cap)


def head_weight(P):
    """The head's weight: Wo, or WE when the embeddings are tied (no Wo)."""
    return P["Wo"] if "Wo" in P else P["WE"]


def decode_step(P, cfg, token, h, cap=0.0, matvec=None):
    """One token through the whole model at batch 1 (MODEL.md §1), written from the spec alone.

    P: named views; h (L,X,H): the state before (not modified); cap: the candidate's soft cap.
    matvec(name, e, x) -> W @ x, W = P[name] (expert e's slice when e is not None; "Wo" is the
    head, tied or not), lets a caller swap in another product (the int8 one below); None
    computes in float64. -> logits (V), new state (L,X,H), both float64.
    """
    def mv_f64(name, e, x):
        W = head_weight(P) if name == "Wo" else P[name]
        return (W if e is None else W[e]).astype(np.float64) @ x
    mv = matvec or mv_f64
    h = np.array(h, dtype=np.float64)
    x = P["WE"][token].astype(np.float64)
    for l in range(cfg.L):
        pre = "l%d." % l
        W = {k: P[pre + k].astype(np.float64) for k in ("bg", "bz", "bc", "gamma")}
        a = mv(pre + "Wg", None, x) + W["bg"]
        g = np.exp(a - a.max())
        g /= g.sum()
        if cfg.K < cfg.X:
            order = sorted(range(cfg.X), key=lambda e: (-g[e], e))[:cfg.K]
            gate = np.zeros(cfg.X)
            gate[order] = g[order] / g[order].sum()
        else:
            gate = g
        m = np.zeros(cfg.H)
        for e in range(cfg.X):
            if gate[e] == 0 and cfg.K < cfg.X:
                continue
            z = 1 / (1 + np.exp(-(mv(pre + "Wz", e, x) + W["bz"][e])))
            u = (mv(pre + "Wcx", e, x) + mv(pre + "Wch", e, h[l, e])
                 + W["bc"][e])
            h[l, e] = (1 - z) * h[l, e] + z * capped_gelu(u, cap)
            m += gate[e] * h[l, e]
        if pre + "Wp" in P:
            r = m + mv(pre + "Wp", None, x) + P[pre + "bp"]
        else:
            r = m + x
        x = W["gamma"] * r / np.sqrt(np.mean(r * r) + cfg.eps_rmsnorm)
    return mv("Wo", None, x) + P["bo"], h


def panel_pack(W):
    """W (OC,C) in 16-row panels, flat: panel p holds W[16p + j][c] at [p][c][j], rows past OC 0."""
    OC, C = W.shape
    n = -(-OC // 16)
    Wp = np.zeros((n * 16, C), W.dtype)
    Wp[:OC] = W
    return np.ascontiguousarray(Wp.reshape(n, 16, C).transpose(0, 2, 1)).reshape(-1)


Q8_BLOCK = 32


def q8_width(C):
    return -(-C // Q8_BLOCK) * Q8_BLOCK


def quantize_rows(W):
    """Symmetric int8 per row of the last axis, in float32 exactly as the C does:
    scale = max|w| / 127, q = round-half-even(w * (127 / max)); a zero row: scale 0, q 0.
    -> q (int8, W's shape), scale (float32, W's shape without the last axis)."""
    W = np.asarray(W, np.float32)
    amax = np.max(np.abs(W), axis=-1) if W.shape[-1] else np.zeros(W.shape[:-1], np.float32)
    ok = (amax > 0) & np.isfinite(amax)
    safe = np.where(ok, amax, np.float32(1))
    inv = (np.float32(127) / safe).astype(np.float32)
    q = np.where(ok[..., None], np.rint(W * inv[..., None]), 0).astype(np.int8)
    scale = np.where(ok, safe / np.float32(127), np.float32(0)).astype(np.float32)
    return q, scale


def quantize_x(x):
    """x (C) per block of 32, zero-padded to q8_width(C): -> xq (int8), xscale (float32),
    xsum (int32: each block's sum of xq)."""
    x = np.asarray(x, np.float32)
    C = x.shape[0]
    xp = np.zeros(q8_width(C), np.float32)
    xp[:C] = x
    q, s = quantize_rows(xp.reshape(-1, Q8_BLOCK))
    return q.reshape(-1), s, q.astype(np.int32).sum(axis=1).astype(np.int32)


def matvec_q8(q, scale, x, b=None):
    """int8 rows q (OC,C) with scales (OC) times x (C) quantised by quantize_x: the exact integer
    block sums, scaled (float64). -> y (OC)."""
    OC, C = q.shape
    xq, xs, _ = quantize_x(x)
    qp = np.zeros((OC, q8_width(C)), np.int64)
    qp[:, :C] = q
    blocks = (qp.reshape(OC, -1, Q8_BLOCK) * xq.astype(np.int64).reshape(1, -1, Q8_BLOCK)).sum(axis=2)
    y = scale.astype(np.float64) * (blocks.astype(np.float64) @ xs.astype(np.float64))
    return y if b is None else y + b


def q8_model(P, cfg):
    """{name: (q, scale)} for every matrix the decode step reads ("Wo": the head, tied or not)."""
    names = ["l%d.%s" % (l, k) for l in range(cfg.L) for k in ("Wg", "Wz", "Wcx", "Wch", "Wp")]
    out = {n: quantize_rows(P[n]) for n in names if n in P}
    out["Wo"] = quantize_rows(head_weight(P))
    return out


def decode_step_q8(P, cfg, token, h, cap=0.0, q8=None):
    """decode_step with every matrix product int8 (q8: q8_model(P, cfg), computed when None)."""
    q8 = q8_model(P, cfg) if q8 is None else q8

    def mv(name, e, x):
        q, s = q8[name]
        if e is not None:
            q, s = q[e], s[e]
        return matvec_q8(q, s, x.astype(np.float32))
    return decode_step(P, cfg, token, h, cap, matvec=mv)


def splitmix64(state):
    """One step of the generator: -> (new state, 64-bit output) (Python ints)."""
    M = 0xFFFFFFFFFFFFFFFF
    state = (state + 0x9E3779B97F4A7C15) & M
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return state, z ^ (z >> 31)


def rng_uniform(state):
    """-> (new state, a float in [0, 1) from the top 53 bits), as ss_rng_uniform."""
    state, z = splitmix64(state)
    return state, (z >> 11) * (1.0 / 9007199254740992.0)


def sample_distribution(logits, temperature, top_k, top_p, allowed=None):
    """The distribution ss_sample draws from (float64, shape (V)); greedy settings give a one-hot
    at the first allowed argmax."""
    x = np.asarray(logits, np.float64)
    V = len(x)
    ids = [i for i in range(V) if allowed is None or allowed[i]]
    ids.sort(key=lambda i: (-x[i], i))
    out = np.zeros(V)
    if temperature <= 0 or top_k == 1 or len(ids) == 1:
        out[ids[0]] = 1.0
        return out
    if 0 < top_k < len(ids):
        ids = ids[:top_k]
    w = np.exp((x[ids] - x[ids].max()) / temperature)
    w /= w.sum()
    if top_p < 1:
        cum = np.cumsum(w)
        n = int(np.searchsorted(cum, top_p - 1e-12)) + 1
        ids, w = ids[:n], w[:n] / w[:n].sum()
    out[ids] = w
    return out
