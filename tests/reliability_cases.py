"""reliability_cases.py: every bad input the reliability tests try, shared with the table tool.

One list, CASES, drives both tests/test_reliability.py (which asserts every row) and
tools/make_reliability_table.py (which runs every row in a subprocess and writes the table in
RELIABILITY.md). A case is (id, argv, exit code, pattern): `shoestring <argv>` must exit with
that code and, for a failure, print exactly one error line (`shoestring: error: ...` or
argparse's `shoestring <command>: error: ...`) that matches the pattern, with no traceback.

argv entries are templates: `{name}` is a file made by make_files() (FILES says what each one
holds); the entry "{SMALL}" expands to SMALL, the flags of a tiny model so that rows that do
train finish in a second.
"""
import base64
import json
import os
import re
import sys

SMALL = ["--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "16",
         "--num-experts", "3", "--seq-length", "16", "--batch-size", "4", "--max-steps", "2",
         "--no-chat", "--quiet", "--sample-every", "0"]

TINY_CHAT = "".join(
    "[USER] what is %s plus %s [EOS]\n[BOT] %s plus %s is %s [EOS]\n\n" % (a, b, a, b, a + b)
    for a in range(10) for b in range(10)
)

FILES = {
    "tiny": "tiny.txt: a 5 KB chat corpus (valid)",
    "missing": "nope.txt: does not exist",
    "empty": "empty.txt: only whitespace",
    "zero": "zero.txt: 0 bytes",
    "binary": "binary.bin: every byte value, NULs included",
    "latin1": "latin1.txt: Latin-1 text, not UTF-8",
    "hugeline": "hugeline.txt: one 5 MB line without a newline (valid)",
    "short": "short.txt: 100 bytes, less than one window of B x T tokens",
    "onechar": "onechar.txt: one character (as validation data)",
    "emptydir": "emptydir/: a folder without .txt files",
    "out": "out/: a fresh output folder",
    "ckpt": "ckpt.json: a valid checkpoint of a tiny model (2 steps)",
    "tok": "tok.json: a valid tokenizer",
    "trunc00": "ckpt.json truncated to 0 bytes",
    "trunc10": "ckpt.json truncated to 10% of its length (trunc20 ... trunc90 likewise)",
    "flip": "ckpt.json with one base64 character of the parameters changed",
    "version": "ckpt.json with \"version\": 99",
    "nokey": "ckpt.json without its \"optimizer\" key",
    "tbshape": "ckpt.json whose params tensor claims shape [250000000000] (1 TB)",
    "tbconfig": "ckpt.json whose config claims H=1000000 (tens of TB of parameters)",
    "nan": "ckpt.json whose parameters hold a NaN (with a valid checksum)",
    "tokvocab": "ckpt.json whose tokenizer has 10 merges fewer than the model's V",
    "tokbad": "ckpt.json whose tokenizer merges name an id that does not exist",
    "tokhuge": "ckpt.json whose tokenizer has a merge of ids 10**30 and -1",
    "badstate": "ckpt.json whose training state lacks the RNG state",
    "badpos": "ckpt.json whose data position is far past the end of the data",
    "badtrain": "ckpt.json whose config.train.batch_size is a string",
    "notjson": "notjson.json: plain text",
    "array": "array.json: a JSON array",
    "deep": "deep.json: 100000 nested JSON arrays",
    "rundir": "run/: the folder of the run that made ckpt.json (last.json, best.json, metrics)",
    "badrng": "ckpt.json whose RNG state is out of range (2**200)",
    "huge": "ckpt.json whose parameters are all 3e37: finite, valid checksum, useless",
    "notrain": "ckpt.json without its training configuration (config.train)",
    "loop": "loop.txt: a symbolic link loop (loop.txt -> loop2.txt -> loop.txt)",
    "tinycopy": "tinycopy.txt: a copy of tiny.txt (an input --out must never replace)",
    "linkout": "linkout.json: a symbolic link to tok.json",
    "fifo": "fifo.json: a named pipe (stands for any device node: never replaced)",
    "hugeint": "hugeint.json: a tokenizer whose merge holds a 5000-digit number",
}

