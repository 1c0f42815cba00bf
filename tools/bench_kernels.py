"""bench_kernels.py: GFLOP/s of shoestring's matmul forward and backward at the model's shapes,
next to numpy's single-threaded sgemm measured in the same run.

    python tools/bench_kernels.py [--isa avx512] [--repeats 7] [--min-time 0.02]

forward  out(N,OC) = inp(N,C) . W(OC,C)^T + b         numpy: np.matmul(inp, W.T, out=o); o += b
backward dinp += dout . W; dW += dout^T . inp; db     numpy: the three products (overwriting)

Each figure is the best of --repeats timed batches (the machine may be shared: best-of-N is the
least noisy estimate); ours and numpy's batches alternate so they see the same load. Time is
this thread's CPU time (time.thread_time), so being descheduled by other processes on a shared
machine does not count against either side; --wall uses wall-clock time instead. "kernel"
calls the C function through cffi with prepared pointers (like np.matmul, one call); "wrapper"
goes through shoestring.kernels' validating wrapper (adds the Python argument checks).
"""
import os

# numpy must see these before it is imported: one BLAS thread, like our one-thread kernels.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from shoestring import kernels  # noqa: E402
from benchutil import cpu_name

# (N, C, OC): B*T = 16*80 rows through the input-side projection of all experts at once
# (X * (Wz + Wcx) rows = 6 * 192 = 1152), a 16-row router/recurrent product, the output
# projection to V = 850 logits, and single-token decode steps.
SHAPES = [(1280, 96, 1152), (16, 96, 96), (1280, 96, 850), (1, 96, 850), (1, 96, 96)]


_clock = time.thread_time


def best_time(fn, min_time, state):
    """Seconds per call of fn: one batch of calls lasting about min_time; the iteration count
    is calibrated on the first batch and kept in state."""
    iters = state.get("iters")
    if iters is None:
        iters, t = 1, 0.0
        while True:
            t0 = _clock()
            for _ in range(iters):
                fn()
            t = _clock() - t0
            if t >= min_time / 4:
                break
            iters *= 4
        iters = max(1, int(iters * min_time / max(t, 1e-9)))
        state["iters"] = iters
    t0 = _clock()
    for _ in range(iters):
        fn()
    return (_clock() - t0) / iters


def bench_shape(N, C, OC, repeats, min_time):
    rng = np.random.default_rng(0)
    inp = rng.standard_normal((N, C), dtype=np.float32)
    W = rng.standard_normal((OC, C), dtype=np.float32) * 0.1
    b = rng.standard_normal(OC, dtype=np.float32)
    dout = rng.standard_normal((N, OC), dtype=np.float32)
    out = np.empty((N, OC), np.float32)
    dinp = np.zeros((N, C), np.float32)
    dW = np.zeros((OC, C), np.float32)
    db = np.zeros(OC, np.float32)
    o_np, dinp_np = np.empty_like(out), np.empty_like(dinp)
    dW_np, db_np = np.empty_like(dW), np.empty_like(db)

    ffi, lib = kernels.ffi, kernels.lib
    p = {k: ffi.from_buffer("float[]", a) for k, a in
         dict(out=out, inp=inp, W=W, b=b, dout=dout, dinp=dinp, dW=dW, db=db).items()}

    def ours_fwd():
        lib.ss_matmul_forward(p["out"], p["inp"], p["W"], p["b"], N, C, OC)

    def ours_bwd():
        lib.ss_matmul_backward(p["dinp"], p["dW"], p["db"], p["dout"], p["inp"], p["W"], N, C, OC)

    def wrap_fwd():
        kernels.matmul_forward(out, inp, W, b)

    def wrap_bwd():
        kernels.matmul_backward(dinp, dW, db, dout, inp, W)

    WT = W.T

    def np_fwd():
        np.matmul(inp, WT, out=o_np)
        np.add(o_np, b, out=o_np)

    def np_bwd():
        np.matmul(dout, W, out=dinp_np)
        np.matmul(dout.T, inp, out=dW_np)
        np.sum(dout, axis=0, out=db_np)

    rows = []
    for name, ours, wrap, ref, flops in (("forward", ours_fwd, wrap_fwd, np_fwd, 2 * N * C * OC),
                                         ("backward", ours_bwd, wrap_bwd, np_bwd, 4 * N * C * OC)):
        best = {"ours": 1e9, "wrap": 1e9, "numpy": 1e9}
        states = {k: {} for k in best}
        for _ in range(repeats):
            for key, fn in (("numpy", ref), ("ours", ours), ("wrap", wrap)):
                best[key] = min(best[key], best_time(fn, min_time, states[key]))
        rows.append((name, flops / best["ours"] / 1e9, flops / best["wrap"] / 1e9,
                     flops / best["numpy"] / 1e9, best["numpy"] / best["ours"],
                     best["numpy"] / best["wrap"]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--isa", help="force an instruction set (default: the best one available)")
    ap.add_argument("--repeats", type=int, default=7, help="timed batches per figure (best kept)")
    ap.add_argument("--min-time", type=float, default=0.02, help="seconds per timed batch")
    ap.add_argument("--wall", action="store_true", help="time with wall clock, not thread CPU time")
    args = ap.parse_args(argv)
    global _clock
    if args.wall:
        _clock = time.perf_counter
    if args.isa:
        kernels.set_isa(args.isa)
    print("machine: %s; numpy %s, single-threaded BLAS; shoestring ISA: %s"
          % (cpu_name(), np.__version__, kernels.isa_active()))
    print("best of %d batches of ~%.0f ms of %s time; GFLOP/s (higher is better); "
          "ratio = numpy time / ours" % (args.repeats, args.min_time * 1e3,
                                         "wall-clock" if args.wall else "thread CPU"))
    hdr = ("| N, C, OC | pass | kernel GFLOP/s | wrapper GFLOP/s | numpy GFLOP/s "
           "| kernel / numpy | wrapper / numpy |")
    print(hdr)
    print("|" + "---|" * 7)
    for N, C, OC in SHAPES:
        for name, g_ours, g_wrap, g_np, ratio, ratio_w in bench_shape(N, C, OC, args.repeats,
                                                                      args.min_time):
            print("| %d, %d, %d | %s | %.1f | %.1f | %.1f | %.2fx | %.2fx |"
                  % (N, C, OC, name, g_ours, g_wrap, g_np, ratio, ratio_w), flush=True)


if __name__ == "__main__":
    main()
