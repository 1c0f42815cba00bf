"""The training-only regularisers of issue #11 and the bounded recurrence.

References first (float64 central finite differences of shoestring.ref), then the C kernels
against the references for every instruction set on awkward sizes:
- locked (variational) dropout, ss_dropout_forward/backward (one mask row per stream shared by
  the T steps; T = 1 is DropConnect, used on Wch);
- embedding dropout, the row_scale argument of ss_embedding_forward/backward;
- the candidate's soft cap c = cap tanh(GELU(u)/cap) in ss_moegru_forward/backward, which keeps
  every state in [min(h0, -0.17), max(h0, cap)] by construction;
- the whole reference model with every mask, and with tied embeddings (no Wo).
"""
import numpy as np
import pytest

from shoestring import kernels, ref
from shoestring.errors import KernelArgumentError
from shoestring.model import dropout_mask
from shoestring.params import ModelConfig, ParamLayout
from test_moegru import EPS, TOL, buffers, case, rel_err
from test_ref_model import check_all, layer_case, model_case

CAP = 1.5            # small enough that the tanh bends the candidates of the test data


# ---- references vs finite differences -----------------------------------------------------------
@pytest.mark.parametrize("B,T,I,H,X,K", [(2, 3, 4, 4, 3, 3), (2, 3, 5, 4, 3, 2), (1, 4, 5, 4, 4, 1)])
def test_capped_layer_backward_matches_finite_differences(B, T, I, H, X, K):
    inp, h0, w, dout, dhT = layer_case(B, T, I, H, X, K)
    _, _, cache = ref.moegru_forward(inp, h0, w, K, EPS, CAP)
    assert np.max(np.abs(cache["c"])) > 0.5 * CAP          # the cap is active, not a no-op

    def loss():
        out, hT, _ = ref.moegru_forward(inp, h0, w, K, EPS, CAP)
        return float(np.sum(out * dout) + np.sum(hT * dhT))

    dinp, grads, dh0 = ref.moegru_backward(dout, cache, dhT)
    check_all(loss, dict(w, inp=inp, h0=h0), dict(grads, inp=dinp, h0=dh0),
              np.random.default_rng(3))


def test_dropout_reference_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    inp = rng.standard_normal((3, 4, 5))
    mask = dropout_mask(rng, (3, 5), 0.4).astype(np.float64)
    dout = rng.standard_normal((3, 4, 5))

    def loss():
        return float(np.sum(ref.dropout_forward(inp, mask) * dout))

    check_all(loss, {"inp": inp}, {"inp": ref.dropout_backward(dout, mask)}, rng)


def test_dropout_mask_is_inverted_and_seeded():
    m = dropout_mask(np.random.default_rng(5), (400, 50), 0.25)
    assert m.dtype == np.float32
    assert set(np.unique(m).tolist()) == {0.0, np.float32(1 / 0.75)}
    assert abs((m == 0).mean() - 0.25) < 0.01
    np.testing.assert_array_equal(m, dropout_mask(np.random.default_rng(5), (400, 50), 0.25))
    assert (dropout_mask(np.random.default_rng(5), (3, 4), 0.0) == 1).all()


def _all_masks(rng, cfg, B, p=0.3):
    return {"embedding": dropout_mask(rng, (cfg.V,), p).astype(np.float64),
            "inputs": [dropout_mask(rng, (B, cfg.layer_input(l)), p).astype(np.float64)
                       for l in range(cfg.L)],
            "head": dropout_mask(rng, (B, cfg.H), p).astype(np.float64),
            "Wch": [dropout_mask(rng, (cfg.X, cfg.H, cfg.H), p).astype(np.float64)
                    for l in range(cfg.L)]}


@pytest.mark.parametrize("V,C,H,X,K", [(7, 4, 4, 3, 3), (7, 5, 4, 3, 2)])
def test_model_with_every_mask_matches_finite_differences(V, C, H, X, K):
    cfg, lay, flat, P, tokens, targets, h0 = model_case(V, C, H, X, K)
    masks = _all_masks(np.random.default_rng(4), cfg, tokens.shape[0])
    masks["embedding"][tokens[0, 0]] = 0.0                   # one token of the window dropped

    def loss():
        return ref.model_loss_and_grads(P, cfg, tokens, targets, h0, masks)[0]

    L0, grads, _ = ref.model_loss_and_grads(P, cfg, tokens, targets, h0, masks)
    assert L0 != ref.model_loss_and_grads(P, cfg, tokens, targets, h0)[0]   # masks act
    check_all(loss, P, grads, np.random.default_rng(2), max_entries=6)


