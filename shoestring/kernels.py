"""kernels.py: the only importer of the compiled module; one validating wrapper per C function.

Each wrapper checks dtype (float32), C-contiguity and shapes once, then passes raw pointers to C
(cffi's from_buffer does not check dtypes, so nothing unchecked may reach it). Errors name the
function, the argument and the expected shape in dimension letters.

SHOESTRING_ISA=scalar|avx2|avx512|neon, read at import, forces an instruction set.
"""
import os

import numpy as np

from .errors import KernelArgumentError, ShoestringError

try:
    from . import _shoestring_c
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ShoestringError(
        "the compiled extension shoestring._shoestring_c is missing (%s) "
        "(reinstall with `pip install .` so the C kernels are built)" % exc
    ) from exc

ffi = _shoestring_c.ffi
lib = _shoestring_c.lib

ISA_NAMES = ("scalar", "avx2", "avx512", "neon")


# ---- instruction-set dispatch ------------------------------------------------------------
def isa_active():
    """Name of the instruction set the kernels use now."""
    return ISA_NAMES[lib.ss_isa_active()]


def isa_compiled():
    """Names of the instruction sets compiled into this build."""
    mask = lib.ss_isa_compiled_mask()
    return [n for i, n in enumerate(ISA_NAMES) if mask & (1 << i)]


def isa_supported():
    """Names of the instruction sets this CPU can run (whether compiled in or not)."""
    mask = lib.ss_isa_cpu_mask()
    return [n for i, n in enumerate(ISA_NAMES) if mask & (1 << i)]


def isa_available():
    """Instruction sets both compiled in and supported by this CPU: the ones usable here."""
    sup = set(isa_supported())
    return [n for n in isa_compiled() if n in sup]


def set_isa(name):
    """Force an instruction set by name; raises ShoestringError when it cannot be used here."""
    if name not in ISA_NAMES:
        raise ShoestringError(
            "unknown instruction set %r (choose one of %s)" % (name, ", ".join(ISA_NAMES)))
    rc = lib.ss_isa_set(ISA_NAMES.index(name))
    if rc == -1:
        raise ShoestringError(
            "instruction set %r is not compiled into this build (available here: %s)"
            % (name, ", ".join(isa_available())))
    if rc == -2:
        raise ShoestringError(
            "this CPU does not support instruction set %r (available here: %s)"
            % (name, ", ".join(isa_available())))


def build_info():
    """The compiler and flags the extension was built with."""
    return ffi.string(lib.ss_build_info()).decode("utf-8", "replace")


_forced = os.environ.get("SHOESTRING_ISA", "").strip().lower()
if _forced:
    set_isa(_forced)


# ---- argument checking --------------------------------------------------------------------
def _arr(fn, name, a, shape, dims, dtype=np.float32, optional=False):
    """Check one array argument; return a cffi pointer to its data (NULL for an omitted optional).

    shape: tuple of ints the array must have; dims: the same in dimension letters, for messages.
    """
    if a is None:
        if optional:
            return ffi.NULL
        raise KernelArgumentError("%s: %s is required, expected shape (%s)" % (fn, name, dims))
    if not isinstance(a, np.ndarray):
        raise KernelArgumentError(
            "%s: %s must be a numpy array, got %s" % (fn, name, type(a).__name__))
    if a.dtype != dtype:
        raise KernelArgumentError(
            "%s: %s must have dtype %s, got %s (convert with .astype(np.%s))"
            % (fn, name, np.dtype(dtype).name, a.dtype, np.dtype(dtype).name))
    if not a.flags.c_contiguous:
        raise KernelArgumentError(
            "%s: %s must be C-contiguous (pass np.ascontiguousarray(%s))" % (fn, name, name))
    if tuple(a.shape) != tuple(shape):
        raise KernelArgumentError(
            "%s: %s has shape %s, expected (%s) = %s"
            % (fn, name, tuple(a.shape), dims, tuple(shape)))
    return ffi.from_buffer("float[]" if dtype == np.float32 else "void[]", a, require_writable=False)


def _out(fn, name, a, shape, dims, optional=False):
    """Like _arr for an output or accumulated gradient: must also be writable."""
    if a is not None and isinstance(a, np.ndarray) and not a.flags.writeable:
        raise KernelArgumentError("%s: %s must be writable" % (fn, name))
    return _arr(fn, name, a, shape, dims, optional=optional)


