"""The numpy references of the MoE-GRU layer and of the whole model against central finite
differences in float64 (the reference is the oracle of the C kernels, so it is checked first).

Random weights are drawn until the top-K selection is clear of a tie (margin far larger than the
finite-difference step), since the selection itself is discrete and has no gradient.
"""
import numpy as np
import pytest

from shoestring import ref
from shoestring.params import ModelConfig, ParamLayout

FD_STEP = 1e-6
MARGIN = 1e-3


def layer_weights(rng, I, H, X, scale=0.6):
    """Random float64 weights of one layer; Wp/bp only when I != H."""
    w = {"Wg": rng.standard_normal((X, I)) * 1.5, "bg": rng.standard_normal(X) * 0.5,
         "Wz": rng.standard_normal((X, H, I)) * scale, "bz": rng.standard_normal((X, H)) * 0.3,
         "Wcx": rng.standard_normal((X, H, I)) * scale,
         "Wch": rng.standard_normal((X, H, H)) * scale, "bc": rng.standard_normal((X, H)) * 0.3,
         "gamma": 1.0 + 0.3 * rng.standard_normal(H)}
    if I != H:
        w["Wp"] = rng.standard_normal((H, I)) * scale
        w["bp"] = rng.standard_normal(H) * 0.3
    return w


def layer_case(B, T, I, H, X, K, seed=0):
    """(inp, h0, w, dout, dhT) with the top-K selection at least MARGIN away from a tie."""
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        w = layer_weights(rng, I, H, X)
        inp = rng.standard_normal((B, T, I))
        h0 = rng.standard_normal((B, X, H)) * 0.5
        _, _, cache = ref.moegru_forward(inp, h0, w, K, 1e-5)
        if ref.topk_margin(cache["g"], K) > MARGIN:
            dout = rng.standard_normal((B, T, H))
            dhT = rng.standard_normal((B, X, H))
            return inp, h0, w, dout, dhT
    raise AssertionError("no seed gave a top-K selection clear of ties")


def central_diff(f, x, idx):
    """d f / d x[idx] by central differences (x is perturbed in place and restored)."""
    old = x[idx]
    x[idx] = old + FD_STEP
    fp = f()
    x[idx] = old - FD_STEP
    fm = f()
    x[idx] = old
    return (fp - fm) / (2 * FD_STEP)


def check_all(f, named, analytic, rng, max_entries=None):
    """Compare analytic[name] with finite differences of f over entries of named[name]."""
    for name, x in named.items():
        an = analytic[name]
        assert an.shape == x.shape, name
        flat_idx = np.arange(x.size)
        if max_entries is not None and x.size > max_entries:
            flat_idx = rng.choice(x.size, max_entries, replace=False)
        for fi in flat_idx:
            idx = np.unravel_index(fi, x.shape)
            fd = central_diff(f, x, idx)
            assert abs(fd - an[idx]) <= 1e-6 + 1e-5 * abs(fd), (
                "%s%s: analytic %.9g vs finite difference %.9g" % (name, idx, an[idx], fd))


LAYER_CASES = [
    # B, T, I, H, X, K
    (2, 3, 4, 4, 3, 3),   # dense, identity residual
    (2, 3, 5, 4, 3, 3),   # dense, projection
    (2, 3, 4, 4, 3, 1),   # sparse K=1
    (2, 3, 5, 4, 3, 2),   # sparse K=2, projection
    (1, 4, 5, 4, 4, 2),   # one sequence, more experts
]


@pytest.mark.parametrize("B,T,I,H,X,K", LAYER_CASES,
                         ids=["B%dT%dI%dH%dX%dK%d" % c for c in LAYER_CASES])
def test_layer_backward_matches_finite_differences(B, T, I, H, X, K):
    inp, h0, w, dout, dhT = layer_case(B, T, I, H, X, K)
    eps = 1e-5

    def loss():
        out, hT, _ = ref.moegru_forward(inp, h0, w, K, eps)
        return float(np.sum(out * dout) + np.sum(hT * dhT))

    _, _, cache = ref.moegru_forward(inp, h0, w, K, eps)
    dinp, grads, dh0 = ref.moegru_backward(dout, cache, dhT)
    assert set(grads) == set(w)
    named = dict(w, inp=inp, h0=h0)
    analytic = dict(grads, inp=dinp, h0=dh0)
    check_all(loss, named, analytic, np.random.default_rng(1))


def test_layer_without_dhT_equals_zero_dhT():
    inp, h0, w, dout, dhT = layer_case(2, 3, 5, 4, 3, 2)
    _, _, cache = ref.moegru_forward(inp, h0, w, 2, 1e-5)
    a = ref.moegru_backward(dout, cache, None)
    b = ref.moegru_backward(dout, cache, np.zeros_like(dhT))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])


