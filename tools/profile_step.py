"""Profile (not a test): where one `Trainer.step` of the default recipe spends its time.

Each part of the step is wrapped in a timer: the forward + backward of all shards, the gradient
sum, AdamW, the DropConnect masks (their draw and their application), the locked-dropout masks,
the state guard; "rest" is what the step spends outside them (the finiteness check, the
bookkeeping). For 1 and 2 threads (or --threads-list), dense (K=6) and top-2; random tokens over
the default vocabulary, B=16, T=80, 40 steps after 5 warm-up steps. With --batch-check it also
times the bare network step (forward_backward, no regularisers) at B=16 and B=8 on one thread
and at B=16 on two, to tell the halved batch of a shard apart from the threading itself.

    python tools/profile_step.py [--threads-list 1 2] [--steps 40] [--batch-check]

What it printed on the session-4 machine is in BENCHMARKS.md (#13: threads, quiet).
"""
import argparse
import collections
import os
import sys
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
PARTS = ("forward+backward", "gradient sum", "AdamW", "DropConnect draw", "DropConnect apply",
         "dropout masks", "state guard")     # the timed parts of a step, in the table's order


def timed(table, obj, name, label):
    f = getattr(obj, name)

    def wrapper(*a, **k):
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
    timed(acc, tr.net, "forward_backward", "forward+backward")
    timed(acc, tr.net, "reduce_grads", "gradient sum")
    timed(acc, tr.opt, "update", "AdamW")
    timed(acc, tr.net, "set_weight_masks", "DropConnect apply")
    timed(acc, tr, "_window_masks", "dropout masks")
    timed(acc, tr, "_guard_state", "state guard")
    import shoestring.trainer as trainer_module
    draw = trainer_module.dropout_mask

    def drop_connect_draw(rng, shape, p):   # the (X,H,H) masks only, not the per-window ones
        if len(shape) != 3:
            return draw(rng, shape, p)
        t0 = time.perf_counter()
        try:
            return draw(rng, shape, p)
        finally:
            acc["DropConnect draw"] += time.perf_counter() - t0
    trainer_module.dropout_mask = drop_connect_draw
    for _ in range(5):
        tr.step()
    acc.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.step()
    total = (time.perf_counter() - t0) / steps * 1e3
    tr.net.close()
    trainer_module.dropout_mask = draw
    parts = {k: v / steps * 1e3 for k, v in acc.items()}
    return total, parts


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
            total, parts = profile(tok, threads, K, a.steps)
            rest = total - sum(parts.get(c, 0.0) for c in PARTS)
            print("| %s, %d | %.2f | %s | %.2f |" % (name, threads, total, " | ".join(
                "%.2f" % parts.get(c, 0.0) for c in PARTS), rest), flush=True)
    if a.batch_check:
        batch_check()
    print("load average at the end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
