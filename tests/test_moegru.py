"""The C MoE-GRU layer (csrc/moegru.c) against the numpy reference, for every instruction set.

The oracle is shoestring.ref in float64 on the same float32 data; errors are measured relative to
the largest reference magnitude of each tensor. Data is drawn so that the top-K selection is
clear of a tie (a flip under float32 rounding would be a different, equally valid, function).
Also: batch-slice (sharding) equivalence, bitwise determinism with dirty buffers, accumulation
(+=) semantics, the bound fast path, and argument validation.
"""
import functools

import numpy as np
import pytest

from shoestring import kernels, ref
from shoestring.errors import KernelArgumentError, ShoestringError

EPS = 1e-5
TOL = 1e-4            # max |C - ref| / max |ref|, per tensor
MARGIN = 1e-4         # smallest gap between the K-th and (K+1)-th router probability

# the `isa` fixture (every usable ISA, or SHOESTRING_ISA alone) comes from conftest.py


# ---- data ---------------------------------------------------------------------------------------
def make_weights(rng, I, H, X):
    """float32 weights at training-like scales (fan-in scaled), biases and gains off 0 and 1."""
    f = np.float32
    w = {"Wg": rng.standard_normal((X, I)) * 2 / np.sqrt(I), "bg": rng.standard_normal(X) * 0.3,
         "Wz": rng.standard_normal((X, H, I)) / np.sqrt(I), "bz": rng.standard_normal((X, H)) * 0.3,
         "Wcx": rng.standard_normal((X, H, I)) / np.sqrt(I),
         "Wch": rng.standard_normal((X, H, H)) / np.sqrt(H), "bc": rng.standard_normal((X, H)) * 0.3,
         "gamma": 1 + 0.3 * rng.standard_normal(H)}
    if I != H:
        w["Wp"] = rng.standard_normal((H, I)) / np.sqrt(I)
        w["bp"] = rng.standard_normal(H) * 0.3
    return {k: v.astype(f) for k, v in w.items()}


@functools.lru_cache(maxsize=None)
def case(B, T, I, H, X, K, seed=0, cap=0.0, bc_shift=0.0):
    """(w, inp, h0, dout, dhT) in float32 and the float64 reference results (computed once).
    cap: the candidate's soft cap; bc_shift moves the candidate biases (towards the cap)."""
    for s in range(seed, seed + 100):
        rng = np.random.default_rng(s)
        w = make_weights(rng, I, H, X)
        w["bc"] = (w["bc"] + bc_shift).astype(np.float32)
        inp = rng.standard_normal((B, T, I)).astype(np.float32)
        h0 = (rng.standard_normal((B, X, H)) * 0.5).astype(np.float32)
        dout = rng.standard_normal((B, T, H)).astype(np.float32)
        dhT = rng.standard_normal((B, X, H)).astype(np.float32)
        w64 = {k: v.astype(np.float64) for k, v in w.items()}
        out, hT, cache = ref.moegru_forward(inp.astype(np.float64), h0.astype(np.float64), w64,
                                            K, EPS, cap)
        if ref.topk_margin(cache["g"], K) < MARGIN:
            continue
        dinp, grads, dh0 = ref.moegru_backward(dout.astype(np.float64), cache,
                                               dhT.astype(np.float64))
        return (w, inp, h0, dout, dhT), dict(out=out, hT=hT, dinp=dinp, dh0=dh0, grads=grads)
    raise AssertionError("no seed gave a top-K selection clear of ties")


def buffers(B, T, I, H, X, K, fill=0.0):
    n_acts, n_ws = kernels.moegru_sizes(B, T, I, H, X, K)
    return np.full(n_acts, fill, np.float32), np.full(n_ws, fill, np.float32)


