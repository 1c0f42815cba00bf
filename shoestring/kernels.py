"""kernels.py: the only importer of the compiled module; one validating wrapper per C function.

Each wrapper checks dtype (float32), C-contiguity and shapes once, then passes raw pointers to C
(cffi's from_buffer does not check dtypes, so nothing unchecked may reach it). Errors name the
function, the argument and the expected shape in dimension letters.

SHOESTRING_ISA=scalar|avx2|avx512|neon, read at import, forces an instruction set.
"""
import math
import os

import numpy as np

from .errors import KernelArgumentError, ShoestringError
from .params import LAYER_KEYS, LAYER_MATRICES, layer_shapes

try:
    from . import _shoestring_c
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ShoestringError(
        "the compiled extension shoestring._shoestring_c is missing (%s) "
        "(reinstall with `pip install .` so the C kernels are built)" % exc
    ) from exc

ffi = _shoestring_c.ffi
lib = _shoestring_c.lib

def isa_name(isa):
    """ss_isa_name: the name of instruction set number `isa` ("unknown" outside the range)."""
    return ffi.string(lib.ss_isa_name(int(isa))).decode("ascii")


ISA_NAMES = tuple(isa_name(i) for i in range(4))      # ("scalar", "avx2", "avx512", "neon")


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
_CTYPES = {np.dtype(np.float32): "float[]", np.dtype(np.int8): "int8_t[]",
           np.dtype(np.int32): "int32_t[]", np.dtype(np.uint8): "uint8_t[]",
           np.dtype(np.float64): "double[]"}


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
    return ffi.from_buffer(_CTYPES.get(np.dtype(dtype), "void[]"), a, require_writable=False)


def _out(fn, name, a, shape, dims, optional=False, dtype=np.float32):
    """Like _arr for an output or accumulated gradient: must also be writable."""
    if a is not None and isinstance(a, np.ndarray) and not a.flags.writeable:
        raise KernelArgumentError("%s: %s must be writable" % (fn, name))
    return _arr(fn, name, a, shape, dims, dtype=dtype, optional=optional)


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


class PackedMatrix:
    """A W(OC,C) packed by matmul_pack for the instruction set that was active then."""

    def __init__(self, W):
        fn = "matmul_pack"
        OC, C = _rows(fn, "W", W)
        p_W = _arr(fn, "W", W, (OC, C), "OC,C")
        self.shape, self.isa = (OC, C), isa_active()
        self.data = np.zeros(max(1, int(lib.ss_matmul_packed_floats(C, OC))), np.float32)
        lib.ss_matmul_pack(ffi.cast("float *", self.data.ctypes.data), p_W, C, OC)


def matmul_pack(W):
    """W(OC,C) packed once for matmul_forward_packed (pack again after W changes)."""
    return PackedMatrix(W)


def matmul_forward_packed(out, inp, W, packed, b=None):
    """matmul_forward(out, inp, W, b) from W's packed panels: the same bits, no packing."""
    fn = "matmul_forward_packed"
    N, C = _rows(fn, "inp", inp)
    OC = _rows(fn, "W", W)[0]
    if not isinstance(packed, PackedMatrix) or packed.shape != (OC, C):
        raise KernelArgumentError("%s: packed must be matmul_pack(W) of this W (OC,C)=%s"
                                  % (fn, (OC, C)))
    if packed.isa != isa_active():
        raise KernelArgumentError("%s: W was packed for %s but %s is active (pack it again)"
                                  % (fn, packed.isa, isa_active()))
    p_out = _out(fn, "out", out, (N, OC), "N,OC")
    p_inp = _arr(fn, "inp", inp, (N, C), "N,C")
    p_W = _arr(fn, "W", W, (OC, C), "OC,C")
    p_b = _arr(fn, "b", b, (OC,), "OC", optional=True)
    lib.ss_matmul_forward_packed(p_out, p_inp, p_W, ffi.cast("float *", packed.data.ctypes.data),
                                 p_b, N, C, OC)
    return out


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


def _row_scale(fn, row_scale, V):
    """The optional per-vocabulary-row scale (V) of embedding dropout: a pointer or NULL."""
    return _arr(fn, "row_scale", row_scale, (V,), "V", optional=True)


def embedding_forward(out, tokens, WE, row_scale=None):
    """out(N,C) = WE(V,C)[tokens(N)], times row_scale(V)[tokens] when given (embedding dropout:
    0 drops every occurrence of a token in the window, 1/(1-p) keeps it)."""
    fn = "embedding_forward"
    V, C = _rows(fn, "WE", WE)
    N = tokens.shape[0] if isinstance(tokens, np.ndarray) and tokens.ndim == 1 else -1
    p_t = _tokens(fn, "tokens", tokens, N, V)
    p_o = _out(fn, "out", out, (N, C), "N,C")
    p_w = _arr(fn, "WE", WE, (V, C), "V,C")
    p_s = _row_scale(fn, row_scale, V)
    lib.ss_embedding_forward(p_o, p_t, p_w, p_s, N, C)
    return out


def embedding_backward(dWE, dout, tokens, row_scale=None):
    """dWE(V,C)[tokens[n]] += dout(N,C)[n] (times row_scale(V)[tokens[n]] when given)."""
    fn = "embedding_backward"
    V, C = _rows(fn, "dWE", dWE)
    N = tokens.shape[0] if isinstance(tokens, np.ndarray) and tokens.ndim == 1 else -1
    p_t = _tokens(fn, "tokens", tokens, N, V)
    p_dw = _out(fn, "dWE", dWE, (V, C), "V,C")
    p_d = _arr(fn, "dout", dout, (N, C), "N,C")
    p_s = _row_scale(fn, row_scale, V)
    lib.ss_embedding_backward(p_dw, p_d, p_t, p_s, N, C)


# ---- dropout with a given mask (csrc/dropout.c) ---------------------------------------------------
def _dropout_dims(fn, a, name):
    if not isinstance(a, np.ndarray) or a.ndim != 3:
        raise KernelArgumentError("%s: %s must be a 3-D numpy array (B,T,C)" % (fn, name))
    return a.shape


def dropout_forward(out, inp, mask):
    """out(B,T,C) = inp(B,T,C) * mask(B,C): one mask row per stream, shared by its T steps
    (locked dropout); with T = 1 an elementwise mask (DropConnect). Masks hold 0 or 1/(1-p)."""
    fn = "dropout_forward"
    B, T, C = _dropout_dims(fn, inp, "inp")
    p_o = _out(fn, "out", out, (B, T, C), "B,T,C")
    p_i = _arr(fn, "inp", inp, (B, T, C), "B,T,C")
    p_m = _arr(fn, "mask", mask, (B, C), "B,C")
    if out.ctypes.data != inp.ctypes.data:          # in place is fine, a partial overlap is not
        _no_overlap(fn, [("out", out), ("inp", inp)])
    lib.ss_dropout_forward(p_o, p_i, p_m, B, T, C)
    return out


def dropout_backward(dinp, dout, mask):
    """dinp(B,T,C) += dout(B,T,C) * mask(B,C)."""
    fn = "dropout_backward"
    B, T, C = _dropout_dims(fn, dout, "dout")
    p_g = _out(fn, "dinp", dinp, (B, T, C), "B,T,C")
    p_d = _arr(fn, "dout", dout, (B, T, C), "B,T,C")
    p_m = _arr(fn, "mask", mask, (B, C), "B,C")
    _no_overlap(fn, [("dinp", dinp), ("dout", dout)])
    lib.ss_dropout_backward(p_g, p_d, p_m, B, T, C)


def _flat(fn, name, a, n=None, write=False):
    """A 1-D float32 C-contiguous array (of length n when given): its pointer."""
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise KernelArgumentError("%s: %s must be a 1-D numpy float32 array" % (fn, name))
    n = a.shape[0] if n is None else n
    return (_out if write else _arr)(fn, name, a, (n,), "n")