TRUNC = [10 * k for k in range(10)]

_BIG = "1" + "0" * 13          # 10**13
_HUGE = "1" + "0" * 9          # 10**9


def _flag_rows(cmd, flag, bad_values, pre=()):
    """Usage-error rows for one numeric flag: each value must be refused by argparse (exit 2)."""
    rows = []
    for tag, value in bad_values:
        rows.append(("%s %s %s" % (cmd, flag, tag), [cmd] + list(pre) + [flag, value], 2,
                     r"argument (?:[-\w]+/)*%s(?![-\w])" % re.escape(flag)))
    return rows


_INT_BAD = [("type", "x"), ("negative", "-1"), ("zero", "0"), ("absurd", _BIG)]
_INT0_BAD = [("type", "1.5"), ("negative", "-1"), ("absurd", _BIG + "0000000")]
_FLOAT_BAD = [("type", "x"), ("negative", "-1"), ("nan", "nan"), ("inf", "inf")]

TRAIN = ["train", "--model-data", "{tiny}", "--out-dir", "{out}", "{SMALL}"]


def _train_rows():
    rows = []
    pre = TRAIN[1:]
    for flag in ("--bpe-vocab-size", "--embedding-dim", "--gru-hidden-size", "--gru-layers",
                 "--num-experts", "--active-experts", "--seq-length", "--batch-size", "--epochs",
                 "--max-steps", "--accumulate", "--threads", "--eval-every", "--max-response"):
        rows += _flag_rows("train", flag, _INT_BAD, pre)
    for flag in ("--warmup-steps", "--sample-every", "--top-k", "--seed"):
        rows += _flag_rows("train", flag, _INT0_BAD, pre)
    for flag in ("--lr", "--eps-rmsnorm", "--eps-adamw"):
        rows += _flag_rows("train", flag, _FLOAT_BAD + [("zero", "0")], pre)
    for flag in ("--wd", "--grad-clip", "--temperature"):
        rows += _flag_rows("train", flag, _FLOAT_BAD, pre)
    rows += _flag_rows("train", "--eps-rmsnorm", [("absurd", "1e300")], pre)
    rows += _flag_rows("train", "--top-p", [("type", "x"), ("zero", "0"), ("absurd", "1.5")], pre)
    rows += _flag_rows("train", "--val-fraction", [("type", "x"), ("negative", "-0.1"),
                                                   ("absurd", "0.9")], pre)
    rows += [
        ("train --lr-schedule unknown", TRAIN + ["--lr-schedule", "linear"], 2, "--lr-schedule"),
        ("train --encoding-errors unknown", TRAIN + ["--encoding-errors", "ignore"], 2,
         "--encoding-errors"),
        ("train --quiet with a value", TRAIN + ["--quiet", "yes"], 2, "unrecognized arguments"),
        ("train unknown flag", TRAIN + ["--learning-rate", "0.1"], 2, "unrecognized arguments"),
        ("train --model-data without a value", ["train", "--model-data"], 2, "--model-data"),
        # absurd values that parse: refused with one line before anything large is allocated
        ("train --gru-hidden-size 65536 (terabytes)", TRAIN + ["--gru-hidden-size", "65536"], 1,
         "needs about .* GB of memory"),
        ("train --num-experts 1024 --gru-hidden-size 4096", TRAIN + ["--num-experts", "1024",
         "--gru-hidden-size", "4096"], 1, "needs about .* GB of memory"),
        ("train --seq-length 1000000", TRAIN + ["--seq-length", "1000000"], 1,
         "fewer than one window|needs about .* GB of memory"),
        ("train --batch-size 1000000", TRAIN + ["--batch-size", "1000000"], 1,
         "fewer than one window|needs about .* GB of memory"),
        ("train --accumulate beyond an epoch", TRAIN + ["--accumulate", "1000"], 1,
         "--accumulate 1000 exceeds"),
        ("train --active-experts > --num-experts", TRAIN + ["--num-experts", "2",
         "--active-experts", "3"], 1, "--active-experts"),
        ("train --lr 1e30 (diverges)", TRAIN + ["--lr", "1e30"], 1,
         "became (nan|inf)|diverged"),
        ("train --out-dir is a file", ["train", "--model-data", "{tiny}", "--out-dir", "{tiny}",
                                       "{SMALL}"], 1, "is a file, not a folder"),
        # data files
        ("train --model-data missing", ["train", "--model-data", "{missing}", "{SMALL}"], 1,
         "not found"),
        ("train --model-data empty", ["train", "--model-data", "{empty}", "{SMALL}"], 1, "empty"),
        ("train --model-data 0 bytes", ["train", "--model-data", "{zero}", "{SMALL}"], 1, "empty"),
        ("train --model-data binary", ["train", "--model-data", "{binary}", "{SMALL}"], 1,
         "looks binary"),
        ("train --model-data not UTF-8", ["train", "--model-data", "{latin1}", "{SMALL}"], 1,
         "not valid UTF-8: .* at byte offset"),
        ("train --model-data folder without .txt", ["train", "--model-data", "{emptydir}",
                                                    "{SMALL}"], 1, "has no .txt files"),
        ("train --model-data shorter than a window", ["train", "--model-data", "{short}",
                                                      "--out-dir", "{out}", "{SMALL}"], 1,
         "fewer than one window"),
        ("train --model-data one 5 MB line (valid)",
         ["train", "--model-data", "{hugeline}", "--out-dir", "{out}", "--bpe-vocab-size", "280",
          "--embedding-dim", "8", "--gru-hidden-size", "8", "--num-experts", "2", "--seq-length",
          "8", "--batch-size", "2", "--max-steps", "1", "--no-chat", "--sample-every", "0",
          "--val-fraction", "0.001"], 0, "^done: 1 steps"),
        ("train --bpe-data missing", TRAIN + ["--bpe-data", "{missing}"], 1, "not found"),
        ("train --bpe-data binary", TRAIN + ["--bpe-data", "{binary}"], 1,
         "not valid UTF-8|binary"),
        ("train --bpe-data not UTF-8", TRAIN + ["--bpe-data", "{latin1}"], 1, "UTF-8"),
        ("train --validation-data missing", TRAIN + ["--validation-data", "{missing}"], 1,
         "not found"),
        ("train --validation-data empty", TRAIN + ["--validation-data", "{empty}"], 1, "empty"),
        ("train --validation-data binary", TRAIN + ["--validation-data", "{binary}"], 1,
         "looks binary"),
        ("train --validation-data one character", TRAIN + ["--validation-data", "{onechar}"], 1,
         "too short"),
    ]
    # checkpoints given to `train --checkpoint`
    resume = ["train", "--model-data", "{tiny}", "--out-dir", "{out}", "--no-chat", "--quiet",
              "--sample-every", "0", "--checkpoint"]
    for k in TRUNC:
        rows.append(("train --checkpoint truncated at %d%%" % k, resume + ["{trunc%02d}" % k], 1,
                     "truncated|empty"))
    rows += [
        ("train --checkpoint missing", resume + ["{missing}"], 1, "does not exist"),
        ("train --checkpoint is a folder", resume + ["{emptydir}"], 1, "is a directory"),
        ("train --checkpoint is plain text", resume + ["{notjson}"], 1, "not JSON"),
        ("train --checkpoint is a tokenizer", resume + ["{tok}"], 1, "not a shoestring checkpoint"),
        ("train --checkpoint flipped byte", resume + ["{flip}"], 1, "checksum mismatch"),
        ("train --checkpoint wrong version", resume + ["{version}"], 1, "format version 99"),
        ("train --checkpoint missing key", resume + ["{nokey}"], 1, "missing key 'optimizer'"),
        ("train --checkpoint 1 TB shape", resume + ["{tbshape}"], 1,
         "more than the whole file of .* can hold"),
        ("train --checkpoint config of TBs", resume + ["{tbconfig}"], 1,
         "implies .* parameters .* but the whole file is"),
        ("train --checkpoint NaN parameters", resume + ["{nan}"], 1, "non-finite"),
        ("train --checkpoint tokenizer/V mismatch", resume + ["{tokvocab}"], 1,
         "tokenizer has .* tokens but its model has V="),
        ("train --checkpoint malformed tokenizer", resume + ["{tokbad}"], 1,
         "tokenizer data is malformed"),
        ("train --checkpoint absurd merge ids", resume + ["{tokhuge}"], 1,
         "tokenizer data is malformed"),
        ("train --checkpoint training state lacks RNG", resume + ["{badstate}"], 1,
         "training state is malformed"),
        ("train --checkpoint data position past the end", resume + ["{badpos}"], 1,
         "outside the model data"),
        ("train --checkpoint config.train bad type", resume + ["{badtrain}"], 1,
         "config.train.batch_size"),
        ("train --checkpoint contradicting flag", resume + ["{ckpt}", "--gru-hidden-size", "32"],
         1, "contradicts the checkpoint"),
        # #17: flags that cannot apply on resume, run folders, numbers in float32
        ("train --checkpoint with --bpe-data", resume + ["{ckpt}", "--bpe-data", "{tiny}"], 1,
         "--bpe-data cannot apply when resuming"),
        ("train --checkpoint with another --val-fraction", resume + ["{ckpt}", "--val-fraction",
                                                                    "0.3"], 1,
         "--val-fraction 0.3 contradicts the checkpoint"),
        ("train --checkpoint with another --seed", resume + ["{ckpt}", "--seed", "5"], 1,
         "--seed 5 contradicts the checkpoint"),
        ("train --checkpoint RNG state out of range", resume + ["{badrng}"], 1,
         "training state is malformed"),
        ("train --checkpoint without config.train", resume + ["{notrain}"], 1,
         "no training configuration"),
        ("train --out-dir holding another run", ["train", "--model-data", "{tiny}", "--out-dir",
                                                 "{rundir}", "{SMALL}"], 1,
         "already holds a training run"),
        ("train --out-dir empty", ["train", "--model-data", "{tiny}", "--out-dir", "", "{SMALL}"],
         2, "--out-dir is empty"),
        ("train --eps-rmsnorm 0 in float32", TRAIN + ["--eps-rmsnorm", "1e-46"], 1,
         "--eps-rmsnorm .*float32"),
        ("train --model-data symbolic link loop", ["train", "--model-data", "{loop}", "{SMALL}"],
         1, "symbolic link loop"),
    ]
    rows += _flag_rows("train", "--eps-adamw", [("0 in float32", "1e-46")], TRAIN[1:])
    rows += _flag_rows("train", "--lr", [("infinite in float32", "1e39")], TRAIN[1:])
    return rows


