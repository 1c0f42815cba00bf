"""Profile (not a test): where one `Trainer.step` of the default recipe spends its time.

A step is one hand-off to the shard threads: each thread runs its shard (forward + state guard
+ backward, two C calls), then one more C call (csrc/step.c) in which it waits for the other
shards, sums its range of the gradient, waits again and runs AdamW (plus the next step's
DropConnect masks and the weights' finiteness sum) on its range. The calling thread's share is
timed: its shard, then its C step ("update": the waits included); "hand-off" is the rest of
forward_backward (the workers' start and end); "dropout masks" are the window's locked and
embedding-dropout masks; "rest" is the step outside forward_backward (the window's tokens, the
loss checks, the bookkeeping). For 1 and 2 threads (or --threads-list), dense (K=6) and top-2;
random tokens over the default vocabulary, B=16, T=80, 40 steps after 5 warm-up steps. With
--batch-check it also times the bare network step (forward_backward, no regularisers) at B=16
and B=8 on one thread and at B=16 on two, to tell the halved batch of a shard apart from the
threading itself.

    python tools/profile_step.py [--threads-list 1 2] [--steps 40] [--batch-check]

What it printed is in BENCHMARKS.md (#13: threads).
"""
import argparse
import collections
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from shoestring.config import NEW_RUN_CAP, TrainConfig  # noqa: E402
from shoestring.data import default_corpus_path  # noqa: E402
from shoestring.model import Network  # noqa: E402
from shoestring.params import ModelConfig, ParamLayout  # noqa: E402
from shoestring.tokenizer import Tokenizer  # noqa: E402
from shoestring.trainer import Trainer  # noqa: E402

V, B, T = 850, 16, 80
PARTS = ("shard", "update", "hand-off", "dropout masks")


def timed(table, obj, name, label, main_only=False):
    """Wrap obj.name so its time (on the calling thread only, with main_only) adds to table."""
    f = getattr(obj, name)

    def wrapper(*a, **k):
        if main_only and threading.current_thread() is not threading.main_thread():
            return f(*a, **k)
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            table[label] += time.perf_counter() - t0
    setattr(obj, name, wrapper)


def profile(tok, threads, K, steps):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, 101_000).astype(np.uint16)
    cfg = ModelConfig(V=V, K=K, cap=NEW_RUN_CAP)
    config = TrainConfig(model=cfg, threads=threads, batch_size=B, seq_length=T, max_steps=10 ** 6)
    tr = Trainer(config, cfg, tok, tokens, tokens[:2000])
    acc = collections.Counter()
    timed(acc, tr.net, "forward_backward", "forward_backward")
    timed(acc, tr.net, "_step_shard", "shard", main_only=True)
    timed(acc, tr._step_binding(), "run", "update", main_only=True)
    timed(acc, tr, "_window_masks", "dropout masks")
    for _ in range(5):
        tr.step()
    acc.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.step()
    total = (time.perf_counter() - t0) / steps * 1e3
    tr.net.close()
    parts = {k: v / steps * 1e3 for k, v in acc.items()}
    parts["hand-off"] = parts.get("forward_backward", 0.0) - parts.get("shard", 0.0) \
        - parts.get("update", 0.0)
    rest = total - parts.pop("forward_backward", 0.0) - parts.get("dropout masks", 0.0)
    return total, parts, rest


def batch_check(reps=5, windows=20):
    rng = np.random.default_rng(0)
    for K in (6, 2):
        for b, threads in ((16, 1), (8, 1), (16, 2)):
            cfg = ModelConfig(V=V, K=K)
            net = Network(cfg, ParamLayout(cfg).init(0), b, T, threads=threads)
            h = np.zeros((cfg.L, b, cfg.X, cfg.H), np.float32)
            tok = rng.integers(0, V, (b, T)).astype(np.int32)
            tgt = rng.integers(0, V, (b, T)).astype(np.int32)
            for _ in range(5):
                net.forward_backward(tok, tgt, h, 1.0 / (b * T), zero=True)
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(windows):
                    net.forward_backward(tok, tgt, h, 1.0 / (b * T), zero=True)
                best = min(best, (time.perf_counter() - t0) / windows)
            net.close()
            print("bare network step, K=%d, B=%2d, %d thread(s): %.2f ms per window, %.0f tokens/s"
                  % (K, b, threads, best * 1e3, b * T / best))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads-list", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-check", action="store_true")
    a = ap.parse_args()
    tok = Tokenizer.train(paths=[default_corpus_path()], vocab_size=V)
    print("| routing, threads | step ms | " + " | ".join(PARTS) + " | rest |")
    print("|---" * (len(PARTS) + 3) + "|")
    for K, name in ((6, "dense"), (2, "top-2")):
        for threads in a.threads_list:
            total, parts, rest = profile(tok, threads, K, a.steps)
            print("| %s, %d | %.2f | %s | %.2f |" % (name, threads, total, " | ".join(
                "%.2f" % parts.get(c, 0.0) for c in PARTS), rest), flush=True)
    if a.batch_check:
        batch_check()
    print("load average at the end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
