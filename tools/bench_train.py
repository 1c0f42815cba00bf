"""Benchmark (not a test): training throughput of the default model.

Measures training tokens/s on nano-shakespeare at the default configuration (V=850, C=H=96, L=2,
X=6, T=80, B=16) for 1 and 2 threads (or --threads-list), dense (K=6) and --active-experts 2,
each in its own process (so peak RSS is per configuration), every configuration run --rounds
times interleaved (the best kept), next to numpy's single-threaded sgemm rate measured in the
same run. Effective GFLOP/s counts the model's useful FLOPs (3x the forward: forward +
backward), so sparse routing shows as fewer FLOPs per token.

    python tools/bench_train.py [--data ../shared/data/nano-shakespeare.txt] [--steps 20]
        [--rounds 2] [--threads-list 1 2 4]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "nano-shakespeare.txt")


def flops_per_token(V, C, H, L, X, K):
    """Forward FLOPs per token (multiply-add = 2)."""
    f = 0
    for l in range(L):
        I = C if l == 0 else H
        f += 2 * X * I                      # router
        f += 2 * K * (2 * H * I + H * H)    # update gate, candidate (input and recurrent halves)
        if I != H:
            f += 2 * H * I                  # residual projection
    return f + 2 * V * H                    # head


def child(args):
    """Run in a fresh process: time `steps` training steps; print one JSON line."""
    import resource

    import numpy as np

    from shoestring.model import Network
    from shoestring.optim import AdamW
    from shoestring.params import ModelConfig, ParamLayout
    from shoestring.dataset import Windows
    from shoestring import kernels

    tokens = np.load(args.tokens)
    cfg = ModelConfig(V=args.vocab, K=args.k)
    B, T = 16, 80
    lay = ParamLayout(cfg)
    params = lay.init(0)
    grads = lay.zeros()
    opt = AdamW(lay.n, lay.n_decay)
    net = Network(cfg, params, B, T, threads=args.threads)
    win = Windows(tokens, B, T)
    h = np.zeros((cfg.L, B, cfg.X, cfg.H), np.float32)

    def step(w):
        net.zero_grads()
        tok, tgt = win.window(w % win.count)
        loss = net.forward_backward(tok, tgt, h, 1.0 / (B * T))
        net.reduce_grads(grads)
        opt.update(params, grads, 1e-3, 1.0, net.run, net.threads)
        return loss

    for w in range(3):
        step(w)
    best = float("inf")
    for rep in range(args.reps):
        t0 = time.perf_counter()
        for w in range(args.steps):
            step(w)
        best = min(best, time.perf_counter() - t0)
    net.close()
    tps = args.steps * B * T / best
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / 1024 if sys.platform != "darwin" else rss / 1024 / 1024
    print(json.dumps({"tokens_per_s": tps, "rss_mb": rss_mb, "isa": kernels.isa_active()}))


def sgemm_rate():
    """numpy single-threaded sgemm GFLOP/s at the model's largest training shape (best of 20)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((1280, 96), dtype=np.float32)
    w = rng.standard_normal((1152, 96), dtype=np.float32)
    out = np.empty((1280, 1152), np.float32)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        for _ in range(10):
            np.matmul(a, w.T, out=out)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * 1280 * 96 * 1152 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs of every configuration, interleaved; the best is reported")
    ap.add_argument("--threads-list", type=int, nargs="+", default=[1, 2],
                    help="thread counts to measure (the first is the baseline of the ratios)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    import numpy as np

    from shoestring.tokenizer import Tokenizer

    tok = Tokenizer.train(paths=[args.data], vocab_size=850)
    with open(args.data, encoding="utf-8") as f:
        ids = np.asarray(tok.encode_array(f.read()), np.int32)
    tmp = tempfile.mkdtemp(prefix="ss_bench_")
    tpath = os.path.join(tmp, "tokens.npy")
    np.save(tpath, ids)
    rate = sgemm_rate()
    print("load average (1, 5, 15 min) at the start: %.2f %.2f %.2f" % os.getloadavg())
    print("numpy single-threaded sgemm (1280x96 . 96x1152): %.1f GFLOP/s" % rate)
    print("corpus: %s, %d tokens, vocabulary %d" % (os.path.basename(args.data), len(ids), tok.vocab_size))
    print()
    print("| routing | threads | tokens/s | effective GFLOP/s | ratio to numpy sgemm | peak RSS | ISA |")
    print("|---|---|---|---|---|---|---|")
    configs = [(k, threads) for k in (6, 2) for threads in args.threads_list]
    best = {}
    for _ in range(args.rounds):        # rounds interleave the configurations: a passing load
        for k, threads in configs:      # spoils one round of each, not every run of one
            cmd = [sys.executable, __file__, "--child", "--tokens", tpath, "--vocab",
                   str(tok.vocab_size), "--threads", str(threads), "--k", str(k),
                   "--steps", str(args.steps), "--reps", str(args.reps)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if (k, threads) not in best or r["tokens_per_s"] > best[(k, threads)]["tokens_per_s"]:
                best[(k, threads)] = r
    for k, threads in configs:
        r = best[(k, threads)]
        gf = r["tokens_per_s"] * 3 * flops_per_token(tok.vocab_size, 96, 96, 2, 6, k) / 1e9
        print("| %s | %d | %.0f | %.2f | %.2f | %.0f MB | %s |" % (
            "dense (K=6)" if k == 6 else "top-%d" % k, threads, r["tokens_per_s"], gf,
            gf / rate, r["rss_mb"], r["isa"]))
    print()
    for k in (6, 2):
        for threads in args.threads_list[1:]:
            print("K=%d: %d threads / 1 thread = %.2fx" % (
                k, threads, best[(k, threads)]["tokens_per_s"] / best[(k, 1)]["tokens_per_s"]))
    print("load average (1, 5, 15 min) at the end: %.2f %.2f %.2f" % os.getloadavg())
    print("training FLOPs per token: dense %.2f M, top-2 %.2f M" % (
        3 * flops_per_token(tok.vocab_size, 96, 96, 2, 6, 6) / 1e6,
        3 * flops_per_token(tok.vocab_size, 96, 96, 2, 6, 2) / 1e6))


if __name__ == "__main__":
    main()
