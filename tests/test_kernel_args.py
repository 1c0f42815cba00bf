"""Bad arguments to the kernel wrappers raise KernelArgumentError with a clear message and never
reach C: the compiled library is replaced by a tripwire for every call that must fail."""
import gc

import numpy as np
import pytest

from shoestring import kernels
from shoestring.errors import KernelArgumentError, ShoestringError


class Tripwire:
    """Stands in for the compiled lib: any ss_* kernel call fails the test."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        if name.startswith("ss_") and not name.startswith("ss_isa") and name != "ss_build_info":
            def trip(*args):
                raise AssertionError("bad arguments reached C: %s" % name)
            return trip
        return getattr(self._real, name)


@pytest.fixture
def no_c(monkeypatch):
    # objects of earlier tests left in reference cycles (a Trainer and its Run view) are freed
    # now, not under the tripwire: a freed Network stops its worker threads through the C library
    gc.collect()
    monkeypatch.setattr(kernels, "lib", Tripwire(kernels.lib))


def f32(*shape):
    return np.zeros(shape, np.float32)


def readonly(a):
    a.setflags(write=False)
    return a


def noncontig(*shape):
    """A float32 view with the given shape that is not C-contiguous."""
    return np.zeros(shape[:-1] + (shape[-1] * 2,), np.float32)[..., ::2]


N, C, OC, H, X, V = 5, 7, 3, 6, 4, 9
TOK = np.array([0, 1, 8, 2, 3], np.int32)

# (call, words the message must contain)
BAD_CALLS = {
    # matmul_forward(out, inp, W, b)
    "mm_fwd_float64_inp": (lambda: kernels.matmul_forward(f32(N, OC), np.zeros((N, C)), f32(OC, C)),
                           ["matmul_forward", "inp", "float32", "float64"]),
    "mm_fwd_noncontig_W": (lambda: kernels.matmul_forward(f32(N, OC), f32(N, C), noncontig(OC, C)),
                           ["matmul_forward", "W", "C-contiguous"]),
    "mm_fwd_wrong_out": (lambda: kernels.matmul_forward(f32(N, OC + 1), f32(N, C), f32(OC, C)),
                         ["matmul_forward", "out", "(N,OC)"]),
    "mm_fwd_wrong_W": (lambda: kernels.matmul_forward(f32(N, OC), f32(N, C), f32(OC, C + 1)),
                       ["matmul_forward", "W", "(OC,C)"]),
    "mm_fwd_wrong_bias": (lambda: kernels.matmul_forward(f32(N, OC), f32(N, C), f32(OC, C), f32(OC + 1)),
                          ["matmul_forward", "b", "(OC)"]),
    "mm_fwd_list": (lambda: kernels.matmul_forward(f32(N, OC), [[0.0] * C] * N, f32(OC, C)),
                    ["matmul_forward", "inp"]),
    "mm_fwd_1d_W": (lambda: kernels.matmul_forward(f32(N, OC), f32(N, C), f32(OC * C)),
                    ["matmul_forward", "W", "2-D"]),
    "mm_fwd_readonly_out": (lambda: kernels.matmul_forward(readonly(f32(N, OC)), f32(N, C), f32(OC, C)),
                            ["matmul_forward", "out", "writable"]),
    "mm_fwd_out_none": (lambda: kernels.matmul_forward(None, f32(N, C), f32(OC, C)),
                        ["matmul_forward", "out", "required"]),
    # matmul_backward(dinp, dW, db, dout, inp, W)
    "mm_bwd_wrong_dW": (lambda: kernels.matmul_backward(f32(N, C), f32(C, OC), None, f32(N, OC),
                                                        f32(N, C), f32(OC, C)),
                        ["matmul_backward", "dW", "(OC,C)"]),
    "mm_bwd_readonly_db": (lambda: kernels.matmul_backward(None, None, readonly(f32(OC)), f32(N, OC),
                                                           f32(N, C), f32(OC, C)),
                           ["matmul_backward", "db", "writable"]),
    "mm_bwd_float64_dout": (lambda: kernels.matmul_backward(f32(N, C), None, None, np.zeros((N, OC)),
                                                            f32(N, C), f32(OC, C)),
                            ["matmul_backward", "dout", "float32"]),
    "mm_bwd_wrong_dout": (lambda: kernels.matmul_backward(f32(N, C), None, None, f32(N + 1, OC),
                                                          f32(N, C), f32(OC, C)),
                          ["matmul_backward", "dout", "(N,OC)"]),
    # rmsnorm
    "rms_fwd_wrong_rstd": (lambda: kernels.rmsnorm_forward(f32(N, H), f32(N + 1), f32(N, H), f32(H), 1e-5),
                           ["rmsnorm_forward", "rstd", "(N)"]),
    "rms_fwd_wrong_gain": (lambda: kernels.rmsnorm_forward(f32(N, H), f32(N), f32(N, H), f32(H - 1), 1e-5),
                           ["rmsnorm_forward", "gain", "(H)"]),
    "rms_bwd_noncontig_dout": (lambda: kernels.rmsnorm_backward(f32(N, H), f32(H), noncontig(N, H),
                                                                f32(N, H), f32(H), f32(N)),
                               ["rmsnorm_backward", "dout", "C-contiguous"]),
    "rms_bwd_readonly_dinp": (lambda: kernels.rmsnorm_backward(readonly(f32(N, H)), None, f32(N, H),
                                                               f32(N, H), f32(H), f32(N)),
                              ["rmsnorm_backward", "dinp", "writable"]),
    # adamw_step(params, grads, m, v, n_decay, ...)
    "adam_wrong_length": (lambda: kernels.adamw_step(f32(10), f32(9), f32(10), f32(10), 5, 1e-3, 0.9,
                                                     0.999, 1e-8, 0.0, 1.0, 1.0, 1.0),
                          ["adamw_step", "grads", "(n)"]),
    "adam_float64_v": (lambda: kernels.adamw_step(f32(10), f32(10), f32(10), np.zeros(10), 5, 1e-3,
                                                  0.9, 0.999, 1e-8, 0.0, 1.0, 1.0, 1.0),
                       ["adamw_step", "v", "float32"]),
    "adam_decay_too_long": (lambda: kernels.adamw_step(f32(10), f32(10), f32(10), f32(10), 11, 1e-3,
                                                       0.9, 0.999, 1e-8, 0.0, 1.0, 1.0, 1.0),
                            ["adamw_step", "n_decay", "exceeds"]),
    "adam_negative_decay": (lambda: kernels.adamw_step(f32(10), f32(10), f32(10), f32(10), -1, 1e-3,
                                                       0.9, 0.999, 1e-8, 0.0, 1.0, 1.0, 1.0),
                            ["adamw_step", "n_decay"]),
    "adam_2d_params": (lambda: kernels.adamw_step(f32(2, 5), f32(10), f32(10), f32(10), 0, 1e-3,
                                                  0.9, 0.999, 1e-8, 0.0, 1.0, 1.0, 1.0),
                       ["adamw_step", "params", "1-D"]),
    "adam_readonly_m": (lambda: kernels.adamw_step(f32(10), f32(10), readonly(f32(10)), f32(10), 0,
                                                   1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 1.0, 1.0),
                        ["adamw_step", "m", "writable"]),
    # sumsq
    "sumsq_list": (lambda: kernels.sumsq([1.0, 2.0]), ["sumsq", "numpy array"]),
    "sumsq_float64": (lambda: kernels.sumsq(np.zeros(4)), ["sumsq", "float32"]),
    "sumsq_noncontig": (lambda: kernels.sumsq(noncontig(4, 4)), ["sumsq", "C-contiguous"]),
    # elementwise
    "sigmoid_wrong_shape": (lambda: kernels.sigmoid_forward(f32(8), f32(9)), ["sigmoid_forward", "out"]),
    "sigmoid_bwd_readonly": (lambda: kernels.sigmoid_backward(readonly(f32(8)), f32(8), f32(8)),
                             ["sigmoid_backward", "dinp", "writable"]),
    "gelu_float64": (lambda: kernels.gelu_forward(f32(8), np.zeros(8)), ["gelu_forward", "inp", "float32"]),
    "gelu_bwd_noncontig": (lambda: kernels.gelu_backward(f32(4, 4), noncontig(4, 4), f32(4, 4)),
                           ["gelu_backward", "dout", "C-contiguous"]),
    "gelu_not_array": (lambda: kernels.gelu_forward(f32(3), (1.0, 2.0, 3.0)), ["gelu_forward", "inp"]),
    "softmax_wrong_out": (lambda: kernels.softmax_forward(f32(N, X + 1), f32(N, X)),
                          ["softmax_forward", "out", "(N,X)"]),
    "softmax_bwd_float64": (lambda: kernels.softmax_backward(f32(N, X), np.zeros((N, X)), f32(N, X)),
                            ["softmax_backward", "dout", "float32"]),
    # cross-entropy
    "ce_target_too_big": (lambda: kernels.crossentropy_forward(f32(N), None, f32(N, V),
                                                               np.array([0, 1, 9, 2, 3], np.int32)),
                          ["crossentropy_forward", "targets", "[0, V)"]),
    "ce_target_negative": (lambda: kernels.crossentropy_forward(f32(N), None, f32(N, V),
                                                                np.array([0, -1, 2, 2, 3], np.int32)),
                           ["crossentropy_forward", "targets", "[0, V)"]),
    "ce_target_int64": (lambda: kernels.crossentropy_forward(f32(N), None, f32(N, V),
                                                             TOK.astype(np.int64)),
                        ["crossentropy_forward", "targets", "int32"]),
    "ce_target_wrong_length": (lambda: kernels.crossentropy_forward(f32(N), None, f32(N, V), TOK[:4]),
                               ["crossentropy_forward", "targets", "(N,)"]),
    "ce_target_list": (lambda: kernels.crossentropy_forward(f32(N), None, f32(N, V), [0, 1, 2, 3, 4]),
                       ["crossentropy_forward", "targets"]),
    "ce_wrong_dlogits": (lambda: kernels.crossentropy_forward(f32(N), f32(N, V - 1), f32(N, V), TOK),
                         ["crossentropy_forward", "dlogits", "(N,V)"]),
    "ce_readonly_losses": (lambda: kernels.crossentropy_forward(readonly(f32(N)), None, f32(N, V), TOK),
                           ["crossentropy_forward", "losses", "writable"]),
    # embedding
    "emb_token_out_of_range": (lambda: kernels.embedding_forward(f32(N, C), np.array([0, 1, 2, 3, V], np.int32),
                                                                 f32(V, C)),
                               ["embedding_forward", "tokens", "[0, V)"]),
    "emb_bwd_wrong_dout": (lambda: kernels.embedding_backward(f32(V, C), f32(N, C + 1), TOK),
                           ["embedding_backward", "dout", "(N,C)"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_argument_raises_before_c(no_c, case):
    call, words = BAD_CALLS[case]
    with pytest.raises(KernelArgumentError) as info:
        call()
    msg = str(info.value)
    for w in words:
        assert w in msg, "message %r lacks %r" % (msg, w)
    assert "\n" not in msg


def test_kernel_argument_error_is_a_shoestring_error():
    assert issubclass(KernelArgumentError, ShoestringError)


def test_failed_call_leaves_outputs_untouched():
    out = np.full((N, OC), 7.0, np.float32)
    with pytest.raises(KernelArgumentError):
        kernels.matmul_forward(out, f32(N, C), f32(OC, C), np.zeros(OC))  # float64 bias
    assert np.all(out == 7.0)


def test_good_arguments_do_reach_c():
    """The tripwire is not vacuous: the same call with good arguments computes."""
    out = np.full((N, OC), 7.0, np.float32)
    kernels.matmul_forward(out, np.ones((N, C), np.float32), np.ones((OC, C), np.float32))
    assert np.all(out == C)


def test_set_isa_rejects_unknown_name():
    with pytest.raises(ShoestringError, match="unknown instruction set"):
        kernels.set_isa("sse9")