def _tokenizer_rows():
    tk = ["tokenizer", "--bpe-vocab-size", "300"]
    rows = _flag_rows("tokenizer", "--bpe-vocab-size", _INT_BAD, ["--bpe-data", "{tiny}"])
    rows += [
        ("tokenizer nothing to do", ["tokenizer"], 2, "nothing to do"),
        ("tokenizer --bpe-data and --load", ["tokenizer", "--bpe-data", "{tiny}", "--load",
                                             "{tok}"], 2, "not both"),
        ("tokenizer --bpe-data missing", tk + ["--bpe-data", "{missing}"], 1, "not found"),
        ("tokenizer --bpe-data 0 bytes", tk + ["--bpe-data", "{zero}"], 1, "empty"),
        ("tokenizer --bpe-data binary", tk + ["--bpe-data", "{binary}"], 1, "UTF-8|binary"),
        ("tokenizer --bpe-data not UTF-8", tk + ["--bpe-data", "{latin1}"], 1, "UTF-8"),
        ("tokenizer --bpe-data a folder", tk + ["--bpe-data", "{emptydir}"], 1, "folder"),
        ("tokenizer --bpe-data one 5 MB line (valid)", tk + ["--bpe-data", "{hugeline}"], 0,
         "^trained tokenizer: 300 tokens"),
        ("tokenizer --encode lone surrogate", tk + ["--bpe-data", "{tiny}", "--encode",
                                                    "a\udcffb"], 1, "surrogate"),
        ("tokenizer --out into a missing folder", tk + ["--bpe-data", "{tiny}", "--out",
                                                        "{missing}/tok.json"], 1, "could not write"),
        ("tokenizer --load missing", ["tokenizer", "--load", "{missing}"], 1, "not found"),
        ("tokenizer --load plain text", ["tokenizer", "--load", "{notjson}"], 1, "not valid JSON"),
        ("tokenizer --load binary", ["tokenizer", "--load", "{binary}"], 1, "not UTF-8"),
        ("tokenizer --load JSON array", ["tokenizer", "--load", "{array}"], 1, "malformed"),
        ("tokenizer --load deeply nested JSON", ["tokenizer", "--load", "{deep}"], 1,
         "nested too deeply"),
        ("tokenizer --load truncated checkpoint", ["tokenizer", "--load", "{trunc50}"], 1,
         "not valid JSON"),
        ("tokenizer --load malformed tokenizer", ["tokenizer", "--load", "{tokbad}"], 1,
         "malformed"),
        ("tokenizer --load absurd merge ids", ["tokenizer", "--load", "{tokhuge}"], 1,
         "malformed"),
        # #17: write only what is meant; read nothing endless
        ("tokenizer --out equal to --bpe-data", tk + ["--bpe-data", "{tinycopy}", "--out",
                                                      "{tinycopy}"], 2, "is also an input"),
        ("tokenizer --out empty", tk + ["--bpe-data", "{tiny}", "--out", ""], 2, "--out is empty"),
        ("tokenizer --out a symbolic link", tk + ["--bpe-data", "{tiny}", "--out", "{linkout}"],
         2, "not a regular file"),
        ("tokenizer --out a named pipe", tk + ["--bpe-data", "{tiny}", "--out", "{fifo}"], 2,
         "not a regular file"),
        ("tokenizer --bpe-data /dev/zero", tk + ["--bpe-data", "/dev/zero"], 1,
         "not a regular file"),
        ("tokenizer --load /dev/zero", ["tokenizer", "--load", "/dev/zero"], 1,
         "not a regular file"),
        ("tokenizer --load symbolic link loop", ["tokenizer", "--load", "{loop}"], 1,
         "symbolic link loop"),
        ("tokenizer --load huge integer", ["tokenizer", "--load", "{hugeint}"], 1,
         "more than 4,300 digits"),
        ("export --out equal to --checkpoint", ["export", "--checkpoint", "{ckpt}", "--out",
                                                "{ckpt}"], 2, "is also an input"),
        ("export --out empty", ["export", "--checkpoint", "{ckpt}", "--out", ""], 2,
         "--out is empty"),
        ("prepare --out equal to its input", ["prepare", "{tinycopy}", "--out", "{tinycopy}"], 2,
         "is also an input"),
        ("train --model-data inside a file", ["train", "--model-data", "{tiny}/x", "{SMALL}"], 1,
         "is a file, not a folder"),
        ("tokenizer --load inside a file", ["tokenizer", "--load", "{tiny}/t.json"], 1,
         "is a file, not a folder"),
    ]
    return rows