def test_tied_model_matches_finite_differences():
    """Tied embeddings: no Wo, the head uses WE (C == H); WE's gradient has both uses."""
    cfg, lay, flat, P, tokens, targets, h0 = model_case(7, 4, 4, 3, 2)
    P = {k: v for k, v in P.items() if k != "Wo"}

    def loss():
        return ref.model_loss_and_grads(P, cfg, tokens, targets, h0)[0]

    _, grads, _ = ref.model_loss_and_grads(P, cfg, tokens, targets, h0)
    assert set(grads) == set(P)
    check_all(loss, P, grads, np.random.default_rng(6), max_entries=8)


def test_capped_state_is_bounded_by_construction():
    """Large recurrent weights and many carried windows: every state stays within
    [min(h0, -0.17), max(h0, cap)] with the cap, and escapes that range without it."""
    B, T, I, H, X, K = 2, 20, 6, 6, 2, 2
    rng = np.random.default_rng(0)
    w = layer_weights_big(rng, I, H, X)
    h_cap = np.zeros((B, X, H))
    h_free = np.zeros((B, X, H))
    worst = 0.0
    for _ in range(5):
        inp = rng.standard_normal((B, T, I)) * 3
        _, h_cap, c = ref.moegru_forward(inp, h_cap, w, K, EPS, 4.0)
        _, h_free, _ = ref.moegru_forward(inp, h_free, w, K, EPS, 0.0)
        worst = max(worst, np.max(c["hs"]))
        assert np.min(c["hs"]) >= -0.17 - 1e-12
    assert worst <= 4.0
    assert np.max(h_free) > 4.0


def layer_weights_big(rng, I, H, X):
    from test_ref_model import layer_weights
    w = layer_weights(rng, I, H, X, scale=2.0)
    w["bc"] = w["bc"] + 3.0
    return w


# ---- C vs reference, every instruction set --------------------------------------------------------
CAP_CASES = [(1, 7, 9, 17, 3, 1), (3, 7, 17, 17, 4, 2), (3, 5, 9, 17, 6, 6), (2, 3, 33, 17, 5, 3)]


def _capped_case(B, T, I, H, X, K):
    return case(B, T, I, H, X, K, cap=CAP, bc_shift=1.0)      # candidates near the cap


def _run_c(w, inp, h0, dout, dhT, K, cap, fill=0.0):
    B, T, I = inp.shape
    X, H = w["bz"].shape
    acts, ws = buffers(B, T, I, H, X, K, fill)
    out, h = np.full((B, T, H), fill, np.float32), h0.copy()
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    bind = kernels.MoeGruBinding(w, B, T, I, K, EPS, grads=grads, acts=acts, ws=ws, cap=cap)
    bind.forward(out, h, inp)
    dinp, dh = np.zeros_like(inp), dhT.copy()
    bind.backward(dinp, dout, inp, dh)
    return dict(out=out, hT=h, dinp=dinp, dh0=dh, grads=grads)


@pytest.mark.parametrize("B,T,I,H,X,K", CAP_CASES, ids=["B%dT%dI%dH%dX%dK%d" % c for c in CAP_CASES])
def test_capped_layer_matches_reference(isa, B, T, I, H, X, K):
    (w, inp, h0, dout, dhT), want = _capped_case(B, T, I, H, X, K)
    got = _run_c(w, inp, h0, dout, dhT, K, CAP)
    for k in ("out", "hT", "dinp", "dh0"):
        assert rel_err(got[k], want[k]) < TOL, "%s: %.3g" % (k, rel_err(got[k], want[k]))
    for k, v in want["grads"].items():
        assert rel_err(got["grads"][k], v) < TOL, "grad %s: %.3g" % (k, rel_err(got["grads"][k], v))


def test_capped_layer_differs_from_uncapped_and_is_deterministic(isa):
    (w, inp, h0, dout, dhT), _ = _capped_case(3, 7, 9, 17, 4, 2)
    a = _run_c(w, inp, h0, dout, dhT, 2, CAP)
    b = _run_c(w, inp, h0, dout, dhT, 2, CAP, fill=np.nan)
    c = _run_c(w, inp, h0, dout, dhT, 2, 0.0)
    for k in ("out", "hT", "dinp", "dh0"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["hT"], c["hT"])


def test_cap_zero_is_the_plain_layer_bit_for_bit(isa):
    """cap=0 runs the code path of the uncapped layer: same bits as the plain wrappers' default."""
    (w, inp, h0, dout, dhT), _ = _capped_case(3, 7, 9, 17, 4, 2)
    B, T, I = inp.shape
    X, H = w["bz"].shape
    acts, ws = buffers(B, T, I, H, X, 2)
    out, h = np.zeros((B, T, H), np.float32), h0.copy()
    kernels.moegru_forward(out, acts, h, ws, inp, w, 2, EPS)        # cap not given
    got = _run_c(w, inp, h0, dout, dhT, 2, 0.0)
    np.testing.assert_array_equal(out, got["out"])
    np.testing.assert_array_equal(h, got["hT"])


