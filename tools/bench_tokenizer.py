"""bench_tokenizer.py: shoestring's BPE against HuggingFace `tokenizers` (ByteLevel BPE), same run.

Measures, on one corpus at one vocabulary size: training seconds, encoding MB/s (UTF-8 bytes of
the corpus per second, one call on the whole text) and bytes per token. HuggingFace is skipped
when `tokenizers` is not installed. Timings are the median of --repeat runs; the machine is
shared, so read the ratios, not the absolute figures.

    python tools/bench_tokenizer.py [CORPUS] [--vocab-size 850] [--repeat 5] [--scale 1]

--scale K concatenates K copies of the corpus into a temporary file first (training streams it).
Run it from an installed shoestring (pip install .), not the source tree.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

from shoestring.tokenizer import SPECIALS, Tokenizer
from benchutil import cpu_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.join(ROOT, "..", "shared", "data", "nano-shakespeare.txt")


def timed(fn, repeat):
    """(median seconds, last result) of repeat calls of fn()."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_shoestring(path, text, nbytes, vocab, repeat):
    t_train, tok = timed(lambda: Tokenizer.train(paths=[path], vocab_size=vocab), repeat)
    fresh = Tokenizer.from_dict(tok.to_dict())
    t0 = time.perf_counter()
    ids = fresh.encode(text)                       # first call: every pre-token is a cache miss
    t_cold = time.perf_counter() - t0
    t_warm, ids2 = timed(lambda: fresh.encode(text), repeat)
    t_arr, arr = timed(lambda: fresh.encode_array(text), repeat)
    assert ids == ids2 == arr.tolist(), "encode and encode_array disagree"
    assert fresh.decode(ids) == text, "round trip failed"
    return {"name": "shoestring", "train_s": t_train, "vocab": tok.vocab_size,
            "cold": nbytes / t_cold / 1e6, "warm": nbytes / t_warm / 1e6,
            "array": nbytes / t_arr / 1e6, "bpt": nbytes / len(ids)}


def bench_hf(path, text, nbytes, vocab, repeat):
    try:
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers, trainers
    except ImportError:
        return None

    def train():
        t = tokenizers.Tokenizer(models.BPE())
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel()
        tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIALS), show_progress=False,
                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        t.train([path], tr)
        return t

    t_train, tok = timed(train, repeat)
    fresh = tokenizers.Tokenizer.from_str(tok.to_str())
    t0 = time.perf_counter()
    enc = fresh.encode(text)
    t_cold = time.perf_counter() - t0
    t_warm, _ = timed(lambda: fresh.encode(text), repeat)
    lines = text.splitlines(True)
    t_batch, _ = timed(lambda: fresh.encode_batch(lines), repeat)
    return {"name": "HF tokenizers %s ByteLevel BPE" % tokenizers.__version__, "train_s": t_train,
            "vocab": tok.get_vocab_size(), "cold": nbytes / t_cold / 1e6,
            "warm": nbytes / t_warm / 1e6, "batch": nbytes / t_batch / 1e6,
            "bpt": nbytes / len(enc.ids)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    ap.add_argument("--vocab-size", type=int, default=850)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", type=int, default=1, help="train and encode K copies of the corpus")
    args = ap.parse_args(argv)
    path = os.path.abspath(args.corpus)
    if not os.path.isfile(path):
        print("bench_tokenizer: corpus not found: %s (pass its path)" % path, file=sys.stderr)
        return 1
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    tmp = None
    if args.scale > 1:
        text = text * args.scale
        fd, tmp = tempfile.mkstemp(suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        path = tmp
    try:
        nbytes = len(text.encode("utf-8"))
        ours = bench_shoestring(path, text, nbytes, args.vocab_size, args.repeat)
        hf = bench_hf(path, text, nbytes, args.vocab_size, args.repeat)
    finally:
        if tmp:
            os.unlink(tmp)

    print("corpus: %s x%d (%d bytes), vocab %d, median of %d runs" % (
        os.path.basename(args.corpus), args.scale, nbytes, args.vocab_size, args.repeat))
    print("machine: %s, %d cores, Python %s" % (cpu_name(), os.cpu_count() or 1,
                                                platform.python_version()))
    print()
    print("| tokenizer | vocab | train s | encode MB/s (first call) | encode MB/s (warm) "
          "| encode_array / encode_batch MB/s | bytes/token |")
    print("|---|---|---|---|---|---|---|")
    for r in [ours] + ([hf] if hf else []):
        other = r.get("array", r.get("batch"))
        print("| %s | %d | %.3f | %.2f | %.2f | %.2f | %.3f |" % (
            r["name"], r["vocab"], r["train_s"], r["cold"], r["warm"], other, r["bpt"]))
    if hf is None:
        print("\n(HF tokenizers not installed: comparison skipped; pip install tokenizers)")
        return 0
    print()
    rt = ours["train_s"] / hf["train_s"]
    re_ = ours["warm"] / hf["warm"]
    rb = ours["bpt"] / hf["bpt"] - 1
    print("training time ratio shoestring/HF: %.2fx (target <= 3x: %s)" % (rt, "met" if rt <= 3 else "NOT met"))
    print("encode speed ratio shoestring/HF (warm, one call): %.2fx; first call %.2fx "
          "(target >= 1x: %s)" % (re_, ours["cold"] / hf["cold"],
                                  "met" if min(re_, ours["cold"] / hf["cold"]) >= 1 else "NOT met"))
    print("shoestring encode vs HF encode_batch of lines (%d threads): %.2fx"
          % (os.cpu_count() or 1, ours["warm"] / hf["batch"]))
    print("bytes/token difference: %+.2f%% (target within 5%%: %s)"
          % (100 * rb, "met" if abs(rb) <= 0.05 else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
