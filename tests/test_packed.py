"""Pre-packed matmul (the MoE-GRU recurrence packs Wch_e once per window): the same bits as
packing on every call, for every instruction set, on awkward sizes."""
import numpy as np
import pytest

from shoestring import kernels
from shoestring.errors import KernelArgumentError


@pytest.mark.parametrize("N", [1, 3, 4, 5, 9, 17])
@pytest.mark.parametrize("C,OC", [(1, 1), (7, 15), (96, 96), (129, 47), (300, 49), (33, 100)])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_forward_is_bitwise_the_forward(isa, N, C, OC, bias):
    rng = np.random.default_rng(N * 1000 + C + OC)
    inp = rng.standard_normal((N, C), dtype=np.float32)
    W = rng.standard_normal((OC, C), dtype=np.float32)
    b = rng.standard_normal(OC, dtype=np.float32) if bias else None
    want = kernels.matmul_forward(np.empty((N, OC), np.float32), inp, W, b)
    pk = kernels.matmul_pack(W)
    assert pk.data.size <= C * (OC + 64)
    got = kernels.matmul_forward_packed(np.full((N, OC), np.nan, np.float32), inp, W, pk, b)
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    np.testing.assert_allclose(got, inp.astype(np.float64) @ W.T.astype(np.float64)
                               + (0 if b is None else b), rtol=1e-4, atol=1e-4)


def test_packed_matrix_is_checked():
    W = np.ones((8, 4), np.float32)
    pk = kernels.matmul_pack(W)
    out = np.empty((5, 8), np.float32)
    with pytest.raises(KernelArgumentError, match="packed must be matmul_pack"):
        kernels.matmul_forward_packed(out, np.ones((5, 4), np.float32), W, np.ones(32, np.float32))
    with pytest.raises(KernelArgumentError, match="packed must be matmul_pack"):
        kernels.matmul_forward_packed(np.empty((5, 9), np.float32), np.ones((5, 4), np.float32),
                                      np.ones((9, 4), np.float32), pk)
    others = [i for i in kernels.isa_available() if i != pk.isa]
    if others:
        before = kernels.isa_active()
        kernels.set_isa(others[0])
        try:
            with pytest.raises(KernelArgumentError, match="pack it again"):
                kernels.matmul_forward_packed(out, np.ones((5, 4), np.float32), W, pk)
        finally:
            kernels.set_isa(before)
