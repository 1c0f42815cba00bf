"""Benchmark (not a test): how training's start-up cost grows with the corpus (issue #13).

For corpora of 1, 10 and 60 MB (generated here, never committed: lines of nano-shakespeare, a
public-domain text, shuffled with a seeded RNG and with a quarter of their words swapped for other
words of the text, so the pre-token statistics keep growing with size instead of repeating one
file), each in a fresh process, `shoestring.train` at the default model with `--max-steps 1`:

- tokenizer s: training the BPE tokenizer on the corpus (the log's figure);
- encoding s: encoding the corpus into the token array (the log's figure), then again in a second
  run into the same out_dir (its checkpoints removed first, so it is a new run; it reads the
  token cache);
- first step s: from the start of the process to the end of the first optimiser step;
- peak RSS: the process's high-water mark (ru_maxrss) over the whole run, the validation pass and
  the checkpoint save included. Target: <= 250 MB at 60 MB.

    python tools/bench_scale.py [--sizes 1 10 60] [--workdir /tmp/ss_scale] [--threads 1]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "..", "shared", "data", "nano-shakespeare.txt")


def make_corpus(path, mb, source=SOURCE, seed=13):
    """Write about `mb` MB of text made from the source's lines (deterministic for a seed)."""
    import numpy as np

    with open(source, encoding="utf-8") as f:
        lines = [l for l in f.read().split("\n") if l.strip()]
    words = sorted({w for l in lines for w in l.split()})
    rng = np.random.default_rng(seed)
    target = int(mb * 1e6)
    done = 0
    with open(path, "w", encoding="utf-8") as f:
        while done < target:
            order = rng.permutation(len(lines))
            swaps = rng.random(len(lines) * 4)
            picks = rng.integers(0, len(words), len(lines) * 4)
            out = []
            for j, i in enumerate(order):
                ws = lines[i].split()
                for k in range(min(4, len(ws))):
                    if swaps[4 * j + k] < 0.25:
                        ws[int(swaps[4 * j + k] * 4 * len(ws)) % len(ws)] = words[picks[4 * j + k]]
                out.append(" ".join(ws))
                if (j + 1) % 40 == 0:
                    out.append("")
            block = "\n".join(out) + "\n"
            if done + len(block) > target:          # ASCII: characters are bytes
                block = block[:block.rfind("\n", 0, target - done) + 1]
                if not block:
                    break
            f.write(block)
            done += len(block.encode("utf-8"))
    return path


def child(args):
    """In a fresh process: train --max-steps 1; print one JSON line of figures."""
    import resource

    import shoestring
    from shoestring.config import TrainConfig

    t_start = time.perf_counter()
    marks = {}

    class Marks:
        def on_step_end(self, run, step, metrics):
            marks.setdefault("first_step", time.perf_counter() - t_start)

    lines = []

    class Capture:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

        def isatty(self):
            return False

    real = sys.stderr
    sys.stderr = Capture()
    try:
        shoestring.train(TrainConfig(max_steps=1, threads=args.threads, epochs=1),
                         model_data=[args.corpus], out_dir=args.out, callbacks=[Marks()])
    finally:
        sys.stderr = real
    log = "".join(lines)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / 1024 if sys.platform != "darwin" else rss / 1024 / 1024

    def figure(pattern):
        m = re.search(pattern, log)
        return float(m.group(1)) if m else None

    print(json.dumps({
        "tokenizer_s": figure(r"tokenizer: .* in ([\d.]+) s"),
        "encoding_s": figure(r"model data: .* in ([\d.]+) s"),
        "cached": "read from the token cache" in log,
        "tokens": int(re.search(r"model data: ([\d,]+) tokens", log).group(1).replace(",", "")),
        "first_step_s": marks.get("first_step"), "total_s": time.perf_counter() - t_start,
        "rss_mb": rss_mb}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 60], help="corpus sizes, MB")
    ap.add_argument("--workdir", default="/tmp/ss_scale")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    from shoestring.rundir import RUN_FILES

    os.makedirs(args.workdir, exist_ok=True)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print("default model (V=850 C=H=96 L=2 X=K=6), train --max-steps 1 --threads %d; each run a "
          "fresh process (corpus size only: thread scaling is tools/bench_train.py's)"
          % args.threads)
    print()
    print("| corpus | tokens | tokenizer s | encoding s | first step s | peak RSS | 2nd run: "
          "encoding s (cache) | first step s | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mb in args.sizes:
        corpus = os.path.join(args.workdir, "corpus-%gMB.txt" % mb)
        if not os.path.isfile(corpus):
            make_corpus(corpus, mb)
        out = os.path.join(args.workdir, "run-%gMB" % mb)
        for name in ("tokens.bin", "tokens.json"):
            if os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
        rows = []
        for _ in range(2):
            for name in RUN_FILES:            # the run's files, not the token cache: the second
                path = os.path.join(out, name)  # run is a new run that reads the cache
                if os.path.lexists(path):
                    os.unlink(path)
            cmd = [sys.executable, __file__, "--child", "--corpus", corpus, "--out", out,
                   "--threads", str(args.threads)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode:
                sys.exit("run on %s failed:\n%s" % (corpus, res.stderr[-2000:]))
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        a, b = rows
        assert not a["cached"] and b["cached"], rows
        print("| %.1f MB | %s | %.1f | %.1f | %.1f | %.0f MB | %.2f | %.1f | %.0f MB |" % (
            os.path.getsize(corpus) / 1e6, format(a["tokens"], ","), a["tokenizer_s"],
            a["encoding_s"], a["first_step_s"], a["rss_mb"], b["encoding_s"], b["first_step_s"],
            b["rss_mb"]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