def test_cap_argument_is_validated():
    (w, inp, h0, dout, dhT), _ = _capped_case(1, 7, 9, 17, 3, 1)
    for bad in (-1.0, float("nan"), float("inf"), "4"):
        with pytest.raises(KernelArgumentError, match="cap must be a finite number >= 0"):
            kernels.MoeGruBinding(w, 1, 7, 9, 1, EPS, cap=bad)


DROP_SHAPES = [(1, 1, 1), (3, 7, 9), (2, 80, 96), (5, 1, 17), (4, 3, 33)]


@pytest.mark.parametrize("B,T,C", DROP_SHAPES, ids=["B%dT%dC%d" % s for s in DROP_SHAPES])
def test_dropout_matches_reference(isa, B, T, C):
    rng = np.random.default_rng(B * 100 + C)
    inp = rng.standard_normal((B, T, C)).astype(np.float32)
    mask = dropout_mask(rng, (B, C), 0.3)
    out = np.full((B, T, C), np.nan, np.float32)
    kernels.dropout_forward(out, inp, mask)
    np.testing.assert_array_equal(out, ref.dropout_forward(inp, mask))
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    d0 = rng.standard_normal((B, T, C)).astype(np.float32)
    dinp = d0.copy()
    kernels.dropout_backward(dinp, dout, mask)                    # accumulates
    np.testing.assert_allclose(dinp, d0 + ref.dropout_backward(dout, mask), rtol=1e-6, atol=1e-6)
    # dropped features are zero at every step of their stream (locked across time)
    dropped = mask == 0
    assert (out.transpose(1, 0, 2)[:, dropped] == 0).all()


def test_dropout_in_place_and_dropconnect_shape(isa):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 6, 6)).astype(np.float32)          # (X,H,H)
    mask = dropout_mask(rng, (4 * 6, 6), 0.5)
    got = W.copy()
    kernels.dropout_forward(got.reshape(24, 1, 6), got.reshape(24, 1, 6), mask)
    np.testing.assert_array_equal(got, W * mask.reshape(4, 6, 6))


@pytest.mark.parametrize("N,V,C", [(1, 3, 1), (13, 7, 5), (1280, 850, 96)])
def test_embedding_row_scale_matches_reference(isa, N, V, C):
    rng = np.random.default_rng(N)
    WE = rng.standard_normal((V, C)).astype(np.float32)
    tokens = rng.integers(0, V, N).astype(np.int32)
    scale = dropout_mask(rng, (V,), 0.4)
    out = np.full((N, C), np.nan, np.float32)
    kernels.embedding_forward(out, tokens, WE, scale)
    np.testing.assert_array_equal(out, ref.embedding_forward(tokens, WE, scale))
    dout = rng.standard_normal((N, C)).astype(np.float32)
    dWE = np.ones((V, C), np.float32)
    kernels.embedding_backward(dWE, dout, tokens, scale)
    np.testing.assert_allclose(dWE, 1 + ref.embedding_backward(dout, tokens, V, scale),
                               rtol=1e-5, atol=1e-5)
    plain = np.zeros((N, C), np.float32)
    kernels.embedding_forward(plain, tokens, WE)                   # no scale: the plain lookup
    np.testing.assert_array_equal(plain, WE[tokens])


def test_regulariser_wrappers_reject_bad_arguments():
    f = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(KernelArgumentError, match=r"mask has shape \(2, 3\), expected \(B,C\)"):
        kernels.dropout_forward(f.copy(), f, np.ones((2, 3), np.float32))
    with pytest.raises(KernelArgumentError, match=r"inp must be a 3-D"):
        kernels.dropout_forward(f.copy(), f[0], np.ones((2, 4), np.float32))
    with pytest.raises(KernelArgumentError, match="dinp and dout overlap"):
        kernels.dropout_backward(f, f, np.ones((2, 4), np.float32))
    with pytest.raises(KernelArgumentError, match=r"row_scale has shape \(6,\), expected \(V\)"):
        kernels.embedding_forward(np.zeros((2, 4), np.float32), np.zeros(2, np.int32),
                                  np.zeros((5, 4), np.float32), np.ones(6, np.float32))


def test_one_validating_wrapper_per_moegru_function():
    """ss_moegru_forward/backward are called from one place only (MoeGruBinding)."""
    import inspect
    src = inspect.getsource(kernels)
    assert src.count("lib.ss_moegru_forward(") == 1
    assert src.count("lib.ss_moegru_backward(") == 1
    assert src.count("lib.ss_embedding_forward(") == 1
    assert src.count("lib.ss_dropout_forward(") == 1
