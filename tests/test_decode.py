"""Decoding at batch 1 (csrc/decode.c) against numpy, sampling (csrc/sample.c) against its rules,
and the generation loop in C (ss_generate) against the Python loop it replaces.

The C step is checked for every instruction set usable here (SHOESTRING_ISA narrows the list to
the forced one; the `isa` fixture is in conftest.py) against two numpy twins: the single-step
reference ref.decode_step (written from MODEL.md §1 alone) and ref.model_forward over a whole
window. The int8 paths are in test_int8.py.
"""
import threading

import numpy as np
import pytest

from shoestring import kernels, ref
from shoestring.errors import KernelArgumentError
from shoestring.params import ModelConfig, ParamLayout

def np_step(P, cfg, token, h, cap=0.0):
    """-> logits (V), new state (L,X,H): the numpy twin ref.decode_step (float64)."""
    return ref.decode_step(P, cfg, token, h, cap)


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


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_embed_proj_table_gives_the_same_bits(isa, name, int8):
    """Reading layer 0's input products from the table (ss_decode_embed_proj) gives bit for bit
    the state and logits of multiplying layer 0's input matrices at every step."""
    cfg = CONFIGS[name]
    _, P = make(cfg, seed=5)
    tabled = kernels.DecodeWeights(cfg, P, int8=int8)
    plain = kernels.DecodeWeights(cfg, P, int8=int8, embed_proj=False)
    assert tabled.embed_proj is not None and plain.embed_proj is None
    a, b = kernels.Decoder(tabled), kernels.Decoder(plain)
    for i, tok in enumerate(np.random.default_rng(1).integers(0, cfg.V, size=40)):
        a.step(int(tok), head=i % 3 != 0)
        b.step(int(tok), head=i % 3 != 0)
        assert np.array_equal(a.state, b.state), "state at step %d" % i
        assert np.array_equal(a.logits, b.logits), "logits at step %d" % i


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
def test_embed_proj_table_is_read_only_while_its_kernels_are_active(int8):
    """The step reads the table (a poisoned one changes the logits) while the instruction set
    (and for int8 the dot-product setting) that filled it is active, and ignores it otherwise;
    repack() fills it again for the kernels active then."""
    cfg = CONFIGS["proj-topk"]
    _, P = make(cfg, seed=6)
    before, dot_before = kernels.isa_active(), kernels.int8_dot_set(True)

    def logits(weights):
        dec = kernels.Decoder(weights)
        dec.step(3)
        return dec.logits

    try:
        kernels.set_isa("scalar")
        w = kernels.DecodeWeights(cfg, P, int8=int8)
        plain = logits(kernels.DecodeWeights(cfg, P, int8=int8, embed_proj=False))
        assert np.array_equal(logits(w), plain)
        w.embed_proj[...] = 7.0
        assert not np.array_equal(logits(w), plain)
        others = [n for n in kernels.isa_available() if n != "scalar"]
        switches = [lambda n=n: kernels.set_isa(n) for n in others]
        if int8:
            switches.append(lambda: (kernels.set_isa("scalar"), kernels.int8_dot_set(False)))
        for switch in switches:
            kernels.int8_dot_set(True)
            switch()
            want = kernels.Decoder(kernels.DecodeWeights(cfg, P, int8=int8, embed_proj=False))
            got = kernels.Decoder(w)
            for tok in (3, 0, 40, 7):
                want.step(tok)
                got.step(tok)
            assert np.array_equal(got.logits, want.logits), kernels.isa_active()
        kernels.int8_dot_set(True)
        kernels.set_isa("scalar")
        w.repack()
        assert np.array_equal(logits(w), plain)
    finally:
        kernels.set_isa(before)
        kernels.int8_dot_set(dot_before)


def test_embed_proj_table_has_a_size_limit(monkeypatch):
    """Past EMBED_PROJ_MAX_BYTES no table is built, and the step still decodes."""
    cfg = CONFIGS["dense"]
    _, P = make(cfg, seed=2)
    monkeypatch.setattr(kernels, "EMBED_PROJ_MAX_BYTES", 0)
    w = kernels.DecodeWeights(cfg, P)
    assert w.embed_proj is None
    dec = kernels.Decoder(w)
    dec.step(3)
    want, _ = np_step(P, cfg, 3, np.zeros((cfg.L, cfg.X, cfg.H)))
    np.testing.assert_allclose(dec.logits, want, rtol=2e-4, atol=2e-4)


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


def test_greedy_is_argmax_lowest_tie(isa):
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


def test_banned_ids_never_sampled(isa):
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
    """The distribution ss_sample should draw from: the numpy twin (float64)."""
    return ref.sample_distribution(x, T, k, p, allowed)



