"""make_fortunes_corpus.py: a 1 MB held-out-style English corpus for tools/bench_quality.py.

Issue #11 sets a target on "a held-out 1 MB literary corpus that is not given here". This builds
a stand-in from Debian's `fortunes` package (public-domain and freely redistributable quotations,
verse and prose by many authors): 20 of its English files, split into their pieces, shuffled with
a fixed seed (so the 90/10 split of bench_quality.py holds out the same kind of text it trains
on), joined by blank lines and cut at about 1,000,000 characters. The same seed and package
version give the same file.

    apt-get download fortunes && dpkg -x fortunes_*.deb fortunes-root
    python tools/make_fortunes_corpus.py fortunes-root/usr/share/games/fortunes fort1m.txt

Calibration (BENCHMARKS.md): the recipe before issue #11 reaches its best validation figure,
2.304 bits/char at step 1,475, on this corpus; on the issue's hidden corpus it reached 2.28 at
step 1,700. So this stand-in is about as hard, slightly harder.
"""
import os
import random
import sys

FILES = ["songs-poems", "art", "people", "wisdom", "humorists", "love", "tao", "platitudes",
         "men-women", "miscellaneous", "work", "education", "law", "science", "politics", "food",
         "kids", "sports", "drugs", "pets"]


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python tools/make_fortunes_corpus.py FORTUNES_DIR OUT.txt")
    src, out = argv
    pieces = []
    for name in FILES:
        with open(os.path.join(src, name), encoding="latin-1") as f:
            pieces += [p.strip("\n") for p in f.read().split("\n%\n") if p.strip()]
    random.Random(1).shuffle(pieces)
    kept, n = [], 0
    for p in pieces:
        p = p.replace("\t", "    ")
        kept.append(p)
        n += len(p) + 2
        if n > 1_000_000:
            break
    text = "\n\n".join(kept) + "\n"
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print("%s: %d pieces, %d characters" % (out, len(kept), len(text)))


if __name__ == "__main__":
    main(sys.argv[1:])
