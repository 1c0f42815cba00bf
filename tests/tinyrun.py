"""A tiny trained run for the tests of export, inspect, plot and the command line: a few
optimiser steps on an arithmetic chat corpus, through `python -m shoestring train` (so the
checkpoints are exactly what users get, optimiser state included)."""
import os
import subprocess
import sys

CORPUS = "".join("[USER] what is %d plus %d [EOS]\n[BOT] %d [EOS]\n\n" % (a, b, a + b)
                 for a in range(12) for b in range(12))
TRAIN_FLAGS = ["--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "24",
               "--gru-layers", "2", "--num-experts", "3", "--seq-length", "16", "--batch-size", "4",
               "--threads", "1", "--no-chat", "--quiet"]


def train_tiny_run(folder, steps=6, eval_every=None):
    """Train into folder/run; returns the run folder (best.json, last.json, metrics.jsonl)."""
    folder = str(folder)
    corpus = os.path.join(folder, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(CORPUS)
    out = os.path.join(folder, "run")
    cmd = [sys.executable, "-m", "shoestring", "train", "--model-data", corpus,
           "--max-steps", str(steps), "--out-dir", out] + TRAIN_FLAGS
    if eval_every:
        cmd += ["--eval-every", str(eval_every)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, timeout=300)
    if r.returncode != 0:
        raise AssertionError("training the tiny run failed: %s" % r.stderr[-2000:])
    return out
