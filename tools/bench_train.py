"""Benchmark (not a test): training throughput and thread scaling of the default model.

Two training steps are timed, each for 1 and 2 threads (or --threads-list), dense (K=6) and
--active-experts 2 (top-2), in its own process (so peak RSS is per configuration), every
configuration run --rounds times interleaved (the best kept):

- `trainer`: `Trainer.step` of a run with the default TrainConfig (V=850, C=H=96, L=2, X=6,
  B=16, T=80; the default regularisers: locked dropout 0.3, embedding dropout 0.1, DropConnect
  0.3 on Wch, the candidate's soft cap): masks, forward and backward, gradient sum, AdamW, the
  state guard, as `shoestring train` runs it;
- `network`: the bare network step (no regularisers, no cap): forward_backward with the
  gradient sum and AdamW in the same hand-off to the threads (Network.step_binding, csrc/step.c),
  as training runs them; the kernels' figure.

Thread scaling is the ratio of two configurations measured in this run. Numpy's single-threaded
sgemm rate is measured in the same run; effective GFLOP/s counts the model's useful FLOPs (3x the
forward: forward + backward), so sparse routing shows as fewer FLOPs per token. About a minute.

    python tools/bench_train.py [--data ../shared/data/nano-shakespeare.txt] [--steps 20]
        [--reps 3] [--rounds 2] [--threads-list 1 2 4] [--steps-kind trainer network]
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

    from shoestring import kernels
    from shoestring.config import NEW_RUN_CAP, TrainConfig
    from shoestring.dataset import Windows
    from shoestring.model import Network
    from shoestring.optim import AdamW
    from shoestring.params import ModelConfig, ParamLayout
    from shoestring.tokenizer import Tokenizer
    from shoestring.trainer import Trainer

    tokens = np.load(args.tokens)
    B, T = 16, 80
    if args.kind == "trainer":
        cfg = ModelConfig(V=args.vocab, K=args.k, cap=NEW_RUN_CAP)
        config = TrainConfig(model=cfg, threads=args.threads, batch_size=B, seq_length=T,
                             max_steps=10 ** 6)
        trainer = Trainer(config, cfg, Tokenizer.load(args.tokenizer), tokens, tokens[:2000])
        net = trainer.net

        def step(w):
            trainer.step()
    else:
        cfg = ModelConfig(V=args.vocab, K=args.k)
        lay = ParamLayout(cfg)
        params = lay.init(0)
        grads = lay.zeros()
        opt = AdamW(lay.n, lay.n_decay)
        net = Network(cfg, params, B, T, threads=args.threads)
        win = Windows(tokens, B, T)
        h = np.zeros((cfg.L, B, cfg.X, cfg.H), np.float32)

        update = net.step_binding(grads, params, opt.m, opt.v, lay.n_decay)

        def step(w):
            tok, tgt = win.window(w % win.count)
            bc1, bc2 = opt.bias_corrections()
            update.set(tokens=B * T, lr=1e-3, beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps,
                       weight_decay=opt.weight_decay, clip=1.0, bc1=bc1, bc2=bc2)
            net.forward_backward(tok, tgt, h, 1.0 / (B * T), zero=True, update=update)
            opt.step += 1

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


def split_check(sizes=(499_486, 2_097_152, 8_388_608), reps=200):
    """In this process: the gradient sum of two shards and AdamW (with its norm) over n
    parameters on the 2-thread Network's workers against one thread, best of 5 x reps each;
    returns [(n, threaded ms, serial ms)]. optim.PARALLEL_MIN should sit where they cross."""
    import numpy as np

    from shoestring import optim
    from shoestring.model import Network
    from shoestring.params import ModelConfig, ParamLayout

    cfg = ModelConfig()
    net = Network(cfg, ParamLayout(cfg).init(0), 16, 8, threads=2)    # its run(): 2 threads
    keep, optim.PARALLEL_MIN = optim.PARALLEL_MIN, 0
    rows = []
    try:
        for n in sizes:
            rng = np.random.default_rng(0)
            g0, g1 = (rng.standard_normal(n, dtype=np.float32) * 1e-3 for _ in range(2))
            out, params = np.zeros(n, np.float32), rng.standard_normal(n, dtype=np.float32)
            opt = optim.AdamW(n, n // 2)

            def add(lo, hi):
                np.add(g0[lo:hi], g1[lo:hi], out=out[lo:hi])

            times = {}
            for _ in range(5):
                for parts in (2, 1):
                    run = net.run if parts > 1 else None
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        (run or (lambda f, items: [f(*a) for a in items]))(
                            add, optim.split_blocks(n, parts))
                        opt.update(params, out, 1e-6, 1.0, run, parts)
                    dt = (time.perf_counter() - t0) / reps
                    times[parts] = min(times.get(parts, dt), dt)
            rows.append((n, times[2] * 1e3, times[1] * 1e3))
    finally:
        optim.PARALLEL_MIN = keep
        net.close()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs of every configuration, interleaved; the best is reported")
    ap.add_argument("--threads-list", type=int, nargs="+", default=[1, 2],
                    help="thread counts to measure (the first is the baseline of the ratios)")
    ap.add_argument("--steps-kind", nargs="+", default=["trainer", "network"],
                    choices=["trainer", "network"], help="which steps to time (see above)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=6, help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="network", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    import numpy as np

    from shoestring.optim import PARALLEL_MIN
    from shoestring.tokenizer import Tokenizer

    t_start = time.perf_counter()
    tok = Tokenizer.train(paths=[args.data], vocab_size=850)
    with open(args.data, encoding="utf-8") as f:
        ids = np.asarray(tok.encode_array(f.read()), np.int32)
    tmp = tempfile.mkdtemp(prefix="ss_bench_")
    tpath = os.path.join(tmp, "tokens.npy")
    np.save(tpath, ids)
    tokpath = os.path.join(tmp, "tokenizer.json")
    tok.save(tokpath)
    rate = sgemm_rate()
    print("load average (1, 5, 15 min) at the start: %.2f %.2f %.2f (2 cores: anything above "
          "about 0.1 besides this run makes the thread ratios low)" % os.getloadavg())
    print("numpy single-threaded sgemm (1280x96 . 96x1152): %.1f GFLOP/s" % rate)
    print("corpus: %s, %d tokens, vocabulary %d; B=16 streams x T=80 steps = 1,280 tokens per "
          "step; best of %d x %d steps, %d interleaved rounds" % (
              os.path.basename(args.data), len(ids), tok.vocab_size, args.reps, args.steps,
              args.rounds))
    print()
    print("| step | routing | threads | tokens/s | effective GFLOP/s | ratio to numpy sgemm | "
          "peak RSS | ISA |")
    print("|---|---|---|---|---|---|---|---|")
    configs = [(kind, k, threads) for kind in args.steps_kind for k in (6, 2)
               for threads in args.threads_list]
    best = {}
    for _ in range(args.rounds):        # rounds interleave the configurations: a passing load
        for kind, k, threads in configs:    # spoils one round of each, not every run of one
            cmd = [sys.executable, __file__, "--child", "--tokens", tpath, "--tokenizer",
                   tokpath, "--vocab", str(tok.vocab_size), "--threads", str(threads), "--k",
                   str(k), "--kind", kind, "--steps", str(args.steps), "--reps", str(args.reps)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit("the %s child (K=%d, %d threads) failed:\n%s"
                         % (kind, k, threads, out.stderr[-3000:]))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            key = (kind, k, threads)
            if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
                best[key] = r
    routing = {6: "dense (K=6)", 2: "top-2"}
    for kind, k, threads in configs:
        r = best[(kind, k, threads)]
        gf = r["tokens_per_s"] * 3 * flops_per_token(tok.vocab_size, 96, 96, 2, 6, k) / 1e9
        print("| %s | %s | %d | %.0f | %.2f | %.2f | %.0f MB | %s |" % (
            kind, routing[k], threads, r["tokens_per_s"], gf, gf / rate, r["rss_mb"], r["isa"]))
    print()
    print("Thread scaling (tokens/s of N threads / tokens/s of %d, both measured above):"
          % args.threads_list[0])
    base = args.threads_list[0]
    for kind in args.steps_kind:
        for k in (6, 2):
            for threads in args.threads_list[1:]:
                a, b = best[(kind, k, threads)], best[(kind, k, base)]
                print("  %-7s %-11s %d threads / %d: %.2fx (%.0f / %.0f tokens/s)" % (
                    kind, routing[k], threads, base, a["tokens_per_s"] / b["tokens_per_s"],
                    a["tokens_per_s"], b["tokens_per_s"]))
    print()
    print("Gradient sum (2 shards) + AdamW as separate hand-offs (the on_gradients path), 2 "
          "threads against 1, in this process (optim.PARALLEL_MIN = %s: below it that path runs "
          "them on one thread; the usual step runs them on the shard threads):"
          % format(PARALLEL_MIN, ","))
    for n, threaded, serial in split_check():
        print("  %s parameters: 2 threads %.3f ms, 1 thread %.3f ms (2 threads / 1 = %.2fx the "
              "time)" % (format(n, ","), threaded, serial, threaded / serial))
    print("load average (1, 5, 15 min) at the end: %.2f %.2f %.2f" % os.getloadavg())
    print("training FLOPs per token: dense %.2f M, top-2 %.2f M; this benchmark took %.0f s" % (
        3 * flops_per_token(tok.vocab_size, 96, 96, 2, 6, 6) / 1e6,
        3 * flops_per_token(tok.vocab_size, 96, 96, 2, 6, 2) / 1e6,
        time.perf_counter() - t_start))


if __name__ == "__main__":
    main()
