"""Decoding at batch 1 (csrc/decode.c) against numpy, and sampling (ss_sample) against its rules.

The C step is checked for every instruction set usable here (SHOESTRING_ISA narrows the list to
the forced one; the `isa` fixture is in conftest.py) against two numpy twins: the straightforward single-step reference below (written
from MODEL.md §1 alone) and, when present, ref.model_forward over a whole window.
"""
import math

import numpy as np
import pytest

from shoestring import kernels, ref
from shoestring.errors import KernelArgumentError
from shoestring.params import ModelConfig, ParamLayout

# ---- numpy twin: one token, one sequence, written from MODEL.md §1 ---------------------------
def _erf(a):
    return np.vectorize(math.erf, otypes=[np.float64])(a)


def np_step(P, cfg, token, h):
    """-> logits (V), new state (L,X,H); float64 throughout; h is not modified."""
    h = h.astype(np.float64).copy()
    x = P["WE"][token].astype(np.float64)
    for l in range(cfg.L):
        pre = "l%d." % l
        W = {k: P[pre + k].astype(np.float64) for k in ("Wg", "bg", "Wz", "bz", "Wcx", "Wch", "bc", "gamma")}
        a = W["Wg"] @ x + W["bg"]
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
            z = 1 / (1 + np.exp(-(W["Wz"][e] @ x + W["bz"][e])))
            pre_c = W["Wcx"][e] @ x + W["Wch"][e] @ h[l, e] + W["bc"][e]
            c = 0.5 * pre_c * (1 + _erf(pre_c / math.sqrt(2)))
            h[l, e] = (1 - z) * h[l, e] + z * c
            m += gate[e] * h[l, e]
        if pre + "Wp" in P:
            r = m + P[pre + "Wp"].astype(np.float64) @ x + P[pre + "bp"]
        else:
            r = m + x
        x = W["gamma"] * r / np.sqrt(np.mean(r * r) + cfg.eps_rmsnorm)
    return P["Wo"].astype(np.float64) @ x + P["bo"], h


def make(cfg, seed=0, bias_scale=0.3):
    """Parameters with nonzero biases and gains (init leaves them at 0 and 1)."""
    lay = ParamLayout(cfg)
    flat = lay.init(seed)
    rng = np.random.default_rng(seed + 100)
    P = lay.views(flat)
    for name in lay.names():
        base = name.split(".")[-1]
        if base.startswith("b") or base == "gamma":
            P[name][...] += (bias_scale * rng.standard_normal(P[name].shape)).astype(np.float32)
    return flat, P


