"""Kernel tests: every C kernel against shoestring.ref on awkward sizes, once per instruction set.

- Each kernel test runs for every ISA usable here (kernels.isa_available()); the test id names
  it. With SHOESTRING_ISA set, only that ISA runs (and it must be usable: CI relies on that).
- ref.py's backward functions are checked against central finite differences in float64.
- AdamW is checked against the textbook update over several steps.
- Every SIMD ISA is compared with the scalar twin on the model's shapes.
"""
import math
import os

import numpy as np
import pytest

from shoestring import kernels, ref

from conftest import isas_to_test  # noqa: E402  (tests/ is on sys.path under pytest)

FORCED = os.environ.get("SHOESTRING_ISA", "").strip().lower()
ISAS = isas_to_test()
SIMD_ISAS = [i for i in ISAS if i != "scalar"]
SIZES = [1, 3, 7, 9, 15, 16, 17, 33]

# (N, C, OC): every awkward size in each position, plus the model's real shapes
MATMUL_SHAPES = sorted(
    {(s, 17, 33) for s in SIZES} | {(9, s, 15) for s in SIZES} | {(17, 33, s) for s in SIZES}
    | {(s, s, s) for s in SIZES}
    | {(1280, 96, 1152), (16, 96, 96), (1280, 96, 850), (1, 96, 850), (1, 96, 96),
       (3, 300, 50), (40, 257, 70)})


# the `isa` fixture (every usable ISA, or SHOESTRING_ISA alone) comes from conftest.py


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def close(got, want, rtol=1e-5, atol=1e-5, what=""):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# ============================================================================================
# kernels vs ref (float32 kernels vs float64 evaluation of the reference)
# ============================================================================================

def test_isa_selection_is_consistent():
    assert kernels.isa_active() in kernels.isa_available()
    assert "scalar" in kernels.isa_available()
    if FORCED:
        assert kernels.isa_active() == FORCED


@pytest.mark.parametrize("N,C,OC", MATMUL_SHAPES, ids=lambda v: str(v))
def test_matmul_forward(isa, N, C, OC):
    rng = np.random.default_rng(N * 10007 + C * 101 + OC)
    inp, W, b = rand(rng, N, C), rand(rng, OC, C, scale=0.3), rand(rng, OC)
    tol = 2e-6 * math.sqrt(C) * 4
    out = np.full((N, OC), np.nan, np.float32)
    kernels.matmul_forward(out, inp, W, b)
    close(out, ref.matmul_forward(f64(inp), f64(W), f64(b)), rtol=1e-5, atol=tol)
    out_nb = np.full((N, OC), np.nan, np.float32)
    kernels.matmul_forward(out_nb, inp, W)  # no bias
    close(out_nb, ref.matmul_forward(f64(inp), f64(W)), rtol=1e-5, atol=tol)


@pytest.mark.parametrize("N,C,OC", MATMUL_SHAPES, ids=lambda v: str(v))
def test_matmul_backward_accumulates(isa, N, C, OC):
    rng = np.random.default_rng(N * 7 + C * 13 + OC)
    inp, W, dout = rand(rng, N, C), rand(rng, OC, C, scale=0.3), rand(rng, N, OC)
    dinp0, dW0, db0 = rand(rng, N, C), rand(rng, OC, C), rand(rng, OC)
    dinp, dW, db = dinp0.copy(), dW0.copy(), db0.copy()
    kernels.matmul_backward(dinp, dW, db, dout, inp, W)
    r_dinp, r_dW, r_db = ref.matmul_backward(f64(dout), f64(inp), f64(W))
    close(dinp, dinp0 + r_dinp, rtol=1e-5, atol=1e-5 * math.sqrt(OC) * 4, what="dinp")
    close(dW, dW0 + r_dW, rtol=1e-5, atol=1e-5 * math.sqrt(N) * 4, what="dW")
    close(db, db0 + r_db, rtol=1e-5, atol=1e-5 * math.sqrt(N) * 4, what="db")


