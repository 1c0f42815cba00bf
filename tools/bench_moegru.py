"""bench_moegru.py: time one MoE-GRU layer, forward + backward, at the default shape.

Usage: python tools/bench_moegru.py [--B 16 --T 80 --I 96 --H 96 --X 6 --K 6 2 --reps 5]
Prints, per instruction set and K, the best-of-reps milliseconds for forward and backward, the
tokens per second of forward+backward, the GFLOP/s of the matmul work actually done (router and
projection, plus the expert work of the K active experts), that throughput as a fraction of a
large matmul's measured in the same run ("/ceiling"), and the speedup of sparse routing over
the largest K given. Times are CPU time of the calling thread (see clock()).
Run it from any directory with the package installed.
"""
import argparse
import time

import numpy as np

from shoestring import kernels


def clock():
    """CPU time of the calling thread: the layer is single-threaded C, and on a shared machine
    this is far steadier than wall time (which also counts time spent descheduled)."""
    return time.thread_time()


def flops(B, T, I, H, X, K):
    """Matmul FLOPs of one forward and one backward (backward = 2x forward) of the layer."""
    N = B * T
    fwd = 2 * N * X * I + 2 * N * K * H * (2 * I + H) + (2 * N * H * I if I != H else 0)
    return fwd, 2 * fwd


def bench(B, T, I, H, X, K, reps, seed=0):
    rng = np.random.default_rng(seed)
    f = np.float32
    w = {"Wg": rng.standard_normal((X, I)) / np.sqrt(I), "bg": np.zeros(X),
         "Wz": rng.standard_normal((X, H, I)) / np.sqrt(I), "bz": np.zeros((X, H)),
         "Wcx": rng.standard_normal((X, H, I)) / np.sqrt(I),
         "Wch": rng.standard_normal((X, H, H)) / np.sqrt(H), "bc": np.zeros((X, H)),
         "gamma": np.ones(H)}
    if I != H:
        w["Wp"], w["bp"] = rng.standard_normal((H, I)) / np.sqrt(I), np.zeros(H)
    w = {k: np.ascontiguousarray(v, dtype=f) for k, v in w.items()}
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    inp = rng.standard_normal((B, T, I)).astype(f)
    dout = rng.standard_normal((B, T, H)).astype(f)
    out = np.zeros((B, T, H), f)
    dinp = np.zeros_like(inp)
    h = np.zeros((B, X, H), f)
    bind = kernels.MoeGruBinding(w, B, T, I, K, 1e-5, grads=grads)
    tf, tb = [], []
    for _ in range(reps):
        t0 = clock()
        bind.forward(out, h, inp)
        t1 = clock()
        bind.backward(dinp, dout, inp)
        t2 = clock()
        tf.append(t1 - t0)
        tb.append(t2 - t1)
    return min(tf), min(tb)


def ceiling(N, I, H, reps):
    """GFLOP/s of one big matmul forward + backward (N, I) x (H, I)^T in the same run: the
    throughput the layer would reach if all its work were large matmuls."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, I)).astype(np.float32)
    W = rng.standard_normal((H, I)).astype(np.float32)
    y, dx, dW = np.zeros((N, H), np.float32), np.zeros_like(x), np.zeros_like(W)
    best = 1e9
    for _ in range(reps):
        t0 = clock()
        for _ in range(10):
            kernels.matmul_forward(y, x, W)
            kernels.matmul_backward(dx, dW, None, y, x, W)
        best = min(best, (clock() - t0) / 10)
    return 6 * N * I * H / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--T", type=int, default=80)
    ap.add_argument("--I", type=int, default=96)
    ap.add_argument("--H", type=int, default=96)
    ap.add_argument("--X", type=int, default=6)
    ap.add_argument("--K", type=int, nargs="+", default=[6, 2])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--isa", nargs="+", default=None, help="instruction sets (default: all here)")
    a = ap.parse_args()
    before = kernels.isa_active()
    print("B=%d T=%d I=%d H=%d X=%d; best of %d" % (a.B, a.T, a.I, a.H, a.X, a.reps))
    print("ceiling: one (B*T, I) x (H, I)^T matmul forward+backward in the same run;"
          " speedup: time at the largest K over time at this K")
    print("%-8s %3s %9s %9s %11s %9s %9s %8s" % ("isa", "K", "fwd ms", "bwd ms", "tok/s f+b",
                                                 "GFLOP/s", "/ceiling", "speedup"))
    for isa in a.isa or kernels.isa_available():
        kernels.set_isa(isa)
        top = ceiling(a.B * a.T, a.I, a.H, a.reps)
        base = None
        for K in sorted(a.K, reverse=True):
            tf, tb = bench(a.B, a.T, a.I, a.H, a.X, K, a.reps)
            ff, fb = flops(a.B, a.T, a.I, a.H, a.X, K)
            base = base or tf + tb
            gf = (ff + fb) / (tf + tb) / 1e9
            print("%-8s %3d %9.2f %9.2f %11.0f %9.2f %8.2fx %7.2fx" % (
                isa, K, tf * 1e3, tb * 1e3, a.B * a.T / (tf + tb), gf, gf / top,
                base / (tf + tb)))
    kernels.set_isa(before)


if __name__ == "__main__":
    main()