def _int(fn, name, v, minimum=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
        raise KernelArgumentError("%s: %s must be an integer >= %d, got %r" % (fn, name, minimum, v))
    return int(v)


def _rows(fn, name, a):
    """Leading dimension of a 2-D float32 array (for inferring N/C before the full check)."""
    if not isinstance(a, np.ndarray) or a.ndim != 2:
        raise KernelArgumentError("%s: %s must be a 2-D numpy array" % (fn, name))
    return a.shape


# ---- matmul -------------------------------------------------------------------------------
def matmul_forward(out, inp, W, b=None):
    """out(N,OC) = inp(N,C) . W(OC,C)^T + b(OC)."""
    fn = "matmul_forward"
    N, C = _rows(fn, "inp", inp)
    OC = _rows(fn, "W", W)[0]
    p_out = _out(fn, "out", out, (N, OC), "N,OC")
    p_inp = _arr(fn, "inp", inp, (N, C), "N,C")
    p_W = _arr(fn, "W", W, (OC, C), "OC,C")
    p_b = _arr(fn, "b", b, (OC,), "OC", optional=True)
    lib.ss_matmul_forward(p_out, p_inp, p_W, p_b, N, C, OC)
    return out


def matmul_backward(dinp, dW, db, dout, inp, W):
    """dinp(N,C) += dout . W;  dW(OC,C) += dout^T . inp;  db(OC) += sum_N dout (None skips)."""
    fn = "matmul_backward"
    N, C = _rows(fn, "inp", inp)
    OC = _rows(fn, "W", W)[0]
    p_dinp = _out(fn, "dinp", dinp, (N, C), "N,C", optional=True)
    p_dW = _out(fn, "dW", dW, (OC, C), "OC,C", optional=True)
    p_db = _out(fn, "db", db, (OC,), "OC", optional=True)
    p_dout = _arr(fn, "dout", dout, (N, OC), "N,OC")
    p_inp = _arr(fn, "inp", inp, (N, C), "N,C")
    p_W = _arr(fn, "W", W, (OC, C), "OC,C")
    lib.ss_matmul_backward(p_dinp, p_dW, p_db, p_dout, p_inp, p_W, N, C, OC)


# ---- RMSNorm ------------------------------------------------------------------------------
def rmsnorm_forward(out, rstd, inp, gain, eps):
    """out(N,H) = gain(H) * inp * rstd(N), rstd = 1/sqrt(mean(inp^2) + eps)."""
    fn = "rmsnorm_forward"
    N, H = _rows(fn, "inp", inp)
    p_out = _out(fn, "out", out, (N, H), "N,H")
    p_rstd = _out(fn, "rstd", rstd, (N,), "N")
    p_inp = _arr(fn, "inp", inp, (N, H), "N,H")
    p_gain = _arr(fn, "gain", gain, (H,), "H")
    lib.ss_rmsnorm_forward(p_out, p_rstd, p_inp, p_gain, N, H, float(eps))
    return out


def rmsnorm_backward(dinp, dgain, dout, inp, gain, rstd):
    """dinp(N,H) += ..., dgain(H) += ... (None skips)."""
    fn = "rmsnorm_backward"
    N, H = _rows(fn, "inp", inp)
    p_dinp = _out(fn, "dinp", dinp, (N, H), "N,H", optional=True)
    p_dgain = _out(fn, "dgain", dgain, (H,), "H", optional=True)
    p_dout = _arr(fn, "dout", dout, (N, H), "N,H")
    p_inp = _arr(fn, "inp", inp, (N, H), "N,H")
    p_gain = _arr(fn, "gain", gain, (H,), "H")
    p_rstd = _arr(fn, "rstd", rstd, (N,), "N")
    lib.ss_rmsnorm_backward(p_dinp, p_dgain, p_dout, p_inp, p_gain, p_rstd, N, H)


# ---- AdamW --------------------------------------------------------------------------------
def adamw_step(params, grads, m, v, n_decay, lr, beta1, beta2, eps, weight_decay,
               grad_scale, bias_correction1, bias_correction2):
    """One AdamW step over flat float32 buffers of equal length n; decay on [0, n_decay)."""
    fn = "adamw_step"
    if not isinstance(params, np.ndarray) or params.ndim != 1:
        raise KernelArgumentError("%s: params must be a 1-D numpy array (n)" % fn)
    n = params.shape[0]
    p_p = _out(fn, "params", params, (n,), "n")
    p_g = _arr(fn, "grads", grads, (n,), "n")
    p_m = _out(fn, "m", m, (n,), "n")
    p_v = _out(fn, "v", v, (n,), "n")
    n_decay = _int(fn, "n_decay", n_decay, minimum=0)
    if n_decay > n:
        raise KernelArgumentError("%s: n_decay=%d exceeds n=%d" % (fn, n_decay, n))
    lib.ss_adamw_step(p_p, p_g, p_m, p_v, n, n_decay, float(lr), float(beta1), float(beta2),
                      float(eps), float(weight_decay), float(grad_scale),
                      float(bias_correction1), float(bias_correction2))


def sumsq(x):
    """Sum of squares of a float32 array (any shape, C-contiguous), accumulated in float64."""
    fn = "sumsq"
    if not isinstance(x, np.ndarray):
        raise KernelArgumentError("%s: x must be a numpy array" % fn)
    p = _arr(fn, "x", x, x.shape, "...")
    return float(lib.ss_sumsq(p, x.size))


# ---- elementwise ----------------------------------------------------------------------------
def _same(fn, names, arrays, out_names=()):
    first = arrays[0]
    if not isinstance(first, np.ndarray):
        raise KernelArgumentError("%s: %s must be a numpy array" % (fn, names[0]))
    ptrs = []
    for name, a in zip(names, arrays):
        check = _out if name in out_names else _arr
        ptrs.append(check(fn, name, a, first.shape, "same shape as %s" % names[0]))
    return ptrs, first.size


def sigmoid_forward(out, inp):
    ptrs, n = _same("sigmoid_forward", ("inp", "out"), (inp, out), ("out",))
    lib.ss_sigmoid_forward(ptrs[1], ptrs[0], n)
    return out


def sigmoid_backward(dinp, dout, out):
    """dinp += dout * out * (1 - out)."""
    ptrs, n = _same("sigmoid_backward", ("out", "dout", "dinp"), (out, dout, dinp), ("dinp",))
    lib.ss_sigmoid_backward(ptrs[2], ptrs[1], ptrs[0], n)


def gelu_forward(out, inp):
    """Exact GELU: out = inp * Phi(inp)."""
    ptrs, n = _same("gelu_forward", ("inp", "out"), (inp, out), ("out",))
    lib.ss_gelu_forward(ptrs[1], ptrs[0], n)
    return out


def gelu_backward(dinp, dout, inp):
    """dinp += dout * (Phi(inp) + inp * phi(inp))."""
    ptrs, n = _same("gelu_backward", ("inp", "dout", "dinp"), (inp, dout, dinp), ("dinp",))
    lib.ss_gelu_backward(ptrs[2], ptrs[1], ptrs[0], n)


def softmax_forward(out, inp):
    """Row softmax: out(N,X) = softmax(inp(N,X)) over X."""
    fn = "softmax_forward"
    N, X = _rows(fn, "inp", inp)
    p_out = _out(fn, "out", out, (N, X), "N,X")
    p_inp = _arr(fn, "inp", inp, (N, X), "N,X")
    lib.ss_softmax_forward(p_out, p_inp, N, X)
    return out


def softmax_backward(dinp, dout, out):
    """dinp(N,X) += out * (dout - sum(dout * out))."""
    fn = "softmax_backward"
    N, X = _rows(fn, "out", out)
    p_dinp = _out(fn, "dinp", dinp, (N, X), "N,X")
    p_dout = _arr(fn, "dout", dout, (N, X), "N,X")
    p_out = _arr(fn, "out", out, (N, X), "N,X")
    lib.ss_softmax_backward(p_dinp, p_dout, p_out, N, X)


# ---- cross-entropy and embedding ----------------------------------------------------------------
def _tokens(fn, name, t, N, V):
    """Check an int32 token array of length N with every value in [0, V)."""
    if not isinstance(t, np.ndarray) or t.dtype != np.int32:
        raise KernelArgumentError("%s: %s must be a numpy int32 array of shape (N,)" % (fn, name))
    if not t.flags.c_contiguous or t.shape != (N,):
        raise KernelArgumentError(
            "%s: %s must be C-contiguous with shape (N,) = (%d,), got %s" % (fn, name, N, t.shape))
    if N and (int(t.min()) < 0 or int(t.max()) >= V):
        raise KernelArgumentError("%s: %s has ids outside [0, V) = [0, %d)" % (fn, name, V))
    return ffi.from_buffer("int32_t[]", t)


def crossentropy_forward(losses, dlogits, logits, targets, dscale=1.0):
    """losses(N) = -log softmax(logits(N,V))[targets]; if dlogits is given it is SET to
    (softmax - onehot) * dscale (the fused backward)."""
    fn = "crossentropy_forward"
    N, V = _rows(fn, "logits", logits)
    p_l = _out(fn, "losses", losses, (N,), "N")
    p_d = _out(fn, "dlogits", dlogits, (N, V), "N,V", optional=True)
    p_x = _arr(fn, "logits", logits, (N, V), "N,V")
    p_t = _tokens(fn, "targets", targets, N, V)
    lib.ss_crossentropy_forward(p_l, p_d, p_x, p_t, N, V, float(dscale))
    return losses


def embedding_forward(out, tokens, WE):
    """out(N,C) = WE(V,C)[tokens(N)]."""
    fn = "embedding_forward"
    V, C = _rows(fn, "WE", WE)
    N = tokens.shape[0] if isinstance(tokens, np.ndarray) and tokens.ndim == 1 else -1
    p_t = _tokens(fn, "tokens", tokens, N, V)
    p_o = _out(fn, "out", out, (N, C), "N,C")
    p_w = _arr(fn, "WE", WE, (V, C), "V,C")
    lib.ss_embedding_forward(p_o, p_t, p_w, N, C)
    return out


def embedding_backward(dWE, dout, tokens):
    """dWE(V,C)[tokens[n]] += dout(N,C)[n]."""
    fn = "embedding_backward"
    V, C = _rows(fn, "dWE", dWE)
    N = tokens.shape[0] if isinstance(tokens, np.ndarray) and tokens.ndim == 1 else -1
    p_t = _tokens(fn, "tokens", tokens, N, V)
    p_dw = _out(fn, "dWE", dWE, (V, C), "V,C")
    p_d = _arr(fn, "dout", dout, (N, C), "N,C")
    lib.ss_embedding_backward(p_dw, p_d, p_t, N, C)