@pytest.mark.parametrize("N,C,OC", [(0, 5, 3), (4, 0, 3), (5, 4, 0), (0, 0, 0), (9, 0, 17)],
                         ids=lambda v: str(v))
def test_matmul_empty_dimensions(isa, N, C, OC):
    """Zero-sized operands are legal: out = b when C is 0, gradients unchanged or zero-added."""
    rng = np.random.default_rng(1)
    inp, W, b, dout = rand(rng, N, C), rand(rng, OC, C), rand(rng, OC), rand(rng, N, OC)
    out = np.full((N, OC), np.nan, np.float32)
    kernels.matmul_forward(out, inp, W, b)
    close(out, ref.matmul_forward(f64(inp), f64(W), f64(b)))
    dinp, dW, db = np.ones((N, C), np.float32), np.ones((OC, C), np.float32), np.ones(OC, np.float32)
    kernels.matmul_backward(dinp, dW, db, dout, inp, W)
    r = ref.matmul_backward(f64(dout), f64(inp), f64(W))
    close(dinp, 1 + r[0])
    close(dW, 1 + r[1])
    close(db, 1 + r[2])


@pytest.mark.parametrize("which", ["dinp", "dW", "db"])
def test_matmul_backward_none_skips(isa, which):
    """A None gradient is skipped; the others are still computed."""
    rng = np.random.default_rng(5)
    N, C, OC = 17, 33, 15
    inp, W, dout = rand(rng, N, C), rand(rng, OC, C), rand(rng, N, OC)
    grads = {"dinp": np.zeros((N, C), np.float32), "dW": np.zeros((OC, C), np.float32),
             "db": np.zeros(OC, np.float32)}
    grads[which] = None
    kernels.matmul_backward(grads["dinp"], grads["dW"], grads["db"], dout, inp, W)
    want = dict(zip(("dinp", "dW", "db"), ref.matmul_backward(f64(dout), f64(inp), f64(W))))
    for name, g in grads.items():
        if g is not None:
            close(g, want[name], atol=1e-4, what=name)


