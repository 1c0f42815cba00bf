"""int8 weights for decoding (csrc/decode.c, simd_*.h) against their numpy twins in ref.py.

Quantisers: bit-exact against ref.quantize_rows / ref.quantize_x. Kernels: decode_matvec (float32
panels) and decode_matvec_q8 (int8 panels, exact integer block sums) against ref on awkward sizes
for every instruction set usable here, with and without the dot-product instructions (VNNI, ARM
SDOT). The int8 step as a whole: against ref.decode_step_q8 and close to the float32 step. NEON
(aarch64 with and without SDOT, 32-bit ARM) is checked under qemu by tests/test_isa_qemu.py
(tools/kernel_crosscheck.c compares every kernel, these included, with the scalar twin).
"""
import numpy as np
import pytest

from shoestring import kernels, ref
from shoestring.errors import KernelArgumentError
from shoestring.params import ModelConfig, ParamLayout

SIZES = [1, 3, 15, 16, 17, 31, 32, 33, 64, 96, 100]


@pytest.fixture(params=[True, False], ids=["dot", "nodot"])
def dot(request):
    """Run with the dot-product instructions allowed (where the CPU has them) and forbidden."""
    was = kernels.int8_dot_set(request.param)
    yield request.param
    kernels.int8_dot_set(was)


def _mat(OC, C, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((OC, C))).astype(np.float32)


# ---- quantisers: exact -------------------------------------------------------------------------
@pytest.mark.parametrize("C", SIZES)
def test_quantize_rows_is_exactly_the_reference(C):
    W = _mat(9, C, C, scale=3.0)
    W[2] = 0.0                                       # an all-zero row: scale 0, q 0
    W[4, 0] = -W[4].__abs__().max() * 2              # the extreme is negative
    q, s = np.empty(W.shape, np.int8), np.empty(9, np.float32)
    kernels.quantize_rows(q, s, W)
    rq, rs = ref.quantize_rows(W)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)
    assert s[2] == 0 and not q[2].any()
    assert q.min() >= -127 and np.all(np.abs(q).max(axis=1)[s > 0] == 127)
    # the error of a row is at most half a step
    assert np.all(np.abs(q * s[:, None] - W) <= 0.5 * s[:, None] * (1 + 1e-5))


def test_quantize_rows_keeps_leading_axes():
    W = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
    q, s = np.empty(W.shape, np.int8), np.empty((3, 5), np.float32)
    kernels.quantize_rows(q, s, W)
    rq, rs = ref.quantize_rows(W)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)


@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "inf", "zeros", "subnormal", "huge",
                                  "half-nan"])