@pytest.mark.parametrize("T,k,p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 8, 0.7)])
def test_sampling_distribution(isa, T, k, p):
    """Empirical frequencies match top-k / top-p / temperature computed in numpy."""
    V = 12
    x = np.array([2.0, 1.5, 1.5, 0.3, -0.2, 1.0, 0.9, -1.0, 0.1, 0.5, 2.1, -3.0], np.float32)
    want = _np_distribution(x, T, k, p)
    r = kernels.Rng(123)
    n = 20000
    counts = np.bincount([kernels.sample(x, r, T, k, p) for _ in range(n)], minlength=V)
    assert np.all(counts[want == 0] == 0)
    np.testing.assert_allclose(counts / n, want, atol=0.015)


@pytest.mark.parametrize("T,k,p", [(0.8, 40, 0.95), (1.0, 0, 1.0), (1.2, 0, 0.9), (0.7, 5, 1.0),
                                   (0.0, 40, 0.95)])
def test_every_isa_draws_the_same_tokens(T, k, p):
    """ss_sample is built into every kernel table with its own flags: for the same logits and
    seed every instruction set draws exactly the same ids (the scalar table's)."""
    V = 850
    rows = [_logits(V, seed=s, scale=3.0) for s in range(40)]
    allowed = np.ones(V, np.uint8)
    allowed[[0, 3, 400]] = 0
    before, draws = kernels.isa_active(), {}
    try:
        for name in kernels.isa_available():
            kernels.set_isa(name)
            r = kernels.Rng(11)
            draws[name] = [kernels.sample(x, r, T, k, p, allowed) for x in rows for _ in range(5)]
    finally:
        kernels.set_isa(before)
    for name, got in draws.items():
        assert got == draws["scalar"], name


@pytest.mark.parametrize("T,k,p", [(1.0, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.9), (0.0, 0, 1.0),
                                   (0.8, 40, 0.95), (1.0, 1, 1.0)])
def test_nan_logits_are_never_drawn(T, k, p):
    """A NaN logit (a damaged model) is treated as banned: never drawn, never an id outside the
    vocabulary (the sampler once drew NaN ids, and past the end from an unset workspace), and
    every instruction set draws the same ids."""
    rs = np.random.default_rng(1)
    rows = []
    for _ in range(60):
        x = rs.standard_normal(50).astype(np.float32)
        x[rs.integers(0, 50, 10)] = np.nan
        rows.append(x)
    before, draws = kernels.isa_active(), {}
    try:
        for name in kernels.isa_available():
            kernels.set_isa(name)
            r = kernels.Rng(5)
            draws[name] = [kernels.sample(x, r, T, k, p) for x in rows for _ in range(4)]
    finally:
        kernels.set_isa(before)
    got = draws["scalar"]
    assert all(0 <= t < 50 for t in got)
    assert not any(np.isnan(rows[i // 4][t]) for i, t in enumerate(got))
    for name, ids in draws.items():
        assert ids == got, name
    x = np.full(8, np.nan, np.float32)
    x[5] = -np.inf
    assert kernels.sample(x, kernels.Rng(1), 1.0, 3, 0.9) == 0   # nothing finite: the first id


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


# ---- the candidate's soft cap and tied embeddings ----------------------------------------------
@pytest.mark.parametrize("cap", [0.5, 4.0])
def test_capped_step_matches_numpy(isa, cap):
    cfg = CONFIGS["proj-topk"]
    _, P = make(cfg, seed=11, bias_scale=1.5)
    w = kernels.DecodeWeights(CappedConfig(cfg, cap), P)
    dec = kernels.Decoder(w)
    h = np.zeros((cfg.L, cfg.X, cfg.H))
    for t, tok in enumerate(np.random.default_rng(3).integers(0, cfg.V, size=15)):
        want, h = np_step(P, cfg, int(tok), h, cap)
        dec.step(int(tok))
        np.testing.assert_allclose(dec.state, h, rtol=2e-4, atol=2e-5, err_msg="t=%d" % t)
        np.testing.assert_allclose(dec.logits, want, rtol=2e-4, atol=2e-4, err_msg="t=%d" % t)
    assert np.all(dec.state <= cap + 1e-6)          # every candidate is below cap


def test_cap_zero_is_plain_gelu_bit_for_bit(isa):
    cfg = CONFIGS["topk"]
    _, P = make(cfg, seed=12)
    a = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    b = kernels.Decoder(kernels.DecodeWeights(CappedConfig(cfg, 0.0), P))
    for tok in (1, 2, 3, 30):
        a.step(tok)
        b.step(tok)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.state, b.state)


def test_cap_bounds_a_state_that_grows_without_it():
    """With large recurrent weights the GELU state grows past any bound; a cap holds it."""
    cfg = ModelConfig(V=11, C=8, H=8, L=1, X=1, K=1)
    _, P = make(cfg, seed=13)
    P["l0.Wch"][...] = 3.0 * np.eye(cfg.H, dtype=np.float32)
    P["l0.bc"][...] = 1.0
    P["l0.bz"][...] = 5.0
    free = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    capped = kernels.Decoder(kernels.DecodeWeights(CappedConfig(cfg, 4.0), P))
    for _ in range(30):
        free.step(1)
        capped.step(1)
    assert np.max(free.state) > 1e6
    assert np.max(capped.state) <= 4.0


class CappedConfig:
    """A ModelConfig with a `cap` (until ModelConfig has the field): attributes pass through."""

    def __init__(self, cfg, cap):
        self._cfg, self.cap = cfg, cap

    def __getattr__(self, name):
        return getattr(self._cfg, name)


def test_tied_head_uses_the_embedding(isa):
    cfg = CONFIGS["dense"]                           # C == H
    _, P = make(cfg, seed=14)
    P = {k: v for k, v in P.items() if k != "Wo"}    # tied: no Wo, the head is WE
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    h = np.zeros((cfg.L, cfg.X, cfg.H))
    for tok in (3, 4, 5):
        want, h = np_step(P, cfg, tok, h)
        dec.step(tok)
        np.testing.assert_allclose(dec.logits, want, rtol=2e-4, atol=2e-4)


def test_tied_head_needs_c_equal_h():
    cfg = CONFIGS["proj-dense"]
    _, P = make(cfg)
    P = {k: v for k, v in P.items() if k != "Wo"}
    with pytest.raises(KernelArgumentError, match="C == H"):
        kernels.DecodeWeights(cfg, P)


# ---- the generation loop in C against the Python loop ------------------------------------------
def python_generate(dec, ids, max_tokens, rng, T, k, p, eos):
    """The token loop of Model.generate / ChatSession (sample.py) before the C loop, one Python
    call per step and per draw: ids out."""
    for t in ids[:-1]:
        dec.step(t, head=False)
    dec.step(ids[-1])
    out = []
    for _ in range(max_tokens):
        tok = kernels.sample(dec.logits, rng, T, k, p, dec._allowed)
        if tok == eos:
            break
        out.append(tok)
        dec.step(tok)
    return out


def c_generate(gen, ids, max_tokens):
    return [t for chunk in gen.generate(ids, max_tokens) for t in chunk]


SETTINGS = [(0.8, 40, 0.95), (1.0, 0, 1.0), (0.0, 40, 0.95), (1.3, 5, 0.7), (0.7, 0, 0.5)]


@pytest.mark.parametrize("int8", [False, True], ids=["float32", "int8"])
@pytest.mark.parametrize("name", ["topk", "proj-dense", "default-k2"])
def test_c_loop_equals_python_loop(isa, name, int8):
    cfg = CONFIGS[name]
    _, P = make(cfg, seed=21)
    w = kernels.DecodeWeights(cfg, P, int8=int8)
    allowed = np.ones(cfg.V, np.uint8)
    allowed[[0, 2]] = 0
    eos = 1
    prompt = [int(t) for t in np.random.default_rng(5).integers(3, cfg.V, size=6)]
    for si, (T, k, p) in enumerate(SETTINGS):
        for chunk in (1, 7, 64):
            a, b = kernels.Decoder(w, allowed), kernels.Decoder(w, allowed)
            ra, rb = kernels.Rng(100 + si), kernels.Rng(100 + si)
            want = python_generate(a, prompt, 40, ra, T, k, p, eos)
            gen = kernels.Generator(b, rb, T, k, p, eos=eos, chunk=chunk)
            got = c_generate(gen, prompt, 40)
            assert got == want, (T, k, p, chunk)
            assert gen.status == ("eos" if len(got) < 40 else "limit")
            np.testing.assert_array_equal(b.state, a.state)
            assert rb.state[0] == ra.state[0]          # the generator went on by as many draws


def test_c_loop_multi_turn_like_chat(isa):
    """Turns fed one after another on one state and one random stream, with the turn-closing
    tokens fed between them (as ChatSession does), give the Python loop's ids turn by turn."""
    cfg = CONFIGS["topk"]
    _, P = make(cfg, seed=22)
    w = kernels.DecodeWeights(cfg, P)
    a, b = kernels.Decoder(w), kernels.Decoder(w)
    ra, rb = kernels.Rng(7), kernels.Rng(7)
    gen = kernels.Generator(b, rb, 1.1, 10, 0.9, eos=4, chunk=5)
    rng = np.random.default_rng(1)
    for turn in range(6):
        ids = [int(t) for t in rng.integers(5, cfg.V, size=3 + turn)]
        want = python_generate(a, ids, 25, ra, 1.1, 10, 0.9, 4)
        got = c_generate(gen, ids, 25)
        assert got == want, turn
        for t in (4, 9):                               # [EOS] \n closing the turn
            a.step(t, head=False)
            b.step(t, head=False)
    np.testing.assert_array_equal(a.state, b.state)


def test_c_loop_stops_on_request():
    cfg = CONFIGS["dense"]
    _, P = make(cfg, seed=23)
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    gen = kernels.Generator(dec, kernels.Rng(1), 1.0, 0, 1.0, chunk=4)
    it = gen.generate([1, 2, 3], 1000)
    first = next(it)
    assert len(first) == 4 and gen.status == "running"
    gen.stop()
    assert list(it) == [] and gen.status == "stopped"
    # a stop request from another thread while C runs: the loop ends early
    gen2 = kernels.Generator(dec, kernels.Rng(1), 1.0, 0, 1.0, chunk=1 << 20)
    timer = threading.Timer(0.05, gen2.stop)
    timer.start()
    n = sum(len(c) for c in gen2.generate([1], 1 << 30))
    timer.join()
    assert gen2.status == "stopped" and 0 < n < 1 << 30
    # the next prompt runs again
    assert len(c_generate(gen, [5], 3)) == 3 and gen.status == "limit"


def test_c_loop_zero_tokens_feeds_the_prompt():
    cfg = CONFIGS["dense"]
    _, P = make(cfg, seed=24)
    w = kernels.DecodeWeights(cfg, P)
    a, b = kernels.Decoder(w), kernels.Decoder(w)
    assert c_generate(kernels.Generator(b, kernels.Rng(0), 1.0, 0, 1.0), [3, 4], 0) == []
    a.step(3, head=False)
    a.step(4)
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.logits, b.logits)


def test_generator_argument_errors():
    cfg = CONFIGS["dense"]
    _, P = make(cfg)
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    with pytest.raises(KernelArgumentError, match="eos"):
        kernels.Generator(dec, kernels.Rng(0), 1.0, 0, 1.0, eos=cfg.V)
    with pytest.raises(KernelArgumentError, match="top_p"):
        kernels.Generator(dec, kernels.Rng(0), 1.0, 0, 0.0)
    gen = kernels.Generator(dec, kernels.Rng(0), 1.0, 0, 1.0)
    with pytest.raises(KernelArgumentError, match="outside"):
        list(gen.generate([0, cfg.V], 5))
    with pytest.raises(KernelArgumentError, match="non-empty"):
        list(gen.generate([], 5))


# ---- sampling and its generator against the numpy twins ----------------------------------------
def test_rng_matches_reference_splitmix64():
    r = kernels.Rng(12345)
    state = 12345
    for _ in range(50):
        state, want = ref.rng_uniform(state)
        assert r.uniform() == want
    assert int(r.state[0]) == state


@pytest.mark.parametrize("k", [1, 3, 5, 40])
def test_top_k_ties_keep_the_lowest_ids(k):
    """Many equal logits around the k-th (and -0.0 == +0.0): the support is exactly the k best by
    (logit descending, id ascending), as ref.sample_distribution says."""
    V = 120
    x = np.zeros(V, np.float32)
    x[::7] = 1.0
    x[3::11] = -0.0
    x[50] = 2.0
    allowed = np.ones(V, np.uint8)
    allowed[7] = 0
    want = ref.sample_distribution(x, 5.0, k, 1.0, allowed)
    r = kernels.Rng(3)
    got = {kernels.sample(x, r, 5.0, k, 1.0, allowed) for _ in range(3000)}
    assert got == set(np.flatnonzero(want))


@pytest.mark.parametrize("used", [1, 5, 16, 17])
def test_stopping_early_settles_like_the_python_loop(isa, used):
    """C runs ahead by a chunk; when the caller stops after `used` tokens, settle() leaves the
    state, the logits and the generator exactly where the Python loop stopping there would."""
    cfg = CONFIGS["topk"]
    _, P = make(cfg, seed=25)
    w = kernels.DecodeWeights(cfg, P)
    a, b = kernels.Decoder(w), kernels.Decoder(w)
    ra, rb = kernels.Rng(3), kernels.Rng(3)
    want = python_generate(a, [1, 2, 3], used, ra, 1.0, 0, 1.0, None)
    toks = kernels.Generator(b, rb, 1.0, 0, 1.0, chunk=16).tokens([1, 2, 3], 100)
    got = [next(toks) for _ in range(used)]
    toks.close()
    assert got == want
    np.testing.assert_array_equal(b.state, a.state)
    if used:
        np.testing.assert_array_equal(b.logits, a.logits)
    assert rb.state[0] == ra.state[0]