@pytest.mark.parametrize("N,H", [(n, h) for n in (1, 3, 17) for h in SIZES + [96]])
def test_rmsnorm(isa, N, H):
    rng = np.random.default_rng(N * 31 + H)
    inp, gain, dout = rand(rng, N, H, scale=2.0), rand(rng, H) + 1, rand(rng, N, H)
    out, rstd = np.empty((N, H), np.float32), np.empty(N, np.float32)
    kernels.rmsnorm_forward(out, rstd, inp, gain, 1e-5)
    r_out, r_rstd = ref.rmsnorm_forward(f64(inp), f64(gain), 1e-5)
    close(out, r_out, rtol=1e-5, atol=1e-5)
    close(rstd, r_rstd, rtol=1e-5)
    dinp0, dgain0 = rand(rng, N, H), rand(rng, H)
    dinp, dgain = dinp0.copy(), dgain0.copy()
    kernels.rmsnorm_backward(dinp, dgain, dout, inp, gain, rstd)
    r_dinp, r_dgain = ref.rmsnorm_backward(f64(dout), f64(inp), f64(gain), f64(rstd))
    close(dinp, dinp0 + r_dinp, rtol=1e-4, atol=1e-4)
    close(dgain, dgain0 + r_dgain, rtol=1e-4, atol=1e-4)
    only = dinp0.copy()
    kernels.rmsnorm_backward(only, None, dout, inp, gain, rstd)
    close(only, dinp, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", SIZES + [1000, 4099])
def test_sumsq(isa, n):
    rng = np.random.default_rng(n)
    x = rand(rng, n, scale=3.0)
    s = kernels.sumsq(x)
    assert s == pytest.approx(ref.sumsq(x), rel=1e-12)
    assert kernels.sumsq(x) == s  # deterministic


def test_sumsq_float64_accumulation(isa):
    """Many small terms after a large one: float32 accumulation would lose them all."""
    x = np.full(1 << 16, 1e-4, np.float32)
    x[0] = 100.0
    want = 1e4 + (len(x) - 1) * float(np.float32(1e-4)) ** 2  # float32 sums would give 1e4
    assert kernels.sumsq(x) == pytest.approx(want, rel=1e-10)


def elementwise_inputs(rng, n):
    x = rand(rng, n, scale=3.0)
    extremes = np.array([0.0, -0.0, 1e-8, -1e-8, 5.5, -5.5, 9.0, -9.0, 30.0, -30.0, 100.0,
                         -100.0, 1e4, -1e4], np.float32)
    x[: min(n, len(extremes))] = extremes[: min(n, len(extremes))]
    return x


@pytest.mark.parametrize("n", SIZES + [1000])
def test_sigmoid(isa, n):
    rng = np.random.default_rng(n + 1)
    x, dout = elementwise_inputs(rng, n), rand(rng, n)
    out = np.empty_like(x)
    kernels.sigmoid_forward(out, x)
    with np.errstate(over="ignore"):  # exp(1e4) -> inf in the reference, sigmoid -> 0: correct
        close(out, ref.sigmoid_forward(f64(x)), rtol=2e-6, atol=1e-7)
    d0 = rand(rng, n)
    d = d0.copy()
    kernels.sigmoid_backward(d, dout, out)
    close(d, d0 + ref.sigmoid_backward(f64(dout), f64(out)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", SIZES + [1000])
def test_gelu(isa, n):
    rng = np.random.default_rng(n + 2)
    x, dout = elementwise_inputs(rng, n), rand(rng, n)
    out = np.empty_like(x)
    kernels.gelu_forward(out, x)
    close(out, ref.gelu_forward(f64(x)), rtol=2e-6, atol=1e-6)
    d0 = rand(rng, n)
    d = d0.copy()
    kernels.gelu_backward(d, dout, x)
    close(d, d0 + ref.gelu_backward(f64(dout), f64(x)), rtol=1e-5, atol=2e-6)


def test_elementwise_2d_shapes(isa):
    """The elementwise kernels take any C-contiguous shape (flattened)."""
    rng = np.random.default_rng(3)
    x = rand(rng, 7, 9)
    out = np.empty_like(x)
    kernels.gelu_forward(out, x)
    close(out, ref.gelu_forward(f64(x)), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("N,X", [(n, x) for n in (1, 3, 17) for x in SIZES + [6, 850]])
def test_softmax(isa, N, X):
    rng = np.random.default_rng(N * 100 + X)
    x, dout = rand(rng, N, X, scale=4.0), rand(rng, N, X)
    x[0, 0] += 80.0  # large logits must not overflow
    out = np.empty_like(x)
    kernels.softmax_forward(out, x)
    r = ref.softmax_forward(f64(x))
    close(out, r, rtol=1e-5, atol=1e-7)
    close(out.sum(axis=1), np.ones(N), rtol=1e-5)
    d0 = rand(rng, N, X)
    d = d0.copy()
    kernels.softmax_backward(d, dout, out)
    close(d, d0 + ref.softmax_backward(f64(dout), f64(out)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("N,V", [(n, v) for n in (1, 3, 17) for v in SIZES + [850]])
def test_crossentropy(isa, N, V):
    rng = np.random.default_rng(N * 1000 + V)
    logits = rand(rng, N, V, scale=3.0)
    logits[-1] += 50.0  # a row of large logits: the max-shift must keep it finite
    targets = rng.integers(0, V, N).astype(np.int32)
    dscale = 1.0 / (N * 2)
    losses = np.empty(N, np.float32)
    dlogits = np.full((N, V), np.nan, np.float32)
    kernels.crossentropy_forward(losses, dlogits, logits, targets, dscale)
    r_loss, r_d = ref.crossentropy_forward_backward(f64(logits), targets, dscale)
    p = ref.softmax_forward(f64(logits))
    close(losses, -np.log(p[np.arange(N), targets]), rtol=1e-5, atol=1e-5)
    assert float(losses.astype(np.float64).sum()) == pytest.approx(r_loss, rel=1e-5, abs=1e-5)
    close(dlogits, r_d, rtol=1e-5, atol=1e-7)
    losses2 = np.empty(N, np.float32)
    kernels.crossentropy_forward(losses2, None, logits, targets)  # loss only
    close(losses2, losses, rtol=1e-6, atol=1e-6)


def test_nan_propagates(isa):
    """A NaN input must come out as NaN (never be clamped into a finite loss or activation)."""
    x = np.linspace(-3, 3, 37).astype(np.float32)
    x[5] = np.nan
    for fwd in (kernels.sigmoid_forward, kernels.gelu_forward):
        out = np.empty_like(x)
        fwd(out, x)
        assert np.isnan(out[5]) and np.isfinite(np.delete(out, 5)).all(), fwd.__name__
    for pos in (0, 17, 36):  # first vector, middle, tail
        logits = np.tile(x, (2, 1))
        logits[:, 5] = 0.0
        logits[0, pos] = np.nan
        sm = np.empty_like(logits)
        kernels.softmax_forward(sm, logits)
        assert np.isnan(sm[0]).all() and np.isfinite(sm[1]).all()
        losses, d = np.empty(2, np.float32), np.empty_like(logits)
        kernels.crossentropy_forward(losses, d, logits, np.array([1, 2], np.int32))
        assert np.isnan(losses[0]) and np.isfinite(losses[1])


@pytest.mark.parametrize("n,n_decay", [(1, 0), (1, 1), (17, 9), (33, 33), (1000, 517), (4099, 0)])
def test_adamw_kernel_vs_ref(isa, n, n_decay):
    rng = np.random.default_rng(n + n_decay)
    p, m, v = rand(rng, n), rand(rng, n, scale=0.1), np.abs(rand(rng, n, scale=0.1))
    g = rand(rng, n)
    args = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, grad_scale=0.5,
                bias_correction1=1 - 0.9 ** 3, bias_correction2=1 - 0.999 ** 3)
    rp, rm, rv = ref.adamw_step(f64(p), f64(g), f64(m), f64(v), n_decay, **args)
    kernels.adamw_step(p, g, m, v, n_decay, **args)
    # (1 - beta2) rounded to float32 is 0.00100004673 (4.7e-5 relative off): v carries it
    close(m, rm, rtol=1e-5, atol=1e-7)
    close(v, rv, rtol=1e-4, atol=1e-8)
    close(p, rp, rtol=1e-5, atol=1e-6)


def textbook_adamw(params, grad_fn, steps, lr, b1, b2, eps, wd, n_decay, clip):
    """Loshchilov & Hutter's AdamW in plain Python floats, with global-norm clipping."""
    p = [float(x) for x in params]
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t in range(1, steps + 1):
        g = grad_fn(t)
        norm = math.sqrt(sum(x * x for x in g))
        scale = min(1.0, clip / (norm + 1e-6))
        for i in range(len(p)):
            gi = g[i] * scale
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mhat = m[i] / (1 - b1 ** t)
            vhat = v[i] / (1 - b2 ** t)
            p[i] -= lr * (mhat / (math.sqrt(vhat) + eps) + (wd * p[i] if i < n_decay else 0.0))
    return p


def test_adamw_several_steps_vs_textbook(isa):
    n, n_decay, steps = 37, 20, 6
    lr, b1, b2, eps, wd, clip = 3e-2, 0.9, 0.999, 1e-8, 0.2, 1.0
    rng = np.random.default_rng(11)
    p0 = rand(rng, n)
    grads = [rand(rng, n, scale=2.0) for _ in range(steps)]  # norm ~12 > clip: clip is active
    want = textbook_adamw(p0, lambda t: [float(x) for x in grads[t - 1]], steps, lr, b1, b2, eps,
                          wd, n_decay, clip)
    p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t in range(1, steps + 1):
        g = grads[t - 1]
        scale = min(1.0, clip / (math.sqrt(kernels.sumsq(g)) + 1e-6))
        kernels.adamw_step(p, g, m, v, n_decay, lr, b1, b2, eps, wd, scale, 1 - b1 ** t, 1 - b2 ** t)
    close(p, want, rtol=1e-5, atol=1e-5)
    # the decayed prefix moved differently from the rest: decay really is prefix-only
    p_nodecay = p0.copy()
    m2, v2 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t in range(1, steps + 1):
        g = grads[t - 1]
        scale = min(1.0, clip / (math.sqrt(kernels.sumsq(g)) + 1e-6))
        kernels.adamw_step(p_nodecay, g, m2, v2, 0, lr, b1, b2, eps, wd, scale, 1 - b1 ** t,
                           1 - b2 ** t)
    assert np.all(p_nodecay[n_decay:] == p[n_decay:])
    assert np.all(p_nodecay[:n_decay] != p[:n_decay])


def test_ref_adamw_vs_textbook():
    n, n_decay, steps = 9, 4, 5
    rng = np.random.default_rng(12)
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(steps)]
    want = textbook_adamw(p0, lambda t: list(grads[t - 1]), steps, 1e-2, 0.9, 0.99, 1e-8, 0.1,
                          n_decay, 0.5)
    p, m, v = p0.copy(), np.zeros(n), np.zeros(n)
    for t in range(1, steps + 1):
        g = grads[t - 1]
        scale = min(1.0, 0.5 / (math.sqrt(ref.sumsq(g)) + 1e-6))
        p, m, v = ref.adamw_step(p, g, m, v, n_decay, 1e-2, 0.9, 0.99, 1e-8, 0.1, scale,
                                 1 - 0.9 ** t, 1 - 0.99 ** t)
    close(p, want, rtol=1e-12, atol=1e-12)


# ============================================================================================
# every SIMD ISA against the scalar twin, on the model's shapes
# ============================================================================================

def run_all_kernels(rng_seed):
    """Every kernel once on the model's shapes; returns a dict of output arrays."""
    rng = np.random.default_rng(rng_seed)
    res = {}
    for N, C, OC in [(1280, 96, 1152), (16, 96, 96), (1, 96, 850), (7, 33, 17)]:
        inp, W, b, dout = rand(rng, N, C), rand(rng, OC, C, scale=0.2), rand(rng, OC), rand(rng, N, OC)
        out = np.empty((N, OC), np.float32)
        kernels.matmul_forward(out, inp, W, b)
        dinp, dW, db = np.zeros((N, C), np.float32), np.zeros((OC, C), np.float32), np.zeros(OC, np.float32)
        kernels.matmul_backward(dinp, dW, db, dout, inp, W)
        res.update({"mm%s" % ((N, C, OC),): out, "dinp%s" % ((N, C, OC),): dinp,
                    "dW%s" % ((N, C, OC),): dW, "db%s" % ((N, C, OC),): db})
    x, gain, dy = rand(rng, 1280, 96), rand(rng, 96) + 1, rand(rng, 1280, 96)
    y, rstd = np.empty_like(x), np.empty(1280, np.float32)
    kernels.rmsnorm_forward(y, rstd, x, gain, 1e-5)
    dx, dg = np.zeros_like(x), np.zeros_like(gain)
    kernels.rmsnorm_backward(dx, dg, dy, x, gain, rstd)
    res.update(rms=y, rstd=rstd, rms_dx=dx, rms_dg=dg)
    for name, fwd, bwd, use_out in (("sig", kernels.sigmoid_forward, kernels.sigmoid_backward, True),
                                    ("gelu", kernels.gelu_forward, kernels.gelu_backward, False)):
        z = rand(rng, 1280, 96, scale=3.0)
        o = np.empty_like(z)
        fwd(o, z)
        d = np.zeros_like(z)
        bwd(d, dy, o if use_out else z)
        res[name], res[name + "_d"] = o, d
    g = rand(rng, 1280, 6, scale=2.0)
    sm = np.empty_like(g)
    kernels.softmax_forward(sm, g)
    dsm = np.zeros_like(g)
    kernels.softmax_backward(dsm, rand(rng, 1280, 6), sm)
    res.update(softmax=sm, softmax_d=dsm)
    logits = rand(rng, 1280, 850, scale=2.0)
    targets = rng.integers(0, 850, 1280).astype(np.int32)
    losses, dl = np.empty(1280, np.float32), np.empty_like(logits)
    kernels.crossentropy_forward(losses, dl, logits, targets, 1 / 1280)
    res.update(ce=losses, ce_d=dl)
    p, gr = rand(rng, 5001), rand(rng, 5001)
    m, v = np.zeros_like(p), np.zeros_like(p)
    kernels.adamw_step(p, gr, m, v, 3000, 1e-3, 0.9, 0.999, 1e-8, 0.01, 0.7, 0.1, 0.001)
    res.update(adam_p=p, adam_m=m, adam_v=v, sumsq=np.array([kernels.sumsq(gr)]))
    return res


@pytest.mark.skipif(not SIMD_ISAS, reason="no SIMD instruction set usable here")
@pytest.mark.parametrize("simd", SIMD_ISAS)
def test_simd_matches_scalar(simd):
    prev = kernels.isa_active()
    try:
        kernels.set_isa("scalar")
        want = run_all_kernels(42)
        kernels.set_isa(simd)
        got = run_all_kernels(42)
    finally:
        kernels.set_isa(prev)
    for key in want:
        close(got[key], want[key], rtol=2e-5, atol=5e-5, what="%s: %s vs scalar" % (simd, key))


# ============================================================================================
# ref.py backward passes vs central finite differences (float64)
# ============================================================================================

def numgrad(f, x, eps=1e-6):
    """Central differences of the scalar function f at x (x is perturbed in place, restored)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def fd_close(analytic, numeric, what):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=what)


def test_fd_matmul():
    rng = np.random.default_rng(0)
    inp, W, b = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    dout = rng.standard_normal((3, 4))

    def f():
        return float(np.sum(ref.matmul_forward(inp, W, b) * dout))

    dinp, dW, db = ref.matmul_backward(dout, inp, W)
    fd_close(dinp, numgrad(f, inp), "dinp")
    fd_close(dW, numgrad(f, W), "dW")
    fd_close(db, numgrad(f, b), "db")


def test_fd_rmsnorm():
    rng = np.random.default_rng(1)
    inp, gain, dout = rng.standard_normal((3, 7)), rng.standard_normal(7), rng.standard_normal((3, 7))

    def f():
        return float(np.sum(ref.rmsnorm_forward(inp, gain, 1e-5)[0] * dout))

    _, rstd = ref.rmsnorm_forward(inp, gain, 1e-5)
    dinp, dgain = ref.rmsnorm_backward(dout, inp, gain, rstd)
    fd_close(dinp, numgrad(f, inp), "dinp")
    fd_close(dgain, numgrad(f, gain), "dgain")


def test_fd_sigmoid_gelu():
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal(9) * 3, rng.standard_normal(9)
    for name, fwd, bwd in (
            ("sigmoid", ref.sigmoid_forward, lambda d, x: ref.sigmoid_backward(d, ref.sigmoid_forward(x))),
            ("gelu", ref.gelu_forward, ref.gelu_backward)):
        fd_close(bwd(dout, x), numgrad(lambda: float(np.sum(fwd(x) * dout)), x), name)


def test_fd_softmax():
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    got = ref.softmax_backward(dout, ref.softmax_forward(x))
    fd_close(got, numgrad(lambda: float(np.sum(ref.softmax_forward(x) * dout)), x), "softmax")


def test_fd_crossentropy():
    rng = np.random.default_rng(4)
    logits, targets = rng.standard_normal((4, 7)), np.array([0, 6, 3, 3])
    dscale = 0.25
    _, d = ref.crossentropy_forward_backward(logits, targets, dscale)
    num = numgrad(lambda: ref.crossentropy_forward_backward(logits, targets, dscale)[0] * dscale,
                  logits)
    fd_close(d, num, "crossentropy")
