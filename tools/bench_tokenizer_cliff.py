"""bench_tokenizer_cliff.py: is tokenizer training linear in corpus size, whatever the text? (#17)

Trains shoestring's BPE (vocabulary 850) on generated corpora of 0.25, 0.5, 1 and 2 MB of three
kinds and prints seconds and seconds per MB, with the figures that explain the cost:

- words: nano-shakespeare.txt repeated to the size (ordinary text with spaces);
- nospace: the same text with every whitespace character removed (one 2 MB "line");
- randwords: random lowercase words of 1-10 letters between single spaces (seed 0): text with
  spaces whose pre-tokens are nearly all distinct, to separate "distinct" from "Chinese";
- cjk: random characters of the CJK Unified Ideographs block U+4E00..U+9FFF (seed 0), a line
  break every 80 characters (nearly every pre-token is distinct: the worst case for BPE).

Columns: seconds counting pre-tokens (regex, C), seconds learning merges (Python), distinct
pre-tokens, their total bytes (what the merge loop works on), and the words the merges rewrite
in all. Every run is one process; the machine is shared, so read ratios within one run.

    python tools/bench_tokenizer_cliff.py [--sizes 0.25,0.5,1,2] [--kinds words,nospace,cjk]
"""
import argparse
import os
import platform
import random
import sys
import tempfile
import time

from shoestring import tokenizer as T
from benchutil import cpu_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.join(ROOT, "..", "shared", "data", "nano-shakespeare.txt")


def make_text(kind, nbytes, base):
    """About nbytes of UTF-8 text of one kind (see the module docstring)."""
    if kind == "words":
        src = base
    elif kind == "nospace":
        src = "".join(base.split())
    elif kind == "randwords":
        rng = random.Random(0)
        letters = "abcdefghijklmnopqrstuvwxyz"
        out, n = [], 0
        while n < nbytes:
            w = "".join(rng.choice(letters) for _ in range(rng.randint(1, 10)))
            out.append(w)
            n += len(w) + 1
        return " ".join(out)[:nbytes]
    elif kind == "cjk":
        rng = random.Random(0)
        n = nbytes // 3 + 1
        chars = [chr(rng.randrange(0x4E00, 0xA000)) for _ in range(n)]
        for i in range(80, n, 81):
            chars[i] = "\n"
        return "".join(chars)
    else:
        raise ValueError(kind)
    reps = nbytes // max(1, len(src.encode("utf-8"))) + 1
    text = src * reps
    return text.encode("utf-8")[:nbytes].decode("utf-8", "ignore")


def train_profiled(path, vocab):
    """(total s, pre-token s, merge s, distinct pre-tokens, their bytes, words rewritten)."""
    stats = {}
    real = T._learn_merges

    def learn(words, wcounts, specials, n_merges):
        stats["t_merge0"] = time.perf_counter()
        stats["distinct"] = len(words)
        stats["bytes"] = sum(len(w) for w in words)
        out = real(words, wcounts, specials, n_merges, stats)
        stats["t_merge1"] = time.perf_counter()
        return out

    T._learn_merges = learn
    try:
        t0 = time.perf_counter()
        tok = T.Tokenizer.train(paths=[path], vocab_size=vocab)
        t1 = time.perf_counter()
    finally:
        T._learn_merges = real
    return (t1 - t0, stats["t_merge0"] - t0, stats["t_merge1"] - stats["t_merge0"],
            stats["distinct"], stats["bytes"], stats.get("rewrites", 0), tok.vocab_size)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.25,0.5,1,2", help="corpus sizes in MB (10^6 bytes)")
    ap.add_argument("--kinds", default="words,nospace,randwords,cjk")
    ap.add_argument("--vocab-size", type=int, default=850)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help="the ordinary text for words/nospace")
    args = ap.parse_args(argv)
    with open(args.corpus, encoding="utf-8", newline="") as f:
        base = f.read()
    sizes = [float(s) for s in args.sizes.split(",")]
    print("machine: %s, %d cores, Python %s; vocabulary %d" % (
        cpu_name(), os.cpu_count() or 1, platform.python_version(), args.vocab_size))
    print()
    print("| text | MB | train s | s/MB | pre-tokens s | merges s | distinct pre-tokens "
          "| their bytes | word rewrites |")
    print("|---|---|---|---|---|---|---|---|---|")
    per_mb = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            for mb in sizes:
                text = make_text(kind, int(mb * 1e6), base)
                path = os.path.join(tmp, "%s-%g.txt" % (kind, mb))
                with open(path, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
                nb = os.path.getsize(path) / 1e6
                tot, tpre, tmer, nd, nbytes, rw, _ = train_profiled(path, args.vocab_size)
                per_mb.setdefault(kind, []).append(tot / nb)
                print("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %d | %d |" % (
                    kind, nb, tot, tot / nb, tpre, tmer, nd, nbytes, rw), flush=True)
    print()
    for kind, v in per_mb.items():
        print("%s: s/MB from %.2f to %.2f (largest/smallest size: %.2fx)"
              % (kind, v[0], v[-1], v[-1] / v[0]))
    if "words" in per_mb:
        w = per_mb["words"][-1]
        for kind, v in per_mb.items():
            if kind != "words":
                print("%s / words per MB at the largest size: %.2fx" % (kind, v[-1] / w))
    return 0


if __name__ == "__main__":
    sys.exit(main())