def test_unselected_experts_keep_their_state():
    """With K=1 each step changes exactly one expert's state per sequence."""
    inp, h0, w, _, _ = layer_case(2, 1, 4, 4, 3, 1)
    _, hT, cache = ref.moegru_forward(inp, h0, w, 1, 1e-5)
    changed = np.any(hT != h0, axis=-1)                      # (B,X)
    np.testing.assert_array_equal(changed, cache["mask"][:, 0])
    assert changed.sum(axis=1).tolist() == [1, 1]


def test_topk_ties_go_to_the_lower_index():
    g = np.array([[0.2, 0.3, 0.3, 0.2]])
    assert ref.topk_select(g, 1).tolist() == [[1]]
    assert ref.topk_select(g, 3).tolist() == [[0, 1, 2]]
    assert ref.topk_margin(g, 2) == pytest.approx(0.1)


def test_dense_gates_are_the_plain_softmax():
    inp, h0, w, _, _ = layer_case(2, 3, 4, 4, 3, 3)
    _, _, cache = ref.moegru_forward(inp, h0, w, 3, 1e-5)
    np.testing.assert_allclose(cache["ghat"], cache["g"], rtol=1e-14)


# ---- whole model --------------------------------------------------------------------------------
MODEL_CASES = [
    # V, C, H, X, K
    (7, 4, 4, 3, 3),   # dense, no projection
    (7, 5, 4, 3, 3),   # dense, projection in layer 0
    (7, 5, 4, 3, 1),   # K=1
    (7, 4, 4, 3, 2),   # K=2
    (7, 5, 4, 3, 2),   # K=2, projection
]


def model_case(V, C, H, X, K, B=2, T=3, seed=0):
    cfg = ModelConfig(V=V, C=C, H=H, L=2, X=X, K=K)
    lay = ParamLayout(cfg)
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        flat = lay.init(s).astype(np.float64)
        flat += 0.2 * rng.standard_normal(flat.shape)        # biases and gains off 0 and 1
        P = lay.views(flat)
        tokens = rng.integers(0, V, (B, T))
        targets = rng.integers(0, V, (B, T))
        h0 = 0.5 * rng.standard_normal((cfg.L, B, X, H))
        _, _, cache = ref.model_forward(P, cfg, tokens, h0)
        if all(ref.topk_margin(c["g"], K) > MARGIN for c in cache["layers"]):
            return cfg, lay, flat, P, tokens, targets, h0
    raise AssertionError("no seed gave a top-K selection clear of ties")


@pytest.mark.parametrize("V,C,H,X,K", MODEL_CASES, ids=["V%dC%dH%dX%dK%d" % c for c in MODEL_CASES])
def test_model_backward_matches_finite_differences(V, C, H, X, K):
    cfg, lay, flat, P, tokens, targets, h0 = model_case(V, C, H, X, K)

    def loss():
        return ref.model_loss_and_grads(P, cfg, tokens, targets, h0)[0]

    L0, grads, hT = ref.model_loss_and_grads(P, cfg, tokens, targets, h0)
    assert set(grads) == set(P)
    for name in P:
        assert grads[name].shape == P[name].shape, name
    assert hT.shape == h0.shape
    check_all(loss, P, grads, np.random.default_rng(2), max_entries=6)


def test_model_loss_is_mean_cross_entropy_of_forward():
    cfg, lay, flat, P, tokens, targets, h0 = model_case(7, 5, 4, 3, 2)
    logits, hT, _ = ref.model_forward(P, cfg, tokens, h0)
    p = ref.softmax_forward(logits)
    B, T = tokens.shape
    want = -np.mean(np.log(p[np.arange(B)[:, None], np.arange(T)[None, :], targets]))
    loss, _, hT2 = ref.model_loss_and_grads(P, cfg, tokens, targets, h0)
    assert loss == pytest.approx(want, rel=1e-12)
    np.testing.assert_array_equal(hT, hT2)


def test_model_state_carries_across_windows():
    """Two windows of T with the carried state give the same logits as one window of 2T."""
    cfg, lay, flat, P, tokens, _, h0 = model_case(7, 5, 4, 3, 2, T=6)
    full, hfull, _ = ref.model_forward(P, cfg, tokens, h0)
    first, h1, _ = ref.model_forward(P, cfg, tokens[:, :3], h0)
    second, h2, _ = ref.model_forward(P, cfg, tokens[:, 3:], h1)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(h2, hfull, rtol=1e-12, atol=1e-12)