CONFIGS = {
    "dense": ModelConfig(V=37, C=16, H=16, L=2, X=3, K=3),
    "topk": ModelConfig(V=37, C=16, H=16, L=2, X=5, K=2),
    "proj-dense": ModelConfig(V=33, C=9, H=17, L=2, X=3, K=3),
    "proj-topk": ModelConfig(V=41, C=20, H=7, L=3, X=4, K=1),
    "awkward": ModelConfig(V=17, C=33, H=15, L=1, X=7, K=3),
    "default-k2": ModelConfig(K=2),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_step_matches_numpy(isa, name):
    cfg = CONFIGS[name]
    flat, P = make(cfg, seed=3)
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    h = np.zeros((cfg.L, cfg.X, cfg.H))
    rng = np.random.default_rng(7)
    for t, tok in enumerate(rng.integers(0, cfg.V, size=12)):
        want_logits, h = np_step(P, cfg, int(tok), h)
        dec.step(int(tok))
        np.testing.assert_allclose(dec.state, h, rtol=2e-4, atol=2e-5, err_msg="state at t=%d" % t)
        np.testing.assert_allclose(dec.logits, want_logits, rtol=2e-4, atol=2e-4,
                                   err_msg="logits at t=%d" % t)


def test_idle_experts_keep_state(isa):
    cfg = CONFIGS["topk"]
    _, P = make(cfg, seed=1)
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    dec.state[...] = np.random.default_rng(0).standard_normal(dec.state.shape).astype(np.float32)
    before = dec.state.copy()
    dec.step(5)
    changed = np.any(dec.state != before, axis=2)      # (L,X)
    assert (changed.sum(axis=1) == cfg.K).all(), changed


def test_head_skip_updates_state_only(isa):
    cfg = CONFIGS["proj-dense"]
    _, P = make(cfg, seed=2)
    w = kernels.DecodeWeights(cfg, P)
    a, b = kernels.Decoder(w), kernels.Decoder(w)
    for tok in (1, 2, 3):
        a.step(tok, head=False)
        b.step(tok)
    np.testing.assert_array_equal(a.state, b.state)
    assert not a.logits.any()


def test_repack_follows_new_parameters(isa):
    cfg = CONFIGS["dense"]
    flat, P = make(cfg, seed=4)
    w = kernels.DecodeWeights(cfg, P)
    flat *= np.float32(0.5)
    w.repack()
    dec = kernels.Decoder(w)
    dec.step(3)
    want, _ = np_step(P, cfg, 3, np.zeros((cfg.L, cfg.X, cfg.H)))
    np.testing.assert_allclose(dec.logits, want, rtol=2e-4, atol=2e-4)


def test_isas_agree():
    """Every instruction set gives (nearly) the same logits for the same tokens."""
    cfg = CONFIGS["default-k2"]
    _, P = make(cfg, seed=5)
    w = kernels.DecodeWeights(cfg, P)
    before = kernels.isa_active()
    outs = {}
    try:
        for name in kernels.isa_available():
            kernels.set_isa(name)
            dec = kernels.Decoder(w)
            for tok in (4, 8, 15, 16, 23, 42):
                dec.step(tok)
            outs[name] = dec.logits.copy()
    finally:
        kernels.set_isa(before)
    base = outs["scalar"]
    for name, v in outs.items():
        np.testing.assert_allclose(v, base, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.skipif(not hasattr(ref, "model_forward"), reason="ref.model_forward not present")
@pytest.mark.parametrize("name", ["dense", "topk", "proj-dense", "proj-topk"])
def test_window_matches_ref_model_forward(isa, name):
    """Decoding T tokens one at a time equals the training reference over the T-token window."""
    cfg = CONFIGS[name]
    _, P = make(cfg, seed=6)
    T = 9
    tokens = np.random.default_rng(8).integers(0, cfg.V, size=(1, T))
    h0 = (0.5 * np.random.default_rng(9).standard_normal((cfg.L, 1, cfg.X, cfg.H))).astype(np.float32)
    logits, hT, _ = ref.model_forward(P, cfg, tokens, h0.copy())
    logits = np.asarray(logits).reshape(1, T, cfg.V)
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    dec.state[...] = h0[:, 0]
    for t in range(T):
        dec.step(int(tokens[0, t]))
        np.testing.assert_allclose(dec.logits, logits[0, t], rtol=3e-4, atol=3e-4,
                                   err_msg="logits at t=%d" % t)
    np.testing.assert_allclose(dec.state, np.asarray(hT)[:, 0], rtol=3e-4, atol=3e-5)


def test_step_rejects_bad_token():
    cfg = CONFIGS["dense"]
    _, P = make(cfg)
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    for bad in (-1, cfg.V):
        with pytest.raises(KernelArgumentError, match="token"):
            dec.step(bad)


def test_weights_reject_wrong_shapes():
    cfg = CONFIGS["dense"]
    _, P = make(cfg)
    P = dict(P)
    P["l1.Wch"] = np.zeros((cfg.X, cfg.H, cfg.H + 1), np.float32)
    with pytest.raises(KernelArgumentError, match=r"l1\.Wch"):
        kernels.DecodeWeights(cfg, P)
    P["l1.Wch"] = np.zeros((cfg.X, cfg.H, cfg.H), np.float64)
    with pytest.raises(KernelArgumentError, match="float32"):
        kernels.DecodeWeights(cfg, P)


# ---- sampling -------------------------------------------------------------------------------
def _logits(V=50, seed=0, scale=3.0):
    return (scale * np.random.default_rng(seed).standard_normal(V)).astype(np.float32)


def test_greedy_is_argmax_lowest_tie():
    x = _logits()
    rng = kernels.Rng(0)
    assert kernels.sample(x, rng, 0.0, 40, 0.95) == int(np.argmax(x))
    x[7] = x[30] = x.max() + 1
    assert kernels.sample(x, rng, 0.0, 0, 1.0) == 7
    assert kernels.sample(x, rng, 1.0, 1, 1.0) == 7            # top-k 1 is greedy
    assert rng.state[0] == 0                                   # greedy draws nothing
    assert kernels.sample(x, rng, 1.0, 0, 1e-6) == 7           # a tiny nucleus is greedy


@pytest.mark.parametrize("T,k,p", [(0.8, 40, 0.95), (1.0, 0, 1.0), (1.5, 0, 0.5), (0.7, 5, 1.0)])
def test_fixed_seed_same_draws(T, k, p):
    x = _logits(200, seed=1)
    a = [kernels.sample(x, r, T, k, p) for r in [kernels.Rng(42)] for _ in range(100)]
    b = [kernels.sample(x, r, T, k, p) for r in [kernels.Rng(42)] for _ in range(100)]
    c = [kernels.sample(x, r, T, k, p) for r in [kernels.Rng(43)] for _ in range(100)]
    assert a == b
    assert a != c


def test_tiny_top_p_and_top_k_one_equal_greedy():
    for seed in range(20):
        x = _logits(100, seed=seed)
        want = int(np.argmax(x))
        r = kernels.Rng(seed)
        assert kernels.sample(x, r, 1.0, 1, 1.0) == want
        assert kernels.sample(x, r, 1.0, 0, 1e-6) == want
        assert kernels.sample(x, r, 2.0, 50, 1e-6) == want


def test_banned_ids_never_sampled():
    x = _logits(30, seed=2)
    x[:5] += 10                                   # make the banned ids the likeliest
    allowed = np.ones(30, np.uint8)
    allowed[[0, 1, 3, 4]] = 0
    r = kernels.Rng(1)
    got = {kernels.sample(x, r, 2.0, 0, 1.0, allowed) for _ in range(500)}
    assert not got & {0, 1, 3, 4}
    assert 2 in got
    assert kernels.sample(x, r, 0.0, 0, 1.0, allowed) == 2
    with pytest.raises(KernelArgumentError, match="banned"):
        kernels.sample(x, r, 1.0, 0, 1.0, np.zeros(30, np.uint8))


def _np_distribution(x, T, k, p, allowed=None):
    """The distribution ss_sample should draw from, computed the slow way (float64)."""
    V = len(x)
    ids = [i for i in range(V) if allowed is None or allowed[i]]
    ids.sort(key=lambda i: (-x[i], i))
    if 0 < k < len(ids):
        ids = ids[:k]
    w = np.exp((x[ids].astype(np.float64) - x[ids].max()) / T)
    w /= w.sum()
    if p < 1:
        cum = np.cumsum(w)
        n = int(np.searchsorted(cum, p - 1e-12)) + 1
        ids, w = ids[:n], w[:n] / w[:n].sum()
    out = np.zeros(V)
    out[ids] = w
    return out


@pytest.mark.parametrize("T,k,p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 8, 0.7)])
def test_sampling_distribution(T, k, p):
    """Empirical frequencies match top-k / top-p / temperature computed in numpy."""
    V = 12
    x = np.array([2.0, 1.5, 1.5, 0.3, -0.2, 1.0, 0.9, -1.0, 0.1, 0.5, 2.1, -3.0], np.float32)
    want = _np_distribution(x, T, k, p)
    r = kernels.Rng(123)
    n = 20000
    counts = np.bincount([kernels.sample(x, r, T, k, p) for _ in range(n)], minlength=V)
    assert np.all(counts[want == 0] == 0)
    np.testing.assert_allclose(counts / n, want, atol=0.015)


def test_rng_uniform_range_and_mean():
    r = kernels.Rng(9)
    u = np.array([r.uniform() for _ in range(20000)])
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01


def test_sample_argument_errors():
    x = _logits(10)
    r = kernels.Rng(0)
    with pytest.raises(KernelArgumentError, match="top_p"):
        kernels.sample(x, r, 1.0, 0, 0.0)
    with pytest.raises(KernelArgumentError, match="temperature"):
        kernels.sample(x, r, -1.0, 0, 1.0)
    with pytest.raises(KernelArgumentError, match="float32"):
        kernels.sample(x.astype(np.float64), r, 1.0, 0, 1.0)


def test_bound_sampler_equals_sample():
    cfg = CONFIGS["topk"]
    _, P = make(cfg, seed=2)
    w = kernels.DecodeWeights(cfg, P)
    allowed = np.ones(cfg.V, np.uint8)
    allowed[[0, 1, 3]] = 0
    a, b = kernels.Decoder(w, allowed), kernels.Decoder(w, allowed)
    ra, rb = kernels.Rng(5), kernels.Rng(5)
    draw = b.sampler(rb, 1.3, 7, 0.9)
    tok_a = tok_b = 2
    for _ in range(30):
        a.step(tok_a)
        b.step(tok_b)
        tok_a, tok_b = a.sample(ra, 1.3, 7, 0.9), draw()
        assert tok_a == tok_b and allowed[tok_a]
    with pytest.raises(KernelArgumentError, match="top_k"):
        b.sampler(rb, 1.0, -1, 0.9)


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_nucleus_over_many_tokens(isa, p):
    """top-p without top-k over a flat distribution (the bisection path): the sampled support is
    exactly the nucleus computed by sorting in numpy, and frequencies follow it."""
    V = 400
    x = (0.3 * np.random.default_rng(4).standard_normal(V)).astype(np.float32)
    allowed = np.ones(V, np.uint8)
    allowed[:5] = 0
    want = _np_distribution(x, 1.0, 0, p, allowed)
    r = kernels.Rng(7)
    n = 20000
    counts = np.bincount([kernels.sample(x, r, 1.0, 0, p, allowed) for _ in range(n)], minlength=V)
    assert set(np.flatnonzero(counts)) == set(np.flatnonzero(want))
    np.testing.assert_allclose(counts / n, want, atol=0.004)
