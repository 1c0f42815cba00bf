"""ref.py: numpy reference of every C kernel, forward and backward: the test oracle.

Written for clarity, not speed; every function works in float32 and float64 (the dtype of its
inputs), so the backward passes can be checked against finite differences in float64.
Backward functions RETURN gradients (they do not accumulate), unlike the C kernels.
"""
import math

import numpy as np

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


def embedding_forward(tokens, WE):
    """out(N,C) = WE[tokens]."""
    return WE[tokens]


def embedding_backward(dout, tokens, V):
    """-> dWE(V,C) with the rows of dout added at their tokens."""
    dWE = np.zeros((V, dout.shape[1]), dtype=dout.dtype)
    np.add.at(dWE, tokens, dout)
    return dWE


# ============================================================================================
# MoE-GRU layer and whole model (see MODEL.md §1)
# ============================================================================================