def dropconnect_forward(out, mask, W, j0, seed, threshold, scale):
    """Elements [j0, j0+n) of a DropConnect mask drawn from (seed, index) (see ss_dropconnect_
    forward in csrc/shoestring.h): mask(n) = scale where kept, else 0; out(n) = W(n) * mask.
    threshold = round(p * 2^24) in [0, 2^24]; scale = float32(1/(1-p)). All 1-D float32."""
    fn = "dropconnect_forward"
    p_w = _flat(fn, "W", W)
    n = W.shape[0]
    p_o = _flat(fn, "out", out, n, write=True)
    p_m = _flat(fn, "mask", mask, n, write=True)
    _no_overlap(fn, [("out", out), ("mask", mask), ("W", W)])
    j0 = _int(fn, "j0", j0, minimum=0)
    seed = _dropconnect_seed(fn, seed)
    threshold = _dropconnect_threshold(fn, threshold)
    lib.ss_dropconnect_forward(p_o, p_m, p_w, n, j0, seed, threshold, float(scale))


def _shard_ptrs(fn, shards, n):
    """A cffi float *[] over the shard gradient buffers (each 1-D float32 of n floats), with what
    must stay alive while C holds it."""
    ptrs = ffi.new("float *[]", len(shards))
    keep = [ptrs]
    for s, g in enumerate(shards):
        p = _flat(fn, "shards[%d]" % s, g, n)
        ptrs[s] = ffi.cast("float *", p)
        keep += [p, g]
    return ptrs, keep


def _dropconnect_seed(fn, seed):
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 1 << 64:
        raise KernelArgumentError("%s: seed must be an integer in [0, 2^64), got %r" % (fn, seed))
    return int(seed)


def _dropconnect_threshold(fn, threshold):
    threshold = _int(fn, "threshold", threshold, minimum=0)
    if threshold > 1 << 24:
        raise KernelArgumentError("%s: threshold must be <= 2^24, got %d" % (fn, threshold))
    return threshold