def _run_rows(cmd):
    extra = ["--prompt", "hello"] if cmd == "generate" else []
    base = [cmd] + extra + ["--checkpoint"]
    rows = [("%s --checkpoint not given" % cmd, [cmd] + extra, 2, "no checkpoint given")]
    for flag, bad in (("--temperature", _FLOAT_BAD), ("--top-p", [("type", "x"), ("zero", "0"),
                                                                 ("absurd", "1.5")]),
                      ("--top-k", _INT0_BAD), ("--seed", _INT0_BAD)):
        rows += _flag_rows(cmd, flag, bad, base[1:] + ["{ckpt}"])
    rows += _flag_rows(cmd, "--temperature", [("absurd", "1e39")], base[1:] + ["{ckpt}"])
    size_flag = "--max-tokens" if cmd == "generate" else "--max-response"
    rows += _flag_rows(cmd, size_flag, _INT_BAD, base[1:] + ["{ckpt}"])
    for k in (0, 30, 60, 90):
        rows.append(("%s --checkpoint truncated at %d%%" % (cmd, k), base + ["{trunc%02d}" % k], 1,
                     "truncated|empty"))
    for name, what, pat in (("missing", "missing", "does not exist"),
                            ("emptydir", "a folder", "folder without best.json"),
                            ("binary", "binary", "not UTF-8|not JSON"),
                            ("notjson", "plain text", "not JSON"),
                            ("array", "a JSON array", "not a shoestring checkpoint"),
                            ("deep", "deeply nested JSON", "nested too deeply"),
                            ("tok", "a tokenizer", "not a shoestring checkpoint"),
                            ("flip", "flipped byte", "checksum mismatch"),
                            ("version", "wrong version", "format version 99"),
                            ("nokey", "missing key", "missing key"),
                            ("tbshape", "1 TB shape", "more than the whole file"),
                            ("tbconfig", "config of TBs", "but the whole file is"),
                            ("nan", "NaN parameters", "non-finite"),
                            ("tokvocab", "tokenizer/V mismatch", "tokenizer has .* tokens but its model has V="),
                            ("tokbad", "malformed tokenizer", "tokenizer is unusable"),
                            ("tokhuge", "absurd merge ids", "tokenizer is unusable"),
                            ("huge", "huge finite parameters", "non-finite outputs"),
                            ("loop", "symbolic link loop", "symbolic link|Too many levels")):
        rows.append(("%s --checkpoint %s" % (cmd, what), base + ["{%s}" % name], 1, pat))
    if cmd == "generate":
        rows.append(("generate empty --prompt", ["generate", "--prompt", "", "--checkpoint",
                                                 "{ckpt}"], 1, "prompt is empty"))
    return rows


