"""Benchmark (not a test): validation bits per character after a fixed training time, per K.

MODEL.md §1 asks which --active-experts K gives the best validation loss per second of training.
This trains the default model (V=850, C=H=96, L=2, X=6, T=80, B=16) on nano-shakespeare with the
last 10% held out, once per K, for the same wall-clock budget each (`--max-minutes`), constant
learning rate after warm-up (so no run is favoured by a schedule fitted to its length), and
reports the validation loss and bits per character reached, with the curve at fractions of the
budget. Runs go `--parallel` at a time (each with `--threads` threads), so give every run the
same share of the machine: on 2 cores, `--parallel 2 --threads 1`.

    python tools/bench_experts.py --minutes 5 --k 6 3 2 1 --parallel 2 --threads 1
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "nano-shakespeare.txt")


def run_cmd(data, k, minutes, threads, out_dir, lr):
    return [sys.executable, "-m", "shoestring", "train", "--model-data", data,
            "--active-experts", str(k), "--max-minutes", str(minutes), "--epochs", "1000",
            "--lr", str(lr), "--lr-schedule", "constant", "--warmup-steps", "50",
            "--threads", str(threads), "--eval-every", "25", "--sample-every", "0",
            "--out-dir", out_dir, "--no-chat", "--quiet", "--seed", "1"]


def at_fraction(rows, t0, budget, frac):
    """Validation bits/char of the last evaluation at or before frac of the budget."""
    best = None
    for r in rows:
        if r["time"] - t0 <= frac * budget + 1.0:
            best = r
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--k", type=int, nargs="+", default=[6, 3, 2, 1])
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--from", dest="from_dir", help="report on the runs kept in this folder")
    args = ap.parse_args()
    if args.from_dir:
        results = {k: [json.loads(l) for l in open(os.path.join(args.from_dir, "k%d" % k,
                                                                  "metrics.jsonl"))]
                   for k in args.k}
        return report(args, results, {})
    root = tempfile.mkdtemp(prefix="ss_experts_")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    results, failed = {}, {}
    ks = list(args.k)
    while ks:
        batch, ks = ks[:args.parallel], ks[args.parallel:]
        procs = []
        for k in batch:
            out = os.path.join(root, "k%d" % k)
            p = subprocess.Popen(run_cmd(args.data, k, args.minutes, args.threads, out, args.lr),
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append((k, out, p))
        for k, out, p in procs:
            log = p.communicate()[0]
            path = os.path.join(out, "metrics.jsonl")
            rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
            results[k] = rows
            print("K=%d: runs kept in %s" % (k, out), file=sys.stderr)
            if p.returncode != 0:           # e.g. diverged: report it with what it reached
                failed[k] = log.strip().splitlines()[-1] if log.strip() else "exit %d" % p.returncode
    report(args, results, failed)


def report(args, results, failed):
    budget = 60.0 * args.minutes
    print("nano-shakespeare (last 10%% held out), default model, %.1f min per run, lr %g constant,"
          " %d run(s) at a time x %d thread(s)" % (args.minutes, args.lr, args.parallel, args.threads))
    print()
    marks = (15, 30, 60, budget)
    print("| K | steps | tokens/s | best val bits/char (best.json) | reached after | "
          + " | ".join("bits/char at %ds" % m for m in marks) + " | state resets |")
    print("|---|---|---|---|---|" + "---|" * len(marks) + "---|")
    for k in args.k:
        rows = results[k]
        if len(rows) < 2:
            print("| %d | failed: %s |" % (k, failed.get(k, "no evaluations")))
            continue
        first, last = rows[0], rows[-1]
        # training start: first evaluation's time less its steps at the run's mean step rate
        rate = (last["step"] - first["step"]) / max(1e-9, last["time"] - first["time"])
        t_start = first["time"] - first["step"] / max(rate, 1e-9)
        best = min(rows, key=lambda r: r["bits_per_char"])
        at = []
        for m in marks:
            seen = [r for r in rows if r["time"] - t_start <= m + 1.0]
            at.append("%.4f" % min(r["bits_per_char"] for r in seen) if seen else "-")
        tps = last["step"] * 16 * 80 / max(1e-9, last["time"] - t_start)
        print("| %d%s | %d | %.0f | %.4f | %.0f s (step %d) | %s | %d |" % (
            k, " (dense)" if k == 6 else "", last["step"], tps, best["bits_per_char"],
            best["time"] - t_start, best["step"], " | ".join(at), last["state_resets"]))
    for k, msg in sorted(failed.items()):
        print("K=%d stopped early: %s" % (k, msg))
    done = [k for k in args.k if len(results[k]) >= 2]
    win = min(done, key=lambda k: min(r["bits_per_char"] for r in results[k]))
    print()
    print("best validation bits/char within %.1f min: K=%d" % (args.minutes, win))
    print("(columns 'at Ns': the best validation bits/char of the evaluations done by then)")


if __name__ == "__main__":
    main()