def grad_sum(out, shards, block, partials=None):
    """out(n) = ((shards[0] + shards[1]) + ...) elementwise; partials (None, or float64 of one
    entry per block of `block` elements of out): their float64 sums of squares (sumsq's bits)."""
    fn = "grad_sum"
    if not isinstance(shards, (list, tuple)) or not shards:
        raise KernelArgumentError("%s: shards must be a non-empty list of 1-D float32 arrays" % fn)
    p_o = _flat(fn, "out", out, write=True)
    n = out.shape[0]
    ptrs, keep = _shard_ptrs(fn, shards, n)
    _no_overlap(fn, [("out", out)] + [("shards[%d]" % s, g) for s, g in enumerate(shards)])
    block = _int(fn, "block", block)
    p_s = _arr(fn, "partials", partials, (-(-n // block),), "blocks", dtype=np.float64,
               optional=True)
    lib.ss_grad_sum(p_o, ptrs, len(shards), 0, n, block, p_s)


# ---- MoE-GRU layer over a whole window (csrc/moegru.c) ------------------------------------------
# Layouts (batch-major, so a batch slice [b0:b1] of every per-sequence array is contiguous):
#   inp (B,T,I), out/dout (B,T,H), recurrent state h/dh (B,X,H). Weights and gradients are dicts
#   with the keys of params.LAYER_SCHEMA (Wg (X,I), bg (X), Wz (X,H,I), bz (X,H), Wcx (X,H,I),
#   Wch (X,H,H), bc (X,H), gamma (H), and Wp (H,I), bp (H) exactly when I != H; absent or None
#   when I == H). acts and ws are flat float32 buffers of at least moegru_sizes(...) floats; acts
#   is written by forward and read by the matching backward (same inp, weights, sizes and K).
MOEGRU_KEYS = LAYER_KEYS
_moegru_shapes = layer_shapes          # {key: (shape, dims)} of one layer (I, H, X)


def moegru_sizes(B, T, I, H, X, K):
    """(acts_floats, ws_floats): lengths of the float32 buffers one layer call needs
    (saved activations written by forward for backward; scratch shared by forward and backward)."""
    fn = "moegru_sizes"
    B, T, I, H, X, K = (_int(fn, n, v) for n, v in zip("BTIHXK", (B, T, I, H, X, K)))
    if K > X:
        raise KernelArgumentError("%s: K=%d active experts exceeds X=%d experts" % (fn, K, X))
    return (int(lib.ss_moegru_acts_floats(B, T, I, H, X, K)),
            int(lib.ss_moegru_ws_floats(B, T, I, H, X, K)))


def _moegru_dims(fn, inp, w, K):
    """B, T, I from inp (B,T,I); X, H from w['Wch'] (X,H,H); K checked against X."""
    if not isinstance(inp, np.ndarray) or inp.ndim != 3:
        raise KernelArgumentError("%s: inp must be a 3-D numpy array (B,T,I)" % fn)
    if not isinstance(w, dict):
        raise KernelArgumentError("%s: w must be a dict of the layer's weights (%s)"
                                  % (fn, ", ".join(MOEGRU_KEYS)))
    Wch = w.get("Wch")
    if not isinstance(Wch, np.ndarray) or Wch.ndim != 3 or Wch.shape[1] != Wch.shape[2]:
        raise KernelArgumentError("%s: w['Wch'] must be a numpy array of shape (X,H,H)" % fn)
    B, T, I = inp.shape
    X, H = Wch.shape[0], Wch.shape[1]
    if min(B, T, I, X, H) < 1:
        raise KernelArgumentError("%s: empty dimension in inp %s or w['Wch'] %s"
                                  % (fn, inp.shape, Wch.shape))
    K = _int(fn, "K", K)
    if K > X:
        raise KernelArgumentError("%s: K=%d active experts exceeds X=%d experts" % (fn, K, X))
    return B, T, I, H, X, K


def _moegru_struct(fn, ctype, d, what, I, H, X, grads):
    """A cffi ss_moegru_weights/grads struct from dict d; returns (struct, keepalive list).
    Gradient entries may be None (that gradient is skipped)."""
    if not isinstance(d, dict):
        raise KernelArgumentError("%s: %s must be a dict with keys %s"
                                  % (fn, what, ", ".join(MOEGRU_KEYS)))
    shapes = _moegru_shapes(I, H, X)
    unknown = set(d) - set(MOEGRU_KEYS)
    if unknown:
        raise KernelArgumentError("%s: %s has unknown keys %s (expected %s)"
                                  % (fn, what, sorted(unknown), ", ".join(MOEGRU_KEYS)))
    st = ffi.new(ctype)
    keep = []
    for key in MOEGRU_KEYS:
        a = d.get(key)
        if key not in shapes:
            if a is not None:
                raise KernelArgumentError(
                    "%s: %s[%r] must be absent when I == H (%d): the residual is the identity"
                    % (fn, what, key, I))
            continue
        shape, dims = shapes[key]
        name = "%s[%r]" % (what, key)
        if grads:
            p = _out(fn, name, a, shape, dims, optional=True)
        else:
            if a is None:
                hint = " (the residual projection is needed because I=%d != H=%d)" % (I, H) \
                    if key in ("Wp", "bp") else ""
                raise KernelArgumentError("%s: %s is required, expected shape (%s)%s"
                                          % (fn, name, dims, hint))
            p = _arr(fn, name, a, shape, dims)
        setattr(st, key, p)
        keep.append(p)
    return st, keep


def _moegru_buf(fn, name, a, need):
    """A flat writable float32 buffer of at least `need` floats."""
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise KernelArgumentError(
            "%s: %s must be a 1-D float32 numpy array of at least %d floats (see moegru_sizes)"
            % (fn, name, need))
    if a.shape[0] < need:
        raise KernelArgumentError("%s: %s has %d floats, needs at least %d (see moegru_sizes)"
                                  % (fn, name, a.shape[0], need))
    return _out(fn, name, a, a.shape, "n >= %d" % need)


def _no_overlap(fn, named):
    """Raise if two of the (name, array) pairs share memory (outputs must not alias inputs)."""
    named = [(n, a) for n, a in named if a is not None]
    for i in range(len(named)):
        for j in range(i + 1, len(named)):
            if np.may_share_memory(named[i][1], named[j][1]):
                raise KernelArgumentError("%s: %s and %s overlap in memory (pass separate arrays)"
                                          % (fn, named[i][0], named[j][0]))


class MoeGruBinding:
    """One MoE-GRU layer call prepared once: the only wrapper of ss_moegru_forward/backward.

    Bound (validated once, pointers cached; they must stay alive and in place, which in-place
    updates such as the optimiser's respect): the weights dict `w`, the gradient dict `grads`
    (optional; None entries are skipped), the `acts` and `ws` buffers (allocated here when not
    given) and the sizes B, T, I (from the constructor), H, X (from w), K, eps and cap (the
    candidate's soft cap; 0 is the uncapped model).
    Per call (checked every call): out, h, inp for forward; dinp, dout, inp, dh for backward.
    """

    def __init__(self, w, B, T, I, K, eps, grads=None, acts=None, ws=None, cap=0.0):
        fn = "MoeGruBinding"
        B, T, I = (_int(fn, n, v) for n, v in zip("BTI", (B, T, I)))
        self.B, self.T, self.I, self.H, self.X, self.K = _moegru_dims(
            fn, np.empty((B, T, I), np.float32), w, K)
        H, X = self.H, self.X
        self.eps = float(eps)
        if not (isinstance(cap, (int, float, np.floating)) and not isinstance(cap, bool)
                and math.isfinite(cap) and cap >= 0):
            raise KernelArgumentError("%s: cap must be a finite number >= 0 (0: no cap), got %r"
                                      % (fn, cap))
        self.cap = float(cap)
        n_acts, n_ws = moegru_sizes(B, T, I, H, X, self.K)
        self.acts = np.zeros(n_acts, np.float32) if acts is None else acts
        self.ws = np.zeros(n_ws, np.float32) if ws is None else ws
        _no_overlap(fn, [("acts", self.acts), ("ws", self.ws)])
        self._p_acts = _moegru_buf(fn, "acts", self.acts, n_acts)
        self._p_ws = _moegru_buf(fn, "ws", self.ws, n_ws)
        self.w, self.grads = w, grads
        self._w, self._wkeep = _moegru_struct(fn, "ss_moegru_weights *", w, "w", I, H, X, False)
        if grads is None:
            self._g, self._gkeep = None, []
        else:
            self._g, self._gkeep = _moegru_struct(fn, "ss_moegru_grads *", grads, "grads",
                                                  I, H, X, True)

    def forward(self, out, h, inp):
        """out(B,T,H) = layer(inp(B,T,I)); h(B,X,H) advanced in place; saves acts. Returns out."""
        fn = "MoeGruBinding.forward"
        B, T, I, H, X = self.B, self.T, self.I, self.H, self.X
        p_out = _out(fn, "out", out, (B, T, H), "B,T,H")
        p_h = _out(fn, "h", h, (B, X, H), "B,X,H")
        p_inp = _arr(fn, "inp", inp, (B, T, I), "B,T,I")
        _no_overlap(fn, [("out", out), ("acts", self.acts), ("h", h), ("ws", self.ws),
                         ("inp", inp)])
        lib.ss_moegru_forward(p_out, self._p_acts, p_h, self._p_ws, p_inp, self._w,
                              B, T, I, H, X, self.K, self.eps, self.cap)
        return out

    def backward(self, dinp, dout, inp, dh=None):
        """dinp(B,T,I) += (None skips), bound grads +=, dh(B,X,H): final -> initial state grad
        (None: truncated BPTT). Needs the acts of the forward on the same inp."""
        fn = "MoeGruBinding.backward"
        if self._g is None:
            raise KernelArgumentError("%s: this binding has no grads (pass grads= when building it)"
                                      % fn)
        B, T, I, H, X = self.B, self.T, self.I, self.H, self.X
        p_dinp = _out(fn, "dinp", dinp, (B, T, I), "B,T,I", optional=True)
        p_dh = _out(fn, "dh", dh, (B, X, H), "B,X,H", optional=True)
        p_dout = _arr(fn, "dout", dout, (B, T, H), "B,T,H")
        p_inp = _arr(fn, "inp", inp, (B, T, I), "B,T,I")
        _no_overlap(fn, [("dinp", dinp), ("dh", dh), ("ws", self.ws), ("dout", dout),
                         ("acts", self.acts), ("inp", inp)])
        lib.ss_moegru_backward(p_dinp, p_dh, self._g, self._p_ws, p_dout, self._p_acts, p_inp,
                               self._w, B, T, I, H, X, self.K, self.cap)


def moegru_forward(out, acts, h, ws, inp, w, K, eps, cap=0.0):
    """One MoE-GRU layer over a window (a one-off MoeGruBinding): out(B,T,H) = layer(inp(B,T,I));
    h(B,X,H) holds the initial state on entry and the final state on exit; acts receives what
    backward needs. w: dict of the layer's weights (see MOEGRU_KEYS). Returns out."""
    B, T, I = _moegru_dims("moegru_forward", inp, w, K)[:3]
    return MoeGruBinding(w, B, T, I, K, eps, acts=acts, ws=ws, cap=cap).forward(out, h, inp)


def moegru_backward(dinp, dh, grads, ws, dout, acts, inp, w, K, eps=1e-5, cap=0.0):
    """Exact backward through the window of the matching moegru_forward (same acts, inp, w, K,
    cap). dinp(B,T,I) += (None skips); every non-None grads[key] +=; dh(B,X,H) or None: on entry
    dL/d(final state), on exit dL/d(initial state); None means zero (truncated BPTT).
    eps is unused (the saved 1/rms is used)."""
    B, T, I = _moegru_dims("moegru_backward", inp, w, K)[:3]
    MoeGruBinding(w, B, T, I, K, eps, grads=grads, acts=acts, ws=ws, cap=cap).backward(
        dinp, dout, inp, dh)


# ---- the training model over one batch shard of a window (csrc/network.c) ---------------------
def _state_rows(fn, h, shape):
    """A float32 state h of `shape` (L,B,X,H), writable and contiguous but for its first axis (a
    batch slice h[:, b0:b1] of the whole batch's state): a pointer to its first element."""
    L, B, X, H = shape
    if not (isinstance(h, np.ndarray) and h.dtype == np.float32 and h.shape == tuple(shape)
            and h.strides[1:] == (X * H * 4, H * 4, 4) and h.strides[0] % 4 == 0
            and h.flags.writeable):
        raise KernelArgumentError(
            "%s: h must be a writable float32 array (L,B,X,H) = %s, contiguous but for its first "
            "axis" % (fn, tuple(shape)))
    return ffi.cast("float *", h.ctypes.data)


def state_guard(h, limit):
    """Zero every stream b of h (L,B,X,H) (contiguous but for its first axis) whose state norm
    over (L,X,H) exceeds limit or is not finite; returns how many streams were reset."""
    fn = "state_guard"
    if not isinstance(h, np.ndarray) or h.ndim != 4:
        raise KernelArgumentError("%s: h must be a 4-D numpy float32 array (L,B,X,H)" % fn)
    L, B, X, H = h.shape
    p = _state_rows(fn, h, h.shape)
    return int(lib.ss_state_guard(p, h.strides[0] // 4, L, B, X * H, float(limit)))


class NetworkBinding:
    """One batch shard of the training model, bound once: the only wrapper of ss_network_forward
    and ss_network_backward (the kernels above in model.py's order, in two C calls, so a shard's
    thread holds the interpreter lock only between them).

    layers: the shard's L MoeGruBinding (their weights, grads, acts and ws; the same B, T, H, X,
    K, eps and cap; layer 0's input width I is C, the others' H). WE (V,C), head (V,H) (WE itself
    when the embeddings are tied), bo (V); x0 (B,T,C), outs [(B,T,H)] per layer, logits (N,V),
    losses (N). train (None: forward only) is a dict of the training buffers: grads (the shard's
    flat gradient buffer, which the layers' grads and gWE, ghead, gbo view), dlogits (N,V), dtop,
    xh, dxh (B,T,H), per layer xd, dxd, dx [(B,T,I)], and optionally wch_mask [(X,H,H) or None]:
    the DropConnect mask each layer's Wch runs under (its weights' Wch is Wch * mask), which its
    Wch gradient then gets. Everything bound must stay alive and in place.
    """

    def __init__(self, layers, WE, head, bo, x0, outs, logits, losses, train=None):
        fn = "NetworkBinding"
        if not layers or not all(isinstance(b, MoeGruBinding) for b in layers):
            raise KernelArgumentError("%s: layers must be a non-empty list of MoeGruBinding" % fn)
        first = layers[0]
        B, T, H, X, K = first.B, first.T, first.H, first.X, first.K
        V, C = _rows(fn, "WE", WE)
        L, N = len(layers), first.B * first.T
        for l, b in enumerate(layers):
            want = C if l == 0 else H
            if ((b.B, b.T, b.H, b.X, b.K, b.eps, b.cap) != (B, T, H, X, K, first.eps, first.cap)
                    or b.I != want):
                raise KernelArgumentError(
                    "%s: layer %d is bound for (B,T,I,H,X,K) = %s, expected %s with the same "
                    "eps and cap" % (fn, l, (b.B, b.T, b.I, b.H, b.X, b.K), (B, T, want, H, X, K)))
            if train is not None and b._g is None:
                raise KernelArgumentError("%s: layer %d has no grads to train" % (fn, l))
        n = ffi.new("ss_network *")
        lys = ffi.new("ss_network_layer[]", L)
        keep = [n, lys, layers]
        n.B, n.T, n.C, n.H, n.V, n.L, n.X, n.K = B, T, C, H, V, L, X, K
        n.eps, n.cap = first.eps, first.cap
        for name, a, shape, dims in (("WE", WE, (V, C), "V,C"), ("Wo", head, (V, H), "V,H"),
                                     ("bo", bo, (V,), "V")):
            p = _arr(fn, name if name != "Wo" else "head", a, shape, dims)
            setattr(n, name, p)
            keep.append(p)
        if not isinstance(outs, (list, tuple)) or len(outs) != L:
            raise KernelArgumentError("%s: outs must be a list of %d (B,T,H) arrays" % (fn, L))
        for name, a, shape, dims in (("x0", x0, (B, T, C), "B,T,C"),
                                     ("logits", logits, (N, V), "N,V"),
                                     ("losses", losses, (N,), "N")):
            p = _out(fn, name, a, shape, dims)
            setattr(n, name, p)
            keep.append(p)
        bufs = [("x0", x0), ("logits", logits), ("losses", losses)]
        for l, b in enumerate(layers):
            ly = lys[l]
            ly.w, ly.acts, ly.ws, ly.I = b._w, b._p_acts, b._p_ws, b.I
            ly.g = b._g if train is not None else ffi.NULL
            p = _out(fn, "outs[%d]" % l, outs[l], (B, T, H), "B,T,H")
            ly.out = p
            keep.append(p)
            bufs.append(("outs[%d]" % l, outs[l]))
        if train is not None:
            g = train.get("grads")
            if not isinstance(g, np.ndarray) or g.ndim != 1:
                raise KernelArgumentError("%s: train['grads'] must be the flat float32 gradient "
                                          "buffer" % fn)
            p = _out(fn, "train['grads']", g, g.shape, "n")
            n.grads, n.n_grads = p, g.shape[0]
            keep.append(p)
            for field, key, shape, dims in (("gWE", "gWE", (V, C), "V,C"),
                                            ("gWo", "ghead", (V, H), "V,H"),
                                            ("gbo", "gbo", (V,), "V"),
                                            ("dlogits", "dlogits", (N, V), "N,V"),
                                            ("dtop", "dtop", (B, T, H), "B,T,H"),
                                            ("xh", "xh", (B, T, H), "B,T,H"),
                                            ("dxh", "dxh", (B, T, H), "B,T,H")):
                p = _out(fn, "train[%r]" % key, train.get(key), shape, dims)
                setattr(n, field, p)
                keep.append(p)
                if key not in ("gWE", "ghead", "gbo"):
                    bufs.append(("train[%r]" % key, train[key]))
            wm = train.get("wch_mask")
            wm = [None] * L if wm is None else wm
            if not isinstance(wm, (list, tuple)) or len(wm) != L:
                raise KernelArgumentError("%s: train['wch_mask'] must be a list of %d (X,H,H) "
                                          "arrays or None" % (fn, L))
            self._scratch = []
            for l, m in enumerate(wm):
                if m is None:
                    continue
                p = _arr(fn, "train['wch_mask'][%d]" % l, m, (X, H, H), "X,H,H")
                s = np.zeros((X, H, H), np.float32)
                ps = ffi.from_buffer("float[]", s)
                lys[l].wch_mask, lys[l].wch_scratch = p, ps
                keep += [p, ps, s]
                self._scratch.append(s)
            for key in ("xd", "dxd", "dx"):
                arrs = train.get(key)
                if not isinstance(arrs, (list, tuple)) or len(arrs) != L:
                    raise KernelArgumentError("%s: train[%r] must be a list of %d (B,T,I) arrays"
                                              % (fn, key, L))
                for l, a in enumerate(arrs):
                    I = lys[l].I
                    p = _out(fn, "train[%r][%d]" % (key, l), a, (B, T, I), "B,T,I")
                    setattr(lys[l], key, p)
                    keep.append(p)
                    bufs.append(("train[%r][%d]" % (key, l), a))
        _no_overlap(fn, bufs)
        n.layers = lys
        self.B, self.T, self.C, self.H, self.V, self.L, self.X = B, T, C, H, V, L, X
        self.train = train is not None
        self._n, self._lys, self._keep = n, lys, keep
        self._masks = []
        self._tokens = None                  # the last training forward's tokens (for backward)

    def set_masks(self, embedding=None, inputs=None, head=None):
        """This window's dropout masks, each None when off: embedding (V) row scales, inputs [(B,I)
        or None] per layer (None: all off), head (B,H). They apply to training forwards only."""
        fn = "NetworkBinding.set_masks"
        n, keep = self._n, [embedding, inputs, head]
        n.emb_mask = _arr(fn, "embedding", embedding, (self.V,), "V", optional=True)
        n.head_mask = _arr(fn, "head", head, (self.B, self.H), "B,H", optional=True)
        if inputs is not None and (not isinstance(inputs, (list, tuple)) or len(inputs) != self.L):
            raise KernelArgumentError("%s: inputs must be a list of %d masks (B,I) or None"
                                      % (fn, self.L))
        for l in range(self.L):
            m = inputs[l] if inputs is not None else None
            I = self._lys[l].I
            self._lys[l].mask = _arr(fn, "inputs[%d]" % l, m, (self.B, I), "B,I", optional=True)
        self._masks = keep

    def forward(self, tokens, targets, h, dscale=None):
        """The shard's window: tokens, targets (B,T) int32 in [0,V); h (L,B,X,H), contiguous but
        for its first axis (a shard's rows of the whole batch's state), advanced in place; writes
        losses (N). With dscale (training: needs train buffers) the masks apply and dlogits =
        dscale * dloss/dlogits, for backward."""
        fn = "NetworkBinding.forward"
        B, T, L, X, H = self.B, self.T, self.L, self.X, self.H
        tok, tgt = (a.reshape(-1) if isinstance(a, np.ndarray) and a.shape == (B, T) else None
                    for a in (tokens, targets))
        p_tok = _tokens(fn, "tokens (B,T)", tok, B * T, self.V)
        p_tgt = _tokens(fn, "targets (B,T)", tgt, B * T, self.V)
        p_h = _state_rows(fn, h, (L, B, X, H))
        train = dscale is not None
        if train and not self.train:
            raise KernelArgumentError("%s: dscale given but this binding has no train buffers"
                                      % fn)
        lib.ss_network_forward(self._n, p_tok, p_tgt, p_h, h.strides[0] // 4,
                               float(dscale) if train else 1.0, int(train))
        self._tokens = (tok, p_tok) if train else None

    def backward(self, zero=False):
        """After a training forward: every gradient += dscale * dloss/dparam (zero: the whole
        gradient buffer is zeroed first)."""
        if self._tokens is None:
            raise KernelArgumentError("NetworkBinding.backward: needs a training forward first")
        lib.ss_network_backward(self._n, self._tokens[1], 1 if zero else 0)


class Barrier:
    """A reusable barrier for `parties` threads that wait inside C with the GIL released
    (csrc/barrier.c: the only wrapper of ss_barrier_init/wait/break). wait() returns when all
    have arrived, or raises BrokenBarrier once any thread called abort(). A waiter spins `spin`
    seconds before it yields its core and then naps (0: no spinning)."""

    def __init__(self, parties, spin=0.003):
        self.parties = _int("Barrier", "parties", parties)
        if not (isinstance(spin, (int, float)) and 0 <= spin <= 1):
            raise KernelArgumentError("Barrier: spin must be 0 to 1 seconds, got %r" % (spin,))
        self.spin = float(spin)
        self._b = ffi.new("ss_barrier *")
        self.reset()

    def reset(self):
        lib.ss_barrier_init(self._b, self.parties, self.spin)

    def wait(self):
        if lib.ss_barrier_wait(self._b) != 0:
            raise BrokenBarrier("another thread of the training step failed")

    def abort(self):
        lib.ss_barrier_break(self._b)

    def generation(self):
        """How many times the barrier has released its threads (changes when a wait completes)."""
        return int(self._b.generation)


class StepBinding:
    """The optimiser's part of a training step on the shard threads (csrc/step.c), bound once:
    the only wrapper of ss_step_update. After its shard, thread t calls run(t, lo, hi, loss) with
    its block-aligned range; it meets the others at `barrier`, sums its range of the shard
    gradients into `grads`, meets them again, and runs AdamW on its range when the step's loss
    and the gradient's norm are fit (see csrc/shoestring.h), then draws the next step's
    DropConnect masks in its part of each region.

    barrier: the threads' Barrier (S parties); shards: the S shard gradient buffers; grads,
    params, m, v: 1-D float32 buffers of n floats; n_decay: weight decay on [0, n_decay);
    block: the norm's block length; regions: [(at, eff, mask)] for DropConnect (eff and mask
    1-D float32 of one length, the weight at params[at:at+len]). Everything must stay alive and in
    place; set() gives each step's constants."""

    def __init__(self, barrier, shards, grads, params, m, v, n_decay, block, regions=()):
        fn = "StepBinding"
        if not isinstance(barrier, Barrier):
            raise KernelArgumentError("%s: barrier must be a kernels.Barrier" % fn)
        S = barrier.parties
        if not isinstance(shards, (list, tuple)) or len(shards) != S:
            raise KernelArgumentError("%s: shards must be a list of %d gradient buffers (one per "
                                      "barrier party)" % (fn, S))
        p_g = _flat(fn, "grads", grads, write=True)
        n = grads.shape[0]
        u = ffi.new("ss_step *")
        sp, keep = _shard_ptrs(fn, shards, n)
        keep += [u, barrier, p_g]
        named = [("grads", grads), ("params", params), ("m", m), ("v", v)]
        _no_overlap(fn, named + [("shards[%d]" % i, g) for i, g in enumerate(shards)])
        for name, a in named[1:]:
            p = _flat(fn, name, a, n, write=True)
            setattr(u, name, p)
            keep += [p, a]
        n_decay = _int(fn, "n_decay", n_decay, minimum=0)
        block = _int(fn, "block", block)
        if n_decay > n:
            raise KernelArgumentError("%s: n_decay=%d exceeds n=%d" % (fn, n_decay, n))
        self.partials = np.zeros(-(-n // block), np.float64)
        self.losses = np.zeros(S, np.float64)
        self.param_sumsq = np.zeros(S, np.float64)
        for name in ("partials", "losses", "param_sumsq"):
            p = ffi.from_buffer("double[]", getattr(self, name))
            setattr(u, name, p)
            keep.append(p)
        regs = ffi.new("ss_dropconnect_region[]", max(1, len(regions)))
        keep.append(regs)
        for r, (at, eff, mask) in enumerate(regions):
            size = eff.shape[0] if isinstance(eff, np.ndarray) and eff.ndim == 1 else -1
            pe = _flat(fn, "regions[%d] eff" % r, eff, write=True)
            pm = _flat(fn, "regions[%d] mask" % r, mask, size, write=True)
            at = _int(fn, "regions[%d] at" % r, at, minimum=0)
            if at + size > n:
                raise KernelArgumentError("%s: regions[%d] runs past the %d parameters"
                                          % (fn, r, n))
            regs[r].at, regs[r].size, regs[r].eff, regs[r].mask = at, size, pe, pm
            keep += [pe, pm, eff, mask]
        u.barrier, u.S, u.shards, u.grads = barrier._b, S, sp, p_g
        u.n, u.block, u.n_decay = n, block, n_decay
        u.n_regions, u.regions = len(regions), regs
        self.n, self.block, self.S = n, block, S
        self.params = params
        self._u, self._keep = u, keep
        self.set(seeds=[0] * len(regions))

    def set(self, prior=0.0, tokens=1.0, diverged_above=math.inf, lr=0.0, beta1=0.9,
            beta2=0.999, eps=1e-8, weight_decay=0.0, clip=0.0, bc1=1.0, bc2=1.0, seeds=(),
            threshold=0, scale=1.0):
        """The step's constants: the earlier windows' loss sum, the step's tokens, the divergence
        limit, AdamW's, the clip, and the DropConnect regions' next seeds (threshold, scale as in
        dropconnect_forward)."""
        u = self._u
        u.prior, u.tokens, u.diverged_above = float(prior), float(tokens), float(diverged_above)
        u.lr, u.beta1, u.beta2, u.eps = float(lr), float(beta1), float(beta2), float(eps)
        u.weight_decay, u.clip, u.bc1, u.bc2 = float(weight_decay), float(clip), float(bc1), \
            float(bc2)
        if len(seeds) != u.n_regions:
            raise KernelArgumentError("StepBinding.set: %d seeds for %d DropConnect regions"
                                      % (len(seeds), u.n_regions))
        for r, sd in enumerate(seeds):
            u.regions[r].seed = _dropconnect_seed("StepBinding.set", sd)
        u.threshold = _dropconnect_threshold("StepBinding.set", threshold)
        u.scale = float(scale)
        u.norm = u.loss = math.nan

    def run(self, t, lo, hi, loss):
        """Thread t's part (its shard's loss sum `loss`, its range [lo, hi)); True when the
        weights were updated. Raises BrokenBarrier when another thread aborted the barrier."""
        if not (0 <= t < self.S and 0 <= lo <= hi <= self.n and lo % self.block == 0
                and (hi == self.n or hi % self.block == 0)):
            raise KernelArgumentError("StepBinding.run: bad thread %r or range [%r, %r) (block-"
                                      "aligned, within %d)" % (t, lo, hi, self.n))
        self.losses[t] = loss
        rc = lib.ss_step_update(self._u, t, lo, hi)
        if rc < 0:
            raise BrokenBarrier("another thread of the training step failed")
        return rc == 1

    @property
    def norm(self):
        """The gradient's global norm of the last step (grad_norm's bits)."""
        return float(self._u.norm)

    @property
    def loss(self):
        """The last step's mean loss as the check saw it."""
        return float(self._u.loss)


class BrokenBarrier(ShoestringError):
    """A Barrier.wait that ended because another thread aborted the barrier."""


# ---- decoding at batch 1, int8 weights, sampling, the generation loop --------------------------
# (csrc/decode.c, csrc/sample.c; each C function has exactly one wrapper here, named like it.)
# Chat and generation run one token at a time, so everything that can be checked once is checked
# once: DecodeWeights validates the parameter views and packs the matrices at model load
# (ss_decode_pack / ss_decode_pack_q8 and their sizes), a Decoder owns its state, workspace and
# logits (ss_decode_step), and a Generator runs the whole loop in C (ss_generate).
Q8_BLOCK = 32
# Largest table of layer 0's input products a DecodeWeights builds (4.0 MB for the default
# model); past it the step multiplies layer 0's input matrices for every token instead.
EMBED_PROJ_MAX_BYTES = 64 << 20


def int8_kernel():
    """Name of the int8 matrix-vector kernel in use: scalar, avx2, avx512-vnni, neon-dotprod, neon."""
    return ffi.string(lib.ss_int8_kernel()).decode("ascii")


def int8_dot_set(on):
    """Allow (True) or forbid (False) the dot-product instructions (VNNI, ARM SDOT) in the int8
    kernels, for testing the fallback; returns the previous setting."""
    return bool(lib.ss_int8_dot_set(1 if on else 0))


def int8_info():
    """For `shoestring info`: the int8 decode kernels available here and the one in use."""
    before = isa_active()
    kinds = []
    try:
        for name in isa_available():
            set_isa(name)
            was = int8_dot_set(True)
            kinds.append(int8_kernel())
            int8_dot_set(was)
    finally:
        set_isa(before)
    kinds = list(dict.fromkeys(kinds))
    return "%s (in use: %s)" % (", ".join(kinds), int8_kernel())


def panel_size(OC, C):
    """Floats in the 16-row panels of a float32 matrix (OC,C)."""
    return int(lib.ss_panel_size(_int("panel_size", "OC", OC), _int("panel_size", "C", C, 0)))


def q8_width(C):
    """C rounded up to a multiple of 32 (the width of int8 panels and quantised vectors)."""
    return int(lib.ss_q8_width(_int("q8_width", "C", C, 0)))


def panel_q8_size(OC, C):
    """Bytes in the int8 panels of a matrix (OC,C)."""
    return int(lib.ss_panel_q8_size(_int("panel_q8_size", "OC", OC), _int("panel_q8_size", "C", C, 0)))


def panel_q8_rows(OC):
    """Floats of row scales of the int8 panels of a matrix with OC rows."""
    return int(lib.ss_panel_q8_rows(_int("panel_q8_rows", "OC", OC)))


def panel_pack(dst, W):
    """dst (panel_size(OC,C)) = W (OC,C) in 16-row panels. Returns dst."""
    fn = "panel_pack"
    OC, C = _rows(fn, "W", W)
    p_w = _arr(fn, "W", W, (OC, C), "OC,C")
    p_d = _out(fn, "dst", dst, (panel_size(OC, C),), "panel_size(OC,C)")
    lib.ss_panel_pack(p_d, p_w, OC, C)
    return dst


def panel_pack_q8(dst, dscale, q, scale):
    """dst (panel_q8_size(OC,C)) int8 and dscale (panel_q8_rows(OC)) = the int8 rows q (OC,C)
    with their scales (OC) in 16-row panels. Returns dst."""
    fn = "panel_pack_q8"
    OC, C = _rows(fn, "q", q)
    p_q = _arr(fn, "q", q, (OC, C), "OC,C", dtype=np.int8)
    p_s = _arr(fn, "scale", scale, (OC,), "OC")
    p_d = _out(fn, "dst", dst, (panel_q8_size(OC, C),), "panel_q8_size(OC,C)", dtype=np.int8)
    p_ds = _out(fn, "dscale", dscale, (panel_q8_rows(OC),), "panel_q8_rows(OC)")
    lib.ss_panel_pack_q8(p_d, p_ds, p_q, p_s, OC, C)
    return dst


def decode_matvec(y, Wpk, x, b, C, OC):
    """y (OC) = W . x (C) + b (OC, or None) with W packed by panel_pack. Returns y."""
    fn = "decode_matvec"
    C, OC = _int(fn, "C", C, 0), _int(fn, "OC", OC)
    p_y = _out(fn, "y", y, (OC,), "OC")
    p_w = _arr(fn, "Wpk", Wpk, (panel_size(OC, C),), "panel_size(OC,C)")
    p_x = _arr(fn, "x", x, (C,), "C")
    p_b = _arr(fn, "b", b, (OC,), "OC", optional=True)
    lib.ss_decode_matvec(p_y, p_w, p_x, p_b, C, OC)
    return y


def quantize_rows(q, scale, W):
    """Symmetric int8 rows: scale (N) = max|W[n]| / 127, q (N,C) = round(W * 127 / max).
    W is (N,C) or any float32 array whose last axis is C (q the same shape). Returns q, scale."""
    fn = "quantize_rows"
    if not isinstance(W, np.ndarray) or W.ndim < 1:
        raise KernelArgumentError("%s: W must be a numpy float32 array (..., C)" % fn)
    C = W.shape[-1]
    N = W.size // C if C else 0
    p_w = _arr(fn, "W", W, W.shape, "...,C")
    p_q = _out(fn, "q", q, W.shape, "same shape as W", dtype=np.int8)
    p_s = _out(fn, "scale", scale, W.shape[:-1], "W's shape without C")
    lib.ss_quantize_rows(p_q, p_s, p_w, N, C)
    return q, scale


def quantize_x(xq, xscale, xsum, x, scalar=False):
    """x (C) quantised per block of 32: xq (q8_width(C)) int8, xscale and xsum (q8_width(C)/32)
    float32 and int32 (the sum of each block's xq). Returns xq. scalar: the scalar twin
    (ss_quantize_x_scalar) instead of the SSE2 blocks x86-64 uses, for tests."""
    fn = "quantize_x"
    if not isinstance(x, np.ndarray) or x.ndim != 1:
        raise KernelArgumentError("%s: x must be a 1-D numpy float32 array (C)" % fn)
    C = x.shape[0]
    Cp = q8_width(C)
    p_x = _arr(fn, "x", x, (C,), "C")
    p_q = _out(fn, "xq", xq, (Cp,), "q8_width(C)", dtype=np.int8)
    p_s = _out(fn, "xscale", xscale, (Cp // Q8_BLOCK,), "q8_width(C)/32")
    p_m = _out(fn, "xsum", xsum, (Cp // Q8_BLOCK,), "q8_width(C)/32", dtype=np.int32)
    (lib.ss_quantize_x_scalar if scalar else lib.ss_quantize_x)(p_q, p_s, p_m, p_x, C)
    return xq


def decode_matvec_q8(y, Wpk, wscale, xq, xscale, xsum, b, C, OC):
    """y (OC) = wscale . (q . xq) with the block scales + b (OC, or None): int8 panels (from
    panel_pack_q8, for a matrix (OC,C)) times a vector quantised by quantize_x. Returns y."""
    fn = "decode_matvec_q8"
    C, OC = _int(fn, "C", C, 0), _int(fn, "OC", OC)
    Cp = q8_width(C)
    p_y = _out(fn, "y", y, (OC,), "OC")
    p_w = _arr(fn, "Wpk", Wpk, (panel_q8_size(OC, C),), "panel_q8_size(OC,C)", dtype=np.int8)
    p_ws = _arr(fn, "wscale", wscale, (panel_q8_rows(OC),), "panel_q8_rows(OC)")
    p_q = _arr(fn, "xq", xq, (Cp,), "q8_width(C)", dtype=np.int8)
    p_s = _arr(fn, "xscale", xscale, (Cp // Q8_BLOCK,), "q8_width(C)/32")
    p_m = _arr(fn, "xsum", xsum, (Cp // Q8_BLOCK,), "q8_width(C)/32", dtype=np.int32)
    p_b = _arr(fn, "b", b, (OC,), "OC", optional=True)
    lib.ss_decode_matvec_q8(p_y, p_w, p_ws, p_q, p_s, p_m, p_b, Cp, OC)
    return y


def head_weight(views):
    """The head's weight: Wo (V,H), or the embedding WE (V,C) when the embeddings are tied."""
    return views["Wo"] if "Wo" in views else views["WE"]


class DecodeWeights:
    """ss_decode_model for a ModelConfig `cfg` and its named parameter views
    (ParamLayout(cfg).views(flat)): the struct of pointers plus the packed matrices
    (ss_decode_pack, or with int8=True ss_decode_pack_q8 over int8 rows), and the table of
    layer 0's input products of every token that the step reads instead of layer 0's input
    matrices (ss_decode_embed_proj; the same bits; built when embed_proj and it takes at most
    EMBED_PROJ_MAX_BYTES).

    int8=True: every matrix (router, experts, projection, head) is quantised per row from the
    float32 views (quantize_rows), or taken as given in q8 = {name: (q, scale)} (int8 rows as
    an int8 file stores them; names as in the views, e.g. "l0.Wz" with q (X,H,I), scale (X,H),
    "Wo" for the head even when it is tied to WE). The embedding, biases and gains stay float32.
    The views must stay alive and unchanged (call repack() after changing them). The candidate
    cap is cfg.cap (0 when the configuration has none)."""

    def __init__(self, cfg, views, int8=False, q8=None, embed_proj=True):
        fn = "DecodeWeights"
        V, C, H, L, X, K = cfg.V, cfg.C, cfg.H, cfg.L, cfg.X, cfg.K
        self.cfg = cfg
        self.int8 = bool(int8 or q8 is not None)
        self._keep = []
        cap = float(getattr(cfg, "cap", 0.0) or 0.0)
        if not cap >= 0:
            raise KernelArgumentError("%s: cap must be >= 0, got %r" % (fn, cap))
        if "Wo" not in views and C != H:
            raise KernelArgumentError("%s: tied embeddings (no Wo) need C == H, got C=%d, H=%d"
                                      % (fn, C, H))

        def ptr(name, shape, dims, a=None):
            a = views.get(name) if a is None else a
            p = _arr(fn, name, a, shape, dims)
            self._keep.append(a)
            return ffi.cast("const float *", p)

        self._shapes = {}
        self._layers = ffi.new("ss_decode_layer[]", L)
        for l in range(L):
            I = cfg.layer_input(l)
            ly, pre = self._layers[l], "l%d." % l
            for key, (shape, dims) in layer_shapes(I, H, X).items():    # params.LAYER_SCHEMA
                setattr(ly, key, ptr(pre + key, shape, dims))
                if key in LAYER_MATRICES:
                    self._shapes[pre + key] = (shape, dims)
        self._shapes["Wo"] = ((V, H), "V,H")
        m = ffi.new("ss_decode_model *")
        m.V, m.C, m.H, m.L, m.X, m.K = V, C, H, L, X, K
        m.eps = float(cfg.eps_rmsnorm)
        m.cap = cap
        m.WE = ptr("WE", (V, C), "V,C")
        m.Wo = ptr("Wo", (V, H), "V,H" if "Wo" in views else "V,C (tied to WE)",
                   a=head_weight(views))
        m.bo = ptr("bo", (V,), "V")
        m.layers = self._layers
        self._m = m
        self._views = views
        if self.int8:
            self.packed = np.zeros(int(lib.ss_decode_packed_q8_size(m)), np.int8)
            self.scales = np.zeros(int(lib.ss_decode_packed_q8_scales(m)), np.float32)
            m.packed_q8 = ffi.cast("const int8_t *", ffi.from_buffer("int8_t[]", self.packed))
            m.scales_q8 = ffi.cast("const float *", ffi.from_buffer("float[]", self.scales))
            m.packed = ffi.NULL
        else:
            self.packed = np.zeros(int(lib.ss_decode_packed_size(m)), np.float32)
            m.packed = ffi.cast("const float *", ffi.from_buffer("float[]", self.packed))
            m.packed_q8 = ffi.NULL
            m.scales_q8 = ffi.NULL
        self.workspace_floats = int(lib.ss_decode_workspace_size(m))
        # layer 0's input products of every token (ss_decode_embed_proj), when they fit
        n = int(lib.ss_decode_embed_proj_size(m))
        fits = embed_proj and 4 * n <= EMBED_PROJ_MAX_BYTES
        self.embed_proj = np.zeros(n, np.float32) if fits else None
        self._q8 = q8
        self.repack()

    def weight_bytes(self):
        """Bytes of the packed matrices (int8 panels and scales, or float32 panels)."""
        return int(self.packed.nbytes + (self.scales.nbytes if self.int8 else 0))

    def _embed_proj(self):
        """Fill the table of layer 0's input products with the kernels active now (the step
        uses it only while they are)."""
        if self.embed_proj is None:
            return
        work = np.zeros(self.workspace_floats, np.float32)
        lib.ss_decode_embed_proj(ffi.from_buffer("float[]", self.embed_proj),
                                 ffi.from_buffer("float[]", work), self._m)

    def _q8_rows(self):
        """{name: (q, scale)}: the given int8 rows, or the float32 views quantised now."""
        fn = "DecodeWeights"
        out = {}
        for name, (shape, dims) in self._shapes.items():
            if self._q8 is not None:
                if name not in self._q8:
                    raise KernelArgumentError("%s: q8 lacks the int8 matrix %s" % (fn, name))
                q, s = self._q8[name]
                _arr(fn, name + " (int8)", q, shape, dims, dtype=np.int8)
                _arr(fn, name + " (scales)", s, shape[:-1], dims.rsplit(",", 1)[0])
            else:
                W = self._views[name] if name != "Wo" else head_weight(self._views)
                q = np.empty(shape, np.int8)
                s = np.empty(shape[:-1], np.float32)
                quantize_rows(q, s, W)
            out[name] = (q, s)
        return out

    def repack(self):
        """Copy the matrices into the decode panels again (after the parameters changed; int8:
        quantised again from the float32 views unless the int8 rows were given)."""
        if not self.int8:
            lib.ss_decode_pack(ffi.from_buffer("float[]", self.packed), self._m)
            self._embed_proj()
            return
        rows = self._q8_rows()
        keep = []

        def q8(name):
            q, s = rows[name]
            st = ffi.new("ss_q8_rows *")
            st.q = ffi.cast("const int8_t *", ffi.from_buffer("int8_t[]", q))
            st.scale = ffi.cast("const float *", ffi.from_buffer("float[]", s))
            keep.append(st)
            return st[0]

        for l in range(self.cfg.L):
            ly, pre = self._layers[l], "l%d." % l
            ly.qWg, ly.qWz, ly.qWcx, ly.qWch = (q8(pre + k) for k in ("Wg", "Wz", "Wcx", "Wch"))
            if pre + "Wp" in rows:
                ly.qWp = q8(pre + "Wp")
        self._m.qWo = q8("Wo")
        lib.ss_decode_pack_q8(ffi.from_buffer("int8_t[]", self.packed),
                              ffi.from_buffer("float[]", self.scales), self._m)
        # the int8 rows were copied into the panels: drop the pointers to them
        for l in range(self.cfg.L):
            ly = self._layers[l]
            for k in ("qWg", "qWz", "qWcx", "qWch", "qWp"):
                setattr(ly, k, {"q": ffi.NULL, "scale": ffi.NULL})
        self._m.qWo = {"q": ffi.NULL, "scale": ffi.NULL}
        self._embed_proj()


def _allowed_arg(fn, allowed, V):
    """cffi pointer for an allowed-ids mask (V) uint8, or NULL for None."""
    if allowed is None:
        return ffi.NULL
    if (not isinstance(allowed, np.ndarray) or allowed.dtype != np.uint8
            or allowed.shape != (V,) or not allowed.flags.c_contiguous):
        raise KernelArgumentError("%s: allowed must be a C-contiguous numpy uint8 array of shape "
                                  "(V,) = (%d,)" % (fn, V))
    if not allowed.any():
        raise KernelArgumentError("%s: every token id is banned by allowed (allow at least one)" % fn)
    return ffi.from_buffer("uint8_t[]", allowed)


class Decoder:
    """One sequence being decoded: recurrent state (L,X,H), logits (V) and workspace, owned here.
    allowed (V) uint8 or None: ids with 0 are never sampled."""

    def __init__(self, weights, allowed=None):
        fn = "Decoder"
        if not isinstance(weights, DecodeWeights):
            raise KernelArgumentError("%s: weights must be a DecodeWeights" % fn)
        cfg = weights.cfg
        self.weights = weights
        self.V = cfg.V
        self.state = np.zeros((cfg.L, cfg.X, cfg.H), np.float32)       # (L,X,H)
        self.logits = np.zeros(cfg.V, np.float32)                      # (V)
        self._work = np.zeros(weights.workspace_floats, np.float32)
        self._swork = np.zeros(int(lib.ss_sample_workspace_size(cfg.V)), np.float32)
        self._p_state = ffi.from_buffer("float[]", self.state)
        self._p_logits = ffi.from_buffer("float[]", self.logits)
        self._p_work = ffi.from_buffer("float[]", self._work)
        self._p_swork = ffi.from_buffer("float[]", self._swork)
        self._allowed = None if allowed is None else np.ascontiguousarray(allowed)
        self._p_allowed = _allowed_arg(fn, self._allowed, cfg.V)

    def reset(self):
        """Zero the recurrent state (a new conversation)."""
        self.state[...] = 0.0

    def step(self, token, head=True):
        """ss_decode_step: feed one token, update the state; with head=True also write
        self.logits (V)."""
        if not 0 <= token < self.V:
            raise KernelArgumentError("decode_step: token %r outside [0, V) = [0, %d)" % (token, self.V))
        lib.ss_decode_step(self._p_logits if head else ffi.NULL, self._p_state, self._p_work,
                           self.weights._m, int(token))


class Rng:
    """The splitmix64 state ss_sample draws from: one uint64 word; the same seed, the same draws."""

    def __init__(self, seed):
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise KernelArgumentError("Rng: seed must be an integer, got %r" % (seed,))
        self.state = np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
        self._p = ffi.from_buffer("uint64_t[]", self.state)

    def uniform(self):
        """ss_rng_uniform: one float in [0, 1)."""
        return float(lib.ss_rng_uniform(self._p))


def _sample_args(fn, rng, temperature, top_k, top_p):
    if not isinstance(rng, Rng):
        raise KernelArgumentError("%s: rng must be a kernels.Rng" % fn)
    if not temperature >= 0:
        raise KernelArgumentError("%s: temperature must be >= 0, got %r" % (fn, temperature))
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 0:
        raise KernelArgumentError("%s: top_k must be an integer >= 0, got %r" % (fn, top_k))
    if not 0 < top_p <= 1:
        raise KernelArgumentError("%s: top_p must be in (0, 1], got %r" % (fn, top_p))


def sample(logits, rng, temperature, top_k, top_p, allowed=None):
    """ss_sample: next token id from logits (V): argmax (ties: lowest id) when temperature == 0
    or top_k == 1; else softmax(logits/temperature) cut to the top_k (0: all) and then to the
    top_p nucleus, drawn from rng (a Rng). allowed (V) uint8 or None: ids with 0 are never
    chosen."""
    fn = "sample"
    if not isinstance(logits, np.ndarray) or logits.ndim != 1:
        raise KernelArgumentError("%s: logits must be a 1-D numpy array (V)" % fn)
    V = logits.shape[0]
    p_logits = _arr(fn, "logits", logits, (V,), "V")
    p_allowed = _allowed_arg(fn, allowed, V)
    _sample_args(fn, rng, temperature, top_k, top_p)
    work = ffi.from_buffer("float[]", np.empty(int(lib.ss_sample_workspace_size(V)), np.float32))
    tok = lib.ss_sample(work, p_logits, p_allowed, V, float(temperature), int(min(top_k, V)),
                        float(top_p), rng._p)        # top_k >= V keeps every id: same as V
    if tok < 0:
        raise KernelArgumentError("%s: every token id is banned" % fn)
    return tok


GEN_STATUS = {0: "running", 1: "eos", 2: "limit", 3: "stopped", 4: "banned"}


class Generator:
    """ss_generate: the whole generation loop in C, on a Decoder's state, workspace, logits and
    allowed ids. The sampling settings are checked once here; the generator state is rng's
    (copied into the C context for each call and back after it, so a Rng shared with other
    draws stays one stream). Nothing is allocated per token.

        gen = Generator(decoder, Rng(1), 0.8, 40, 0.95, eos=eos_id)
        for ids in gen.generate(prompt_ids, max_tokens=200):   # lists of ids, chunk by chunk
            ...
        for tok in gen.tokens(prompt_ids, 200):                # or one id at a time
            ...
        gen.status        # "eos", "limit" or "stopped" (stop() from another thread)

    Every id handed out has been fed to the decoder; [EOS] ends a run and is neither handed out
    nor fed. C runs ahead by up to `chunk` tokens: when the caller stops early (Ctrl-C, closing
    a stream), settle() puts the decoder state, logits and generator back to right after the
    last id handed out, exactly as if the loop had stopped there."""

    def __init__(self, decoder, rng, temperature, top_k, top_p, eos=None, chunk=16):
        fn = "Generator"
        if not isinstance(decoder, Decoder):
            raise KernelArgumentError("%s: decoder must be a kernels.Decoder" % fn)
        _sample_args(fn, rng, temperature, top_k, top_p)
        if eos is not None and not (isinstance(eos, (int, np.integer)) and 0 <= eos < decoder.V):
            raise KernelArgumentError("%s: eos must be a token id in [0, %d) or None, got %r"
                                      % (fn, decoder.V, eos))
        self.chunk = _int(fn, "chunk", chunk)
        self.decoder, self.rng = decoder, rng
        g = ffi.new("ss_gen *")
        g.m = decoder.weights._m
        g.state, g.work = decoder._p_state, decoder._p_work
        g.logits, g.swork = decoder._p_logits, decoder._p_swork
        g.allowed = decoder._p_allowed
        g.temperature, g.top_k, g.top_p = float(temperature), int(min(top_k, decoder.V)), float(top_p)
        g.eos = -1 if eos is None else int(eos)
        g.status = 2
        self._g = g
        self._out = np.zeros(self.chunk, np.int32)
        self._p_out = ffi.from_buffer("int32_t[]", self._out)
        self._snap = None          # (state, logits, rng, n_generated) before the last chunk
        self._given = self._made = 0   # ids of the last chunk handed out / generated
        self._run = 0                  # runs started by tokens()

    @property
    def status(self):
        return GEN_STATUS[self._g.status]

    def stop(self):
        """Ask the running loop to stop before its next token (safe from another thread)."""
        self._g.stop = 1

    def _call(self, p_ids, n_ids, cap):
        g, rng = self._g, self.rng
        g.rng = int(rng.state[0])
        n = lib.ss_generate(g, p_ids, n_ids, self._p_out, cap)
        rng.state[0] = g.rng
        return n

    def generate(self, prompt, max_tokens):
        """Feed prompt (a non-empty sequence of ids), then generate up to max_tokens ids;
        yields them as lists, chunk by chunk (never an empty list)."""
        self._run += 1
        for ids in self._chunks(prompt, max_tokens):
            self._given = len(ids)
            yield ids

    def tokens(self, prompt, max_tokens):
        """The same ids one at a time. Closing this iterator early (or an exception in the
        caller's loop) settles the state: see settle()."""
        self._run += 1
        run = self._run
        try:
            for ids in self._chunks(prompt, max_tokens):
                for i, t in enumerate(ids):
                    self._given = i + 1
                    yield t
        finally:
            if self._run == run:           # not a later run on the same decoder
                self.settle()

    def _chunks(self, prompt, max_tokens):
        fn = "generate"
        V = self.decoder.V
        ids = np.ascontiguousarray(prompt, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise KernelArgumentError("%s: prompt must be a non-empty 1-D sequence of token ids" % fn)
        if int(ids.min()) < 0 or int(ids.max()) >= V:
            raise KernelArgumentError("%s: prompt has ids outside [0, V) = [0, %d)" % (fn, V))
        max_tokens = _int(fn, "max_tokens", max_tokens, 0)
        ids = ids.astype(np.int32)
        g, dec = self._g, self.decoder
        g.max_tokens = max_tokens
        g.stop = 0
        self._snap = None
        self._call(ffi.from_buffer("int32_t[]", ids), int(ids.size), 0)    # the prompt only
        while g.status == 0:
            self._snap = (dec.state.copy(), dec.logits.copy(), int(self.rng.state[0]),
                          g.n_generated)
            self._given = 0
            self._made = n = self._call(ffi.NULL, 0, self.chunk)
            if n:
                yield self._out[:n].tolist()
        self._snap = None

    def settle(self):
        """After stopping early: make the decoder state, logits and generator what they would
        be had the loop stopped right after the last id handed out (no-op when all were)."""
        if self._snap is None or self._given >= self._made:
            return
        g, dec = self._g, self.decoder
        state, logits, rng, n_gen = self._snap
        dec.state[...] = state
        dec.logits[...] = logits
        self.rng.state[0] = rng
        g.n_generated, g.status, g.stop = n_gen, 0, 0
        self._call(ffi.NULL, 0, self._given)       # the same ids again: same state, same draws
        self._made = self._given
        g.status = 3