def all_cases():
    rows = _train_rows() + _tokenizer_rows() + _run_rows("chat") + _run_rows("generate")
    ids = [r[0] for r in rows]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, dup
    return rows


CASES = all_cases()


# ---- the files the cases name ---------------------------------------------------------------
def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _mutate(src, dst, fn):
    """dst = the checkpoint src with fn(doc) applied to its parsed JSON."""
    with open(src, encoding="ascii") as f:
        doc = json.load(f)
    fn(doc)
    with open(dst, "w", encoding="ascii") as f:
        json.dump(doc, f)


def _tensor(values):
    import zlib

    import numpy as np
    raw = np.asarray(values, "<f4").tobytes()
    return {"dtype": "float32", "byteorder": "little", "shape": [len(values)],
            "crc32": zlib.crc32(raw) & 0xFFFFFFFF, "data": base64.b64encode(raw).decode("ascii")}


def make_files(root, train=None):
    """Create every file of FILES under `root`; returns {name: path}.

    train(argv) runs `shoestring train` (in-process main by default) to make the valid checkpoint.
    """
    import numpy as np

    from shoestring.tokenizer import Tokenizer

    os.makedirs(root, exist_ok=True)
    p = {name: os.path.join(root, name) for name in FILES}
    _write(os.path.join(root, "tiny.txt"), TINY_CHAT.encode("utf-8"))
    p["tiny"] = os.path.join(root, "tiny.txt")
    p["missing"] = os.path.join(root, "nope.txt")
    p["empty"] = os.path.join(root, "empty.txt")
    _write(p["empty"], b"  \n\n")
    p["zero"] = os.path.join(root, "zero.txt")
    _write(p["zero"], b"")
    p["binary"] = os.path.join(root, "binary.bin")
    _write(p["binary"], bytes(range(256)) * 16)
    p["latin1"] = os.path.join(root, "latin1.txt")
    _write(p["latin1"], ("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n" * 50).encode("latin-1"))
    p["hugeline"] = os.path.join(root, "hugeline.txt")
    words = "the quick brown fox jumps over the lazy dog and keeps running far away "
    _write(p["hugeline"], (words * (5_000_000 // len(words) + 1))[:5_000_000].encode("ascii"))
    p["short"] = os.path.join(root, "short.txt")
    _write(p["short"], b"[USER] hi [EOS]\n[BOT] hello there [EOS]\n" * 2)
    p["onechar"] = os.path.join(root, "onechar.txt")
    _write(p["onechar"], b"a")
    os.makedirs(p["emptydir"], exist_ok=True)
    p["out"] = os.path.join(root, "out")
    p["notjson"] = os.path.join(root, "notjson.json")
    _write(p["notjson"], b"this is not a checkpoint\n")
    p["array"] = os.path.join(root, "array.json")
    _write(p["array"], b"[1, 2, 3]\n")
    p["deep"] = os.path.join(root, "deep.json")
    _write(p["deep"], b"[" * 100000 + b"]" * 100000)

    # a valid checkpoint of a tiny model, and its tokenizer
    run = os.path.join(root, "run")
    argv = ["train", "--model-data", p["tiny"], "--out-dir", run] + SMALL
    if train is None:
        from shoestring.cli import main
        rc = main(argv)
    else:
        rc = train(argv)
    assert rc == 0, "training the reference checkpoint failed (%r)" % rc
    p["ckpt"] = os.path.join(root, "ckpt.json")
    with open(os.path.join(run, "last.json"), "rb") as f:
        good = f.read()
    _write(p["ckpt"], good)
    doc = json.loads(good)
    p["tok"] = os.path.join(root, "tok.json")
    Tokenizer.from_dict(doc["tokenizer"]).save(p["tok"])

    for k in TRUNC:
        name = "trunc%02d" % k
        p[name] = os.path.join(root, name + ".json")
        _write(p[name], good[:len(good) * k // 100])

    def ck(name):
        p[name] = os.path.join(root, name + ".json")
        return p[name]

    def flip(d):
        s = d["params"]["data"]
        i = len(s) // 2
        d["params"]["data"] = s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]
    _mutate(p["ckpt"], ck("flip"), flip)
    _mutate(p["ckpt"], ck("version"), lambda d: d.update(version=99))
    _mutate(p["ckpt"], ck("nokey"), lambda d: d.pop("optimizer"))
    _mutate(p["ckpt"], ck("tbshape"), lambda d: d["params"].update(shape=[250_000_000_000]))
    _mutate(p["ckpt"], ck("tbconfig"), lambda d: d["config"]["model"].update(H=1_000_000))

    def nan(d):
        n = d["params"]["shape"][0]
        vals = np.frombuffer(base64.b64decode(d["params"]["data"]), "<f4").copy()
        vals[n // 3] = np.nan
        d["params"] = _tensor(vals)
    _mutate(p["ckpt"], ck("nan"), nan)

    def tokvocab(d):
        t = d["tokenizer"]
        t["merges"] = t["merges"][:-10]
        t["vocab_size"] -= 10
    _mutate(p["ckpt"], ck("tokvocab"), tokvocab)

    def tokbad(d):
        d["tokenizer"]["merges"][3] = [0, 10 ** 6]
    _mutate(p["ckpt"], ck("tokbad"), tokbad)

    def tokhuge(d):
        d["tokenizer"]["merges"][0] = [10 ** 30, -1]
    _mutate(p["ckpt"], ck("tokhuge"), tokhuge)
    _mutate(p["ckpt"], ck("badstate"), lambda d: d["training"].pop("rng"))
    _mutate(p["ckpt"], ck("badpos"), lambda d: d["training"].update(window=10 ** 9))
    _mutate(p["ckpt"], ck("badtrain"), lambda d: d["config"]["train"].update(batch_size="4"))
    # #17
    p["rundir"] = run
    _mutate(p["ckpt"], ck("badrng"), lambda d: d["training"]["rng"]["state"].update(state=2 ** 200))
    _mutate(p["ckpt"], ck("notrain"), lambda d: d["config"].pop("train"))

    def huge(d):
        n = d["params"]["shape"][0]
        d["params"] = _tensor(np.full(n, 3e37, np.float32))
    _mutate(p["ckpt"], ck("huge"), huge)
    p["loop"] = os.path.join(root, "loop.txt")
    p["tinycopy"] = os.path.join(root, "tinycopy.txt")
    _write(p["tinycopy"], TINY_CHAT.encode("utf-8"))
    p["linkout"] = os.path.join(root, "linkout.json")
    p["hugeint"] = os.path.join(root, "hugeint.json")
    _write(p["hugeint"], ('{"format": "shoestring-bpe", "version": 1, "pretokenizer": '
                          '"shoestring-1", "special_tokens": ["[EOS]"], "merges": [[1%s, 2]]}'
                          % ("0" * 5000)).encode("ascii"))
    try:
        os.symlink("loop2.txt", p["loop"])
        os.symlink("loop.txt", os.path.join(root, "loop2.txt"))
        os.symlink("tok.json", p["linkout"])
        p["fifo"] = os.path.join(root, "fifo.json")
        os.mkfifo(p["fifo"])
    except (OSError, NotImplementedError):     # no symbolic links here: the rows then fail
        pass
    return p


def expand(argv, files):
    """The argv of a case with its templates filled in."""
    out = []
    for a in argv:
        if a == "{SMALL}":
            out += SMALL
        else:
            out.append(re.sub(r"\{(\w+)\}", lambda m: files[m.group(1)], a))
    return out


def display(argv):
    """The argv of a case as the table shows it (file names instead of temporary paths)."""
    out = []
    for a in argv:
        if a == "{SMALL}":
            out.append("$SMALL")
            continue
        a = re.sub(r"\{(trunc\d\d|flip|version|nokey|tbshape|tbconfig|nan|tokvocab|tokbad|"
                   r"tokhuge|badstate|badpos|badtrain|badrng|huge|notrain|linkout|hugeint|fifo)\}",
                   r"\1.json", a)
        a = a.replace("{rundir}", "run/")
        a = a.replace("{ckpt}", "ckpt.json").replace("{tok}", "tok.json")
        a = a.replace("{missing}", "nope.txt").replace("{out}", "out/").replace(
            "{emptydir}", "emptydir/")
        a = re.sub(r"\{(tiny|empty|zero|latin1|hugeline|short|onechar|loop|tinycopy)\}",
                   r"\1.txt", a)
        a = a.replace("{binary}", "binary.bin").replace("{notjson}", "notjson.json")
        a = a.replace("{array}", "array.json").replace("{deep}", "deep.json")
        if a == _BIG:
            a = "10**13"
        elif a == _BIG + "0000000":
            a = "10**20"
        if a == "" or " " in a or not a.isprintable():
            a = ascii(a) if not a.isprintable() else repr(a)
        out.append(a)
    return "shoestring " + " ".join(out)


ERROR_LINE = re.compile(r"^shoestring( [a-z]+)?: error: ")


def check(case, rc, stderr, stdout=""):
    """None if the result is what the case expects, else a description of what went wrong."""
    cid, _, want_rc, pattern = case
    lines = [l for l in stderr.splitlines() if l.strip()]
    if "Traceback" in stderr:
        return "traceback: %s" % stderr[-800:]
    if rc != want_rc:
        return "exit code %r, expected %r; stderr: %s" % (rc, want_rc, stderr[-800:])
    if want_rc == 0:
        out = [l for l in (stderr + "\n" + stdout).splitlines() if l.strip()]
        if not any(re.search(pattern, l) for l in out):
            return "no line matches %r: %s" % (pattern, (stderr + stdout)[-800:])
        return None
    errors = [l for l in lines if ERROR_LINE.match(l)]
    if len(errors) != 1:
        return "expected exactly one error line, got %d: %s" % (len(errors), stderr[-800:])
    if lines[-1] is not errors[0]:
        return "the error line is not the last line: %s" % stderr[-800:]
    if not re.search(pattern, errors[0]):
        return "error line %r does not match %r" % (errors[0], pattern)
    return None


def result_line(rc, stderr, stdout=""):
    """The one line the table shows: the error line, or the last line of output on success."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    errors = [l for l in lines if ERROR_LINE.match(l)]
    if errors:
        return errors[-1]
    out = [l for l in (stderr + "\n" + stdout).splitlines() if l.strip()]
    return out[-1] if out else ""


def subprocess_argv(argv):
    """argv to run `shoestring` with this Python (the installed package, not the source tree)."""
    return [sys.executable, "-m", "shoestring"] + argv