def test_quantize_x_simd_blocks_are_the_scalar_twin(kind):
    """ss_quantize_x (whole blocks on SSE2 on x86-64) gives the bits of ss_quantize_x_scalar,
    edge cases included: NaN left out of the max and quantised to 0, an infinite max (all 0),
    ties rounding half to even, a subnormal max (127/max overflows)."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    for C in (1, 31, 32, 33, 64, 96, 97, 200):
        for _ in range(20):
            x = (2 * rng.standard_normal(C)).astype(np.float32)
            if kind == "ties":
                x = np.round(x * 127 / np.abs(x).max() * 2) / 2 * np.abs(x).max() / 127
                x = x.astype(np.float32)
            elif kind == "nan":
                x[rng.integers(0, C)] = np.nan
            elif kind == "inf":
                x[rng.integers(0, C)] = rng.choice([np.inf, -np.inf])
            elif kind == "zeros":
                x[:] = 0.0
            elif kind == "subnormal":
                x = (x * np.float32(1e-40)).astype(np.float32)
            elif kind == "huge":
                x = (x * np.float32(1e37)).astype(np.float32)
            elif kind == "half-nan":
                x[: C // 2] = np.nan
            Cp = kernels.q8_width(C)
            out = []
            for scalar in (False, True):
                xq = np.full(Cp, 99, np.int8)
                xs, xm = np.full(Cp // 32, 7, np.float32), np.full(Cp // 32, 7, np.int32)
                kernels.quantize_x(xq, xs, xm, x, scalar=scalar)
                out.append((xq, xs.view(np.int32), xm))
            for a, b in zip(*out):
                np.testing.assert_array_equal(a, b, err_msg="%s C=%d" % (kind, C))


@pytest.mark.parametrize("C", SIZES)
def test_quantize_x_is_exactly_the_reference(C):
    x = (2 * np.random.default_rng(C).standard_normal(C)).astype(np.float32)
    Cp = kernels.q8_width(C)
    assert Cp % 32 == 0 and C <= Cp < C + 32
    xq, xs, xm = np.empty(Cp, np.int8), np.empty(Cp // 32, np.float32), np.empty(Cp // 32, np.int32)
    kernels.quantize_x(xq, xs, xm, x)
    rq, rs, rm = ref.quantize_x(x)
    np.testing.assert_array_equal(xq, rq)
    np.testing.assert_array_equal(xs, rs)
    np.testing.assert_array_equal(xm, rm)


# ---- matrix-vector kernels, every instruction set ----------------------------------------------
@pytest.mark.parametrize("OC", [1, 5, 16, 17, 40, 70])
@pytest.mark.parametrize("C", [1, 7, 16, 33, 96])
def test_decode_matvec_matches_numpy(isa, OC, C):
    W, x, b = _mat(OC, C, 1), _mat(1, C, 2)[0], _mat(1, OC, 3)[0]
    pk = np.empty(kernels.panel_size(OC, C), np.float32)
    kernels.panel_pack(pk, W)
    np.testing.assert_array_equal(pk, ref.panel_pack(W))
    y = np.empty(OC, np.float32)
    kernels.decode_matvec(y, pk, x, b, C, OC)
    np.testing.assert_allclose(y, W.astype(np.float64) @ x + b, rtol=1e-5, atol=1e-5)
    kernels.decode_matvec(y, pk, x, None, C, OC)
    np.testing.assert_allclose(y, W.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("OC", [1, 5, 16, 17, 40, 70])
@pytest.mark.parametrize("C", [1, 7, 32, 33, 96, 130])
def test_decode_matvec_q8_matches_numpy(isa, dot, OC, C):
    W, x, b = _mat(OC, C, 4), _mat(1, C, 5, scale=2.0)[0], _mat(1, OC, 6)[0]
    q, s = ref.quantize_rows(W)
    pq = np.empty(kernels.panel_q8_size(OC, C), np.int8)
    ps = np.empty(kernels.panel_q8_rows(OC), np.float32)
    kernels.panel_pack_q8(pq, ps, q, s)
    Cp = kernels.q8_width(C)
    xq, xs, xm = np.empty(Cp, np.int8), np.empty(Cp // 32, np.float32), np.empty(Cp // 32, np.int32)
    kernels.quantize_x(xq, xs, xm, x)
    y = np.empty(OC, np.float32)
    kernels.decode_matvec_q8(y, pq, ps, xq, xs, xm, b, C, OC)
    want = ref.matvec_q8(q, s, x, b)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # and it approximates the float32 product to int8 precision
    exact = W.astype(np.float64) @ x + b
    assert np.max(np.abs(y - exact)) < 0.03 * np.abs(W @ x).max() + 1e-6


def test_extreme_values_do_not_saturate(isa, dot):
    """All weights and inputs at +-127 (the largest int8 products, where 16-bit pair sums are
    closest to overflow): the exact integer sums come out."""
    OC, C = 16, 64
    W = np.where(np.random.default_rng(0).random((OC, C)) < 0.5, -1.0, 1.0).astype(np.float32)
    W[3] = 1.0
    x = np.ones(C, np.float32)
    x[::3] = -1.0
    q, s = ref.quantize_rows(W)
    pq = np.empty(kernels.panel_q8_size(OC, C), np.int8)
    ps = np.empty(kernels.panel_q8_rows(OC), np.float32)
    kernels.panel_pack_q8(pq, ps, q, s)
    xq, xs, xm = np.empty(C, np.int8), np.empty(2, np.float32), np.empty(2, np.int32)
    kernels.quantize_x(xq, xs, xm, x)
    y = np.empty(OC, np.float32)
    kernels.decode_matvec_q8(y, pq, ps, xq, xs, xm, None, C, OC)
    np.testing.assert_allclose(y, W.astype(np.float64) @ x, rtol=1e-6, atol=1e-5)


def test_int8_kernel_names():
    before = kernels.isa_active()
    try:
        for name in kernels.isa_available():
            kernels.set_isa(name)
            was = kernels.int8_dot_set(False)
            assert kernels.int8_kernel() == {"scalar": "scalar", "avx2": "avx2",
                                             "avx512": "avx2", "neon": "neon"}[name]
            kernels.int8_dot_set(True)
            assert kernels.int8_kernel().split("-")[0] == name.replace("avx512", "avx2") \
                or kernels.int8_kernel() in ("avx512-vnni", "neon-dotprod")
            kernels.int8_dot_set(was)
    finally:
        kernels.set_isa(before)
    line = kernels.int8_info()
    assert line.startswith("scalar") and kernels.int8_kernel() in line
    if "avx512" in kernels.isa_available() and "avx512_vnni" in open("/proc/cpuinfo").read():
        assert "avx512-vnni" in line


# ---- the int8 step -------------------------------------------------------------------------------
CONFIGS = {
    "topk": ModelConfig(V=37, C=16, H=16, L=2, X=5, K=2),
    "proj-dense": ModelConfig(V=33, C=9, H=17, L=2, X=3, K=3),
    "awkward": ModelConfig(V=17, C=33, H=40, L=1, X=7, K=3),
    "default": ModelConfig(),
}


def _params(cfg, seed):
    lay = ParamLayout(cfg)
    flat = lay.init(seed)
    P = lay.views(flat)
    rng = np.random.default_rng(seed)
    for name in lay.names():
        if name.split(".")[-1].startswith("b"):
            P[name][...] = (0.3 * rng.standard_normal(P[name].shape)).astype(np.float32)
    return flat, P


@pytest.mark.parametrize("name", list(CONFIGS))
def test_int8_step_matches_numpy_int8_reference(isa, dot, name):
    cfg = CONFIGS[name]
    _, P = _params(cfg, 3)
    dec = kernels.Decoder(kernels.DecodeWeights(cfg, P, int8=True))
    q8 = ref.q8_model(P, cfg)
    h = np.zeros((cfg.L, cfg.X, cfg.H))
    for t, tok in enumerate(np.random.default_rng(1).integers(0, cfg.V, size=6)):
        want, h = ref.decode_step_q8(P, cfg, int(tok), h, q8=q8)
        dec.step(int(tok))
        # the vectors are quantised from float32 values that differ from numpy's float64 ones in
        # the last bits, which can move a rounding by one step: close, not exact (the kernels
        # themselves are checked exactly above)
        scale = np.abs(want).max()
        np.testing.assert_allclose(dec.logits, want, atol=0.01 * scale, err_msg="t=%d" % t)
        np.testing.assert_allclose(dec.state, h, atol=0.01 * max(1.0, np.abs(h).max()))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_int8_step_is_close_to_float32(isa, name):
    """Quantised paths against float32: logits within a few percent, the same favourite token
    almost always, over a run of tokens where the states drift apart."""
    cfg = CONFIGS[name]
    _, P = _params(cfg, 4)
    f = kernels.Decoder(kernels.DecodeWeights(cfg, P))
    q = kernels.Decoder(kernels.DecodeWeights(cfg, P, int8=True))
    same, errs = 0, []
    toks = np.random.default_rng(2).integers(0, cfg.V, size=40)
    for tok in toks:
        f.step(int(tok))
        q.step(int(tok))
        errs.append(np.abs(q.logits - f.logits).max() / np.abs(f.logits).max())
        same += int(np.argmax(q.logits) == np.argmax(f.logits))
    # typically 1%; a top-K routing choice flipped by the rounding costs a few percent at a step
    assert np.median(errs) < 0.02 and max(errs) < 0.1, errs
    assert same >= 0.85 * len(toks), same


def test_int8_isas_agree():
    cfg = CONFIGS["default"]
    _, P = _params(cfg, 5)
    w = kernels.DecodeWeights(cfg, P, int8=True)
    before, outs = kernels.isa_active(), {}
    try:
        for name in kernels.isa_available():
            kernels.set_isa(name)
            for d in (True, False):
                was = kernels.int8_dot_set(d)
                dec = kernels.Decoder(w)
                for tok in (4, 8, 15, 16, 23, 42):
                    dec.step(tok)
                outs[name, d] = dec.logits.copy()
                kernels.int8_dot_set(was)
    finally:
        kernels.set_isa(before)
    base = outs["scalar", True]
    for key, v in outs.items():
        np.testing.assert_allclose(v, base, rtol=1e-3, atol=1e-3 * np.abs(base).max(), err_msg=str(key))


def test_int8_weights_are_a_quarter():
    cfg = CONFIGS["default"]
    _, P = _params(cfg, 6)
    f, q = kernels.DecodeWeights(cfg, P), kernels.DecodeWeights(cfg, P, int8=True)
    assert f.weight_bytes() / q.weight_bytes() > 3.5


def test_given_int8_rows_pack_identically_and_repack_follows(isa):
    cfg = CONFIGS["proj-dense"]
    flat, P = _params(cfg, 7)
    a = kernels.DecodeWeights(cfg, P, int8=True)
    b = kernels.DecodeWeights(cfg, P, q8=ref.q8_model(P, cfg))
    np.testing.assert_array_equal(a.packed, b.packed)
    np.testing.assert_array_equal(a.scales, b.scales)
    flat *= np.float32(0.5)
    a.repack()                                       # quantised again from the new values
    dec = kernels.Decoder(a)
    dec.step(3)
    want, _ = ref.decode_step_q8(P, cfg, 3, np.zeros((cfg.L, cfg.X, cfg.H)))
    np.testing.assert_allclose(dec.logits, want, atol=0.01 * np.abs(want).max())


def test_int8_argument_errors():
    cfg = CONFIGS["topk"]
    _, P = _params(cfg, 8)
    q8 = ref.q8_model(P, cfg)
    del q8["l1.Wch"]
    with pytest.raises(KernelArgumentError, match="l1.Wch"):
        kernels.DecodeWeights(cfg, P, q8=q8)
    q8 = ref.q8_model(P, cfg)
    q8["Wo"] = (q8["Wo"][0].astype(np.float32), q8["Wo"][1])
    with pytest.raises(KernelArgumentError, match="int8"):
        kernels.DecodeWeights(cfg, P, q8=q8)
    y = np.empty(5, np.float32)
    with pytest.raises(KernelArgumentError, match="Wpk"):
        kernels.decode_matvec_q8(y, np.zeros(3, np.int8), np.zeros(16, np.float32),
                                 np.zeros(32, np.int8), np.zeros(1, np.float32),
                                 np.zeros(1, np.int32), None, 32, 5)


# ---- int8 models: shoestring.load(..., int8=True), the int8 export and its loader ---------------
def _golden_tool():
    import importlib.util
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "make_chat_golden", os.path.join(root, "tools", "make_chat_golden.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("int8") / "model.json")
    _golden_tool().build_checkpoint(path)
    return path


def _cli(args, stdin_text="", cwd=None):
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "shoestring"] + args, input=stdin_text,
                          capture_output=True, text=True, encoding="utf-8", timeout=120,
                          cwd=cwd or os.path.expanduser("~"))


def test_load_int8_decodes_with_int8_weights(ckpt):
    import shoestring
    f, q = shoestring.load(ckpt), shoestring.load(ckpt, int8=True)
    assert q.int8 and not f.int8 and "int8 weights" in q.describe()
    ref_w = kernels.DecodeWeights(q.cfg, q.views, int8=True)
    np.testing.assert_array_equal(q._weights.packed, ref_w.packed)
    a = q.generate("what is 2 plus 3", max_tokens=30, seed=4)
    assert a == q.generate("what is 2 plus 3", max_tokens=30, seed=4)
    assert a == "".join(q.generate("what is 2 plus 3", max_tokens=30, seed=4, stream=True))


def test_int8_export_round_trip_is_exact(ckpt, tmp_path):
    import os
    import shoestring
    out = str(tmp_path / "model.int8.json")
    r = _cli(["export", ckpt, "--int8", "--out", out])
    assert r.returncode == 0, r.stderr
    plain = str(tmp_path / "model.weights.json")
    assert _cli(["export", ckpt, "--out", plain]).returncode == 0
    assert os.path.getsize(out) < os.path.getsize(plain)     # (the tokenizer dominates here)
    g, q = shoestring.load(out), shoestring.load(ckpt, int8=True)
    assert g.int8
    np.testing.assert_array_equal(g._weights.packed, q._weights.packed)
    np.testing.assert_array_equal(g._weights.scales, q._weights.scales)
    for name in ("WE", "l0.bg", "l1.gamma", "bo"):                   # float32 parts: exact
        np.testing.assert_array_equal(g.views[name], q.views[name])
    assert g.generate("what is 1 plus 1", max_tokens=40, seed=9) == \
        q.generate("what is 1 plus 1", max_tokens=40, seed=9)
    r = _cli(["generate", out, "-p", "what is 1 plus 1", "-n", "40", "-s", "9", "-q"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == q.generate("what is 1 plus 1", max_tokens=40, seed=9) + "\n"


@pytest.mark.parametrize("damage", ["checksum", "truncated", "shape"])
def test_damaged_int8_file_is_one_clear_error(ckpt, tmp_path, damage):
    import json
    from shoestring.errors import CheckpointError
    from shoestring import inference
    out = str(tmp_path / "model.int8.json")
    assert _cli(["export", ckpt, "--int8", "--out", out]).returncode == 0
    text = open(out, encoding="ascii").read()
    if damage == "truncated":
        text = text[:len(text) // 2]
    else:
        doc = json.loads(text)
        rec = doc["int8"]["l1.Wch"]["q"]
        if damage == "checksum":
            data = rec["data"]
            rec["data"] = data[:100] + ("A" if data[100] != "A" else "B") + data[101:]
        else:
            rec["shape"] = rec["shape"][:-1] + [rec["shape"][-1] + 1]
        text = json.dumps(doc)
    open(out, "w", encoding="ascii").write(text)
    with pytest.raises(CheckpointError, match="damaged"):
        inference.load(out)
    r = _cli(["chat", out], stdin_text="hello\n")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "damaged" in r.stderr, r.stderr
    assert "--int8" in r.stderr                                    # says how to fix it
    data = tmp_path / "held.txt"
    data.write_text("[USER] hello [EOS]\n[BOT] hi [EOS]\n", encoding="utf-8")
    r = _cli(["eval", out, "--data", str(data)])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "damaged" in r.stderr, r.stderr


def test_chat_and_generate_take_int8(ckpt):
    import shoestring
    r = _cli(["generate", ckpt, "--int8", "-p", "what is 4 plus 4", "-n", "20", "-s", "3", "-q"])
    assert r.returncode == 0, r.stderr
    q = shoestring.load(ckpt, int8=True)
    assert r.stdout == q.generate("what is 4 plus 4", max_tokens=20, seed=3) + "\n"
    r = _cli(["chat", ckpt, "--int8", "-s", "1", "-q"], stdin_text="what is 2 plus 2\nhi\n")
    assert r.returncode == 0 and r.stdout.count("\n") == 2, (r.stdout, r.stderr)


def test_info_reports_int8_kernels():
    r = _cli(["info"])
    assert r.returncode == 0
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("int8 decode kernels")]
    assert line and kernels.int8_kernel() in line[0], r.stdout


# ---- `shoestring eval --int8`: the quality of the int8 decode step ----------------------------
def _eval_text():
    from shoestring.data import default_corpus_path
    with open(default_corpus_path(), encoding="utf-8") as f:
        return f.read()[:3000]


def test_decoded_score_float32_is_the_training_forward(ckpt):
    """score_decoded over float32 weights (the decode step) gives the figure of score_tokens (the
    training's forward pass) up to float32 rounding: the two paths score the same stream."""
    import shoestring
    from shoestring import evaluate
    m = shoestring.load(ckpt)
    text = _eval_text()
    ids = evaluate.encode_for_scoring(m.tokenizer, text)
    a = evaluate.score_tokens(m.cfg, m.params, ids, len(text))
    b = evaluate.score_decoded(m, ids, len(text))
    assert a["tokens"] == b["tokens"] and a["state_resets"] == b["state_resets"]
    assert b["nats"] == pytest.approx(a["nats"], rel=1e-5)
    c = evaluate.score_decoded(m, ids, len(text), window=7)      # the window changes nothing
    assert c["nats"] == pytest.approx(b["nats"], rel=1e-6)


def test_int8_score_matches_the_numpy_int8_reference(ckpt):
    """score_decoded over int8 weights against ref.decode_step_q8 token by token (float64
    log-softmax), and the int8 cost against float32 is small but not zero."""
    import shoestring
    from shoestring import evaluate
    q = shoestring.load(ckpt, int8=True)
    text = _eval_text()[:400]
    ids = evaluate.encode_for_scoring(q.tokenizer, text)
    got = evaluate.score_decoded(q, ids, len(text))
    P = q.views
    q8 = ref.q8_model(P, q.cfg)
    h = np.zeros((q.cfg.L, q.cfg.X, q.cfg.H))
    want = 0.0
    for t, nxt in zip(ids[:-1].tolist(), ids[1:].tolist()):
        lg, h = ref.decode_step_q8(P, q.cfg, t, h, cap=q.cfg.cap, q8=q8)
        want += np.log(np.exp(lg - lg.max()).sum()) + lg.max() - lg[nxt]
    assert got["tokens"] == len(ids) - 1
    assert got["nats"] == pytest.approx(want, rel=1e-3)
    f = evaluate.score_model(shoestring.load(ckpt), text)
    assert got["nats"] != f["nats"]
    assert abs(got["bits_per_char"] - f["bits_per_char"]) < 0.05


def test_eval_takes_int8_and_int8_exports(ckpt, tmp_path):
    import json
    import shoestring
    from shoestring import evaluate
    data = tmp_path / "held.txt"
    text = _eval_text()
    data.write_text(text, encoding="utf-8")
    want = evaluate.score_model(shoestring.load(ckpt, int8=True), text)
    r = _cli(["eval", ckpt, "--int8", "--data", str(data), "--json"])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["weights"] == "int8"
    assert got["bits_per_char"] == pytest.approx(want["bits_per_char"], rel=1e-12)
    out = str(tmp_path / "model.int8.json")
    assert _cli(["export", ckpt, "--int8", "--out", out]).returncode == 0
    r = _cli(["eval", out, "--data", str(data), "--json"])        # an int8 file: int8 by itself
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == got                             # the round trip is exact
    r = _cli(["eval", ckpt, "--data", str(data), "--json"])
    f32 = json.loads(r.stdout)
    assert f32["weights"] == "float32" and f32["tokens"] == got["tokens"]
    r = _cli(["eval", ckpt, "--int8", "--data", str(data)])
    assert r.returncode == 0 and "int8 weights" in r.stdout, (r.stdout, r.stderr)