def run_c(w, inp, h0, dout, dhT, K, fill=0.0, grads0=None, dinp0=None):
    """Forward then backward through the plain wrappers; returns every result."""
    B, T, I = inp.shape
    X, H = w["bz"].shape
    acts, ws = buffers(B, T, I, H, X, K, fill)
    out = np.full((B, T, H), fill, np.float32)
    h = h0.copy()
    kernels.moegru_forward(out, acts, h, ws, inp, w, K, EPS)
    grads = {k: np.zeros_like(v) for k, v in w.items()} if grads0 is None else \
        {k: v.copy() for k, v in grads0.items()}
    dinp = np.zeros_like(inp) if dinp0 is None else dinp0.copy()
    dh = None if dhT is None else dhT.copy()
    kernels.moegru_backward(dinp, dh, grads, ws, dout, acts, inp, w, K, EPS)
    return dict(out=out, hT=h, dinp=dinp, dh0=dh, grads=grads)


def rel_err(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


def assert_matches(got, want, tol=TOL):
    for k in ("out", "hT", "dinp", "dh0"):
        assert got[k].dtype == np.float32
        assert rel_err(got[k], want[k]) < tol, "%s: relative error %.3g" % (k, rel_err(got[k], want[k]))
    assert set(got["grads"]) == set(want["grads"])
    for k, v in want["grads"].items():
        e = rel_err(got["grads"][k], v)
        assert e < tol, "grad %s: relative error %.3g" % (k, e)


# ---- C vs reference -----------------------------------------------------------------------------
def _small_cases():
    """Every X in 1..6 with every K in 1..X, cycling through awkward B, T and I (I=9 needs the
    projection, I=17=H is the identity residual)."""
    shapes = [(1, 7, 9), (3, 1, 17), (3, 7, 9), (1, 1, 17), (3, 7, 17)]
    cases, i = [], 0
    for X in range(1, 7):
        for K in range(1, X + 1):
            B, T, I = shapes[i % len(shapes)]
            cases.append((B, T, I, 17, X, K))
            i += 1
    return cases


SMALL = _small_cases() + [(3, 7, 33, 17, 4, 2)]      # I > H


@pytest.mark.parametrize("B,T,I,H,X,K", SMALL, ids=["B%dT%dI%dH%dX%dK%d" % c for c in SMALL])
def test_matches_reference_awkward_sizes(isa, B, T, I, H, X, K):
    (w, inp, h0, dout, dhT), want = case(B, T, I, H, X, K)
    assert_matches(run_c(w, inp, h0, dout, dhT, K), want)


DEFAULT = [(16, 80, 96, 96, 6, 6), (16, 80, 96, 96, 6, 2)]


@pytest.mark.parametrize("B,T,I,H,X,K", DEFAULT, ids=["default-K6", "default-K2"])
def test_matches_reference_default_shape(isa, B, T, I, H, X, K):
    (w, inp, h0, dout, dhT), want = case(B, T, I, H, X, K)
    assert_matches(run_c(w, inp, h0, dout, dhT, K), want)


def test_projection_at_default_width(isa):
    """Layer 0 with C != H: the residual projection on a larger shape."""
    (w, inp, h0, dout, dhT), want = case(4, 33, 64, 96, 6, 3)
    assert_matches(run_c(w, inp, h0, dout, dhT, 3), want)


def test_experts_selected_by_every_row_mixed_with_partial_ones(isa):
    """Experts 0 and 2 are selected by every row (their router bias dominates), experts 1 and 3
    only by some: exercises the shared gather/scatter of full experts between partial ones."""
    B, T, I, H, X, K = 3, 7, 9, 17, 4, 3
    for s in range(100):
        rng = np.random.default_rng(s)
        w = make_weights(rng, I, H, X)
        w["bg"] = np.array([8.0, 0.0, 8.0, 0.0], np.float32)
        inp = rng.standard_normal((B, T, I)).astype(np.float32)
        h0 = (rng.standard_normal((B, X, H)) * 0.5).astype(np.float32)
        dout = rng.standard_normal((B, T, H)).astype(np.float32)
        dhT = rng.standard_normal((B, X, H)).astype(np.float32)
        w64 = {k: v.astype(np.float64) for k, v in w.items()}
        out, hT, cache = ref.moegru_forward(inp.astype(np.float64), h0.astype(np.float64), w64,
                                            K, EPS)
        if ref.topk_margin(cache["g"], K) > 1e-6:
            break
    sel = cache["mask"].reshape(-1, X).sum(axis=0)
    assert sel[0] == sel[2] == B * T and 0 < sel[1] < B * T and 0 < sel[3] < B * T
    dinp, grads, dh0 = ref.moegru_backward(dout.astype(np.float64), cache, dhT.astype(np.float64))
    want = dict(out=out, hT=hT, dinp=dinp, dh0=dh0, grads=grads)
    assert_matches(run_c(w, inp, h0, dout, dhT, K), want)


# ---- semantics ----------------------------------------------------------------------------------
def test_batch_slices_equal_the_full_batch(isa):
    """Sharding: the layer on batch slices gives the slices of the full-batch results, and the
    shard gradients sum to the full-batch gradients."""
    B, T, I, H, X, K = 5, 7, 9, 17, 4, 2
    (w, inp, h0, dout, dhT), _ = case(B, T, I, H, X, K)
    full = run_c(w, inp, h0, dout, dhT, K)
    gsum = {k: np.zeros_like(v) for k, v in w.items()}
    for b0, b1 in [(0, 2), (2, 3), (3, 5)]:
        part = run_c(w, np.ascontiguousarray(inp[b0:b1]), h0[b0:b1].copy(),
                     np.ascontiguousarray(dout[b0:b1]), dhT[b0:b1].copy(), K)
        for k in ("out", "hT", "dinp", "dh0"):
            np.testing.assert_allclose(part[k], full[k][b0:b1], rtol=1e-5, atol=1e-6, err_msg=k)
        for k in gsum:
            gsum[k] += part["grads"][k]
    for k in gsum:
        np.testing.assert_allclose(gsum[k], full["grads"][k], rtol=1e-4,
                                   atol=1e-5 * np.max(np.abs(full["grads"][k])), err_msg=k)


def test_in_place_state_slice_of_a_larger_array(isa):
    """h may be a contiguous slice h[l, b0:b1] of an (L,B,X,H) array, as training passes it."""
    B, T, I, H, X, K = 3, 7, 17, 17, 3, 2
    (w, inp, h0, dout, dhT), want = case(B, T, I, H, X, K)
    hall = np.zeros((2, B + 2, X, H), np.float32)
    hall[1, 1:1 + B] = h0
    acts, ws = buffers(B, T, I, H, X, K)
    out = np.zeros((B, T, H), np.float32)
    kernels.moegru_forward(out, acts, hall[1, 1:1 + B], ws, inp, w, K, EPS)
    assert rel_err(hall[1, 1:1 + B], want["hT"]) < TOL
    assert not hall[0].any() and not hall[1, 0].any() and not hall[1, B + 1].any()


def test_bitwise_deterministic_with_dirty_buffers(isa):
    """Two identical calls give the same bits, even when every buffer starts full of NaN (so no
    result depends on the previous content of acts, ws or out)."""
    (w, inp, h0, dout, dhT), _ = case(3, 7, 9, 17, 5, 2)
    a = run_c(w, inp, h0, dout, dhT, 2, fill=0.0)
    b = run_c(w, inp, h0, dout, dhT, 2, fill=np.nan)
    for k in ("out", "hT", "dinp", "dh0"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in a["grads"]:
        np.testing.assert_array_equal(a["grads"][k], b["grads"][k], err_msg=k)


def test_backward_accumulates(isa):
    """dinp and every gradient are added to, not overwritten."""
    (w, inp, h0, dout, dhT), _ = case(3, 7, 9, 17, 4, 3)
    rng = np.random.default_rng(7)
    g0 = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in w.items()}
    d0 = rng.standard_normal(inp.shape).astype(np.float32)
    base = run_c(w, inp, h0, dout, dhT, 3)
    acc = run_c(w, inp, h0, dout, dhT, 3, grads0=g0, dinp0=d0)
    np.testing.assert_allclose(acc["dinp"], d0 + base["dinp"], rtol=1e-6, atol=1e-6)
    for k in g0:
        np.testing.assert_allclose(acc["grads"][k], g0[k] + base["grads"][k], rtol=1e-6,
                                   atol=1e-6, err_msg=k)


def test_no_dh_is_truncated_bptt(isa):
    """dh=None behaves as a zero gradient at the final state."""
    (w, inp, h0, dout, dhT), _ = case(3, 7, 9, 17, 4, 2)
    a = run_c(w, inp, h0, dout, None, 2)
    b = run_c(w, inp, h0, dout, np.zeros_like(dhT), 2)
    np.testing.assert_array_equal(a["dinp"], b["dinp"])
    for k in a["grads"]:
        np.testing.assert_array_equal(a["grads"][k], b["grads"][k], err_msg=k)


def test_none_gradients_are_skipped(isa):
    (w, inp, h0, dout, dhT), _ = case(3, 7, 9, 17, 4, 2)
    full = run_c(w, inp, h0, dout, None, 2)
    B, T, I = inp.shape
    X, H = w["bz"].shape
    acts, ws = buffers(B, T, I, H, X, 2)
    out, h = np.zeros((B, T, H), np.float32), h0.copy()
    kernels.moegru_forward(out, acts, h, ws, inp, w, 2, EPS)
    grads = {k: (np.zeros_like(v) if k in ("Wch", "bg", "Wp") else None) for k, v in w.items()}
    kernels.moegru_backward(None, None, grads, ws, dout, acts, inp, w, 2)
    for k in ("Wch", "bg", "Wp"):
        np.testing.assert_array_equal(grads[k], full["grads"][k], err_msg=k)


def test_unselected_experts_keep_state_exactly(isa):
    B, T, I, H, X, K = 3, 1, 9, 17, 5, 2
    (w, inp, h0, dout, dhT), _ = case(B, T, I, H, X, K)
    c = run_c(w, inp, h0, dout, dhT, K)
    changed = np.any(c["hT"] != h0, axis=-1)            # (B,X)
    assert changed.sum(axis=1).tolist() == [K] * B
    # and the gradient of an unselected expert's state passes straight through
    np.testing.assert_array_equal(c["dh0"][~changed], dhT[~changed])


def test_nan_input_is_memory_safe(isa):
    """A NaN router input must not break the top-K bookkeeping (outputs are NaN, no crash)."""
    (w, inp, h0, dout, dhT), _ = case(3, 7, 9, 17, 5, 2)
    bad = inp.copy()
    bad[1, 3, :] = np.nan
    c = run_c(w, bad, h0, dout, dhT, 2)
    assert np.isnan(c["out"][1, 3]).all()
    assert np.isfinite(c["out"][0]).all()


def test_binding_matches_plain_wrappers(isa):
    B, T, I, H, X, K = 3, 7, 9, 17, 4, 2
    (w, inp, h0, dout, dhT), _ = case(B, T, I, H, X, K)
    plain = run_c(w, inp, h0, dout, dhT, K)
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    bind = kernels.MoeGruBinding(w, B, T, I, K, EPS, grads=grads)
    out, h = np.zeros((B, T, H), np.float32), h0.copy()
    assert bind.forward(out, h, inp) is out
    dinp, dh = np.zeros_like(inp), dhT.copy()
    bind.backward(dinp, dout, inp, dh)
    np.testing.assert_array_equal(out, plain["out"])
    np.testing.assert_array_equal(h, plain["hT"])
    np.testing.assert_array_equal(dinp, plain["dinp"])
    np.testing.assert_array_equal(dh, plain["dh0"])
    for k in grads:
        np.testing.assert_array_equal(grads[k], plain["grads"][k], err_msg=k)


# ---- argument validation ------------------------------------------------------------------------
def _valid(B=2, T=3, I=9, H=17, X=3, K=2):
    (w, inp, h0, dout, dhT), _ = case(B, T, I, H, X, K)
    acts, ws = buffers(B, T, I, H, X, K)
    return w, inp, h0.copy(), dout, acts, ws, np.zeros((B, T, H), np.float32)


def test_sizes_validate():
    with pytest.raises(KernelArgumentError, match="K=4 active experts exceeds X=3"):
        kernels.moegru_sizes(2, 3, 9, 17, 3, 4)
    with pytest.raises(KernelArgumentError, match="B must be an integer >= 1"):
        kernels.moegru_sizes(0, 3, 9, 17, 3, 2)
    # (at B*T = 6 rows the scratch is the packed Wch panel, the same for any K; at 64 it is not)
    a1, w1 = kernels.moegru_sizes(4, 16, 9, 17, 3, 1)
    a2, w2 = kernels.moegru_sizes(4, 16, 9, 17, 3, 3)
    assert a1 < a2 and w1 < w2          # sparse routing needs less memory


@pytest.mark.parametrize("what,match", [
    ("dtype", r"w\['Wz'\] must have dtype float32"),
    ("shape", r"w\['Wcx'\] has shape \(3, 17, 8\), expected \(X,H,I\)"),
    ("missing_wp", r"w\['Wp'\] is required.*I=9 != H=17"),
    ("extra_wp", r"w\['Wp'\] must be absent when I == H"),
    ("unknown", r"unknown keys \['Wq'\]"),
    ("small_acts", r"acts has \d+ floats, needs at least \d+"),
    ("out_shape", r"out has shape \(2, 3, 16\), expected \(B,T,H\)"),
    ("h_noncontig", r"h must be C-contiguous"),
    ("alias", r"out and inp overlap"),
    ("k_too_big", r"K=4 active experts exceeds X=3"),
    ("readonly", r"out must be writable"),
])
def test_forward_rejects_bad_arguments(what, match):
    w, inp, h, dout, acts, ws, out = _valid()
    K = 2
    if what == "dtype":
        w = dict(w, Wz=w["Wz"].astype(np.float64))
    elif what == "shape":
        w = dict(w, Wcx=w["Wcx"][:, :, :8].copy())
    elif what == "missing_wp":
        w = {k: v for k, v in w.items() if k != "Wp"}
    elif what == "extra_wp":
        w, inp, h, dout, acts, ws, out = _valid(I=17)
        w = dict(w, Wp=np.zeros((17, 17), np.float32))
    elif what == "unknown":
        w = dict(w, Wq=w["Wg"])
    elif what == "small_acts":
        acts = acts[:-1]
    elif what == "out_shape":
        out = np.zeros((2, 3, 16), np.float32)
    elif what == "h_noncontig":
        h = np.zeros((2, 17, 3), np.float32).transpose(0, 2, 1)
    elif what == "alias":
        w, inp, h, dout, acts, ws, out = _valid(I=17)
        out = inp
    elif what == "k_too_big":
        K = 4
    elif what == "readonly":
        out.setflags(write=False)
    with pytest.raises(KernelArgumentError, match=match):
        kernels.moegru_forward(out, acts, h, ws, inp, w, K, EPS)


def test_backward_rejects_bad_arguments():
    w, inp, h, dout, acts, ws, out = _valid()
    kernels.moegru_forward(out, acts, h, ws, inp, w, 2, EPS)
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    with pytest.raises(KernelArgumentError, match=r"grads\['Wch'\] has shape"):
        kernels.moegru_backward(None, None, dict(grads, Wch=np.zeros((3, 17, 16), np.float32)),
                                ws, dout, acts, inp, w, 2)
    with pytest.raises(KernelArgumentError, match=r"dh has shape \(2, 17, 3\), expected \(B,X,H\)"):
        kernels.moegru_backward(None, np.zeros((2, 17, 3), np.float32), grads, ws, dout, acts,
                                inp, w, 2)
    with pytest.raises(KernelArgumentError, match=r"dinp has shape"):
        kernels.moegru_backward(np.zeros((2, 3, 17), np.float32), None, grads, ws, dout, acts,
                                inp, w, 2)
    bind = kernels.MoeGruBinding(w, 2, 3, 9, 2, EPS)
    with pytest.raises(KernelArgumentError, match="has no grads"):
        bind.backward(None, dout, inp)
    with pytest.raises(KernelArgumentError, match=r"inp has shape \(2, 3, 8\)"):
        bind.forward(out, h, np.zeros((2, 3, 8), np.float32))


def test_errors_are_shoestring_errors():
    assert issubclass(KernelArgumentError, ShoestringError)
