"""export.py: a trained model in files other programs read (`shoestring export`).

Formats (the writer of each is one function of a Checkpoint in WRITERS; `--int8` is the json
format with int8 matrices, export_int8):

- "json": a weights-only shoestring checkpoint. The same JSON format as MODEL.md §5, so the
  ordinary loader (chat, generate, eval, `shoestring.load`) reads it unchanged; the AdamW state
  (`"optimizer": null`) and the run state needed only to resume (RNG, data position, carried
  recurrent state) are left out, which makes it about a third of the size. The training
  summary (step, epoch, best validation loss, data fingerprint) and the metrics history are
  kept for `inspect` and `plot`; `training.weights_only` is true.
- "safetensors": `G.safetensors` and `G.tokenizer.json`.
  * The safetensors file is written here (the format is small: an 8-byte little-endian header
    length, a JSON header naming each tensor's dtype, shape and byte range, padded with spaces
    to a multiple of 8, then the raw little-endian tensors back to back). One tensor per
    parameter, named as in the parameter layout (`WE`, `l0.Wg`, ..., `Wo`, `bo`; shapes in
    params.layout). `__metadata__` holds the model config and the shoestring tokenizer as JSON
    strings, so the file alone is enough to rebuild the model.
  * The tokenizer is a HuggingFace `tokenizers` file that gives the SAME ids as
    Tokenizer.encode(text) (allow_special=True, the mode of training data). How the rules of
    tokenizer.py map onto it:
      - pre-tokenisation: one `Split` (behaviour Isolated) with shoestring's own pattern, the
        special tokens included as its first alternative. Letter, digit and whitespace classes
        are spelled out as code point ranges computed with Python's `re` here, so the Rust
        regex engine classifies every character exactly as this Python does (its `\\w`, `\\d`
        and `\\s` differ from Python's: marks, U+001C..U+001F);
      - then `ByteLevel` (no regex, no prefix space) maps bytes to the usual printable
        characters; the BPE model has every shoestring token under that spelling, the merges
        in training order (rank == id order, as in Tokenizer._bpe);
      - special tokens are ordinary vocabulary entries reached through `ignore_merges` (a
        pre-token that is a whole vocabulary entry maps to it directly). That is exact for
        every other piece too: BPE of a merged token's own bytes always rebuilds that token.
        They are NOT listed as HF "added tokens": those split the text before pre-tokenising,
        so "\\n\\n[USER]" would give one "\\n\\n" piece where shoestring gives "\\n", "\\n".
    Typed chat input (allow_special=False, where `[EOS]` is plain text) is not what this file
    reproduces: HF tokenizers have one mode. Reading it exactly needs `tokenizers` >= 0.19
    (older versions ignore `ignore_merges` and split the special tokens into pieces).
"""
import json
import math
import os
import re
import struct

import numpy as np

from .version import __version__
from .checkpoint import read_checkpoint, save_checkpoint
from .dataset import atomic_write_bytes, atomic_write_text
from .errors import ShoestringError
from .params import ParamLayout
from .tokenizer import _special_alternation

FORMATS = ("json", "safetensors")

# Training-state keys a weights-only checkpoint keeps (summaries; nothing needed to resume).
KEEP_TRAINING = ("step", "epoch", "best_val", "state_resets", "train_fingerprint")


# ---- weights-only checkpoint ------------------------------------------------------------------
def weights_only(ckpt, source=None):
    """The sections of Checkpoint `ckpt` without optimiser and resume state (a new dict)."""
    training = {k: ckpt.training[k] for k in KEEP_TRAINING if k in ckpt.training}
    training["weights_only"] = True
    if source is not None:
        training["exported_from"] = os.path.basename(os.fspath(source))
    return dict(ckpt.sections(), optimizer=None, training=training, state=None,
                metrics=list(ckpt.metrics))


# ---- safetensors ------------------------------------------------------------------------------
# numpy dtype -> safetensors dtype name; the data is always written little-endian.
_ST_DTYPES = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
}


def safetensors_bytes(tensors, metadata=None):
    """The bytes of a safetensors file holding `tensors` (an ordered list of (name, array)) and
    `metadata` ({str: str}). Tensors are stored in the order given, back to back."""
    header, chunks, off = {}, [], 0
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ShoestringError("safetensors metadata must map strings to strings, got %r: %r"
                                      % (k, type(v).__name__))
        header["__metadata__"] = dict(metadata)
    for name, arr in tensors:
        arr = np.asarray(arr)
        if name in header or name == "__metadata__":
            raise ShoestringError("safetensors: tensor name %r is used twice" % name)
        dtype = _ST_DTYPES.get(arr.dtype.newbyteorder("="))
        if dtype is None:
            raise ShoestringError("safetensors: tensor %r has dtype %s, which has no safetensors "
                                  "name" % (name, arr.dtype))
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)                     # the data starts 8-byte aligned
    return b"".join([struct.pack("<Q", len(text)), text] + chunks)


def model_tensors(cfg, params):
    """[(name, array)] of every parameter, in layout order, shaped as in params.layout."""
    views = ParamLayout(cfg).views(params)
    return [(name, views[name]) for name in ParamLayout(cfg).names()]


# ---- HuggingFace tokenizer.json ---------------------------------------------------------------
def _bytes_to_unicode():
    """GPT-2's byte -> printable character table (what HF's ByteLevel uses)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
            + list(range(ord("\xae"), ord("\xff") + 1)))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


_CLASS_CACHE = {}


def _class_ranges():
    """{'S', 'D', 'L'}: sorted code point ranges of Python re's whitespace, decimal digits and
    letters ([^\\W\\d_]) over every Unicode scalar value (what tokenizer.py's pattern uses)."""
    if not _CLASS_CACHE:
        every = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
        for key, pat in (("S", r"\s"), ("D", r"\d"), ("L", r"[^\W\d_]")):
            out = []
            for m in re.finditer(pat, every):
                c = ord(m.group())
                if out and out[-1][1] == c - 1:
                    out[-1][1] = c
                else:
                    out.append([c, c])
            _CLASS_CACHE[key] = out
    return _CLASS_CACHE


def _cls(ranges, negate=False):
    """An Oniguruma character class of code point ranges."""
    body = "".join("\\x{%X}" % a if a == b else "\\x{%X}-\\x{%X}" % (a, b) for a, b in ranges)
    return "[%s%s]" % ("^" if negate else "", body)


def hf_pretokenizer_regex(specials, bounded=True):
    """tokenizer.py's pre-token pattern (_compile_pattern) for Oniguruma, classes spelled out;
    bounded: the shoestring-2 caps (tokenizer.MAX_RUN, MAX_APOS)."""
    from .tokenizer import MAX_APOS, MAX_RUN
    r = _class_ranges()
    letter, digit, space = _cls(r["L"]), _cls(r["D"]), _cls(r["S"])
    nonspace = _cls(r["S"], negate=True)
    punct = _cls(sorted(r["S"] + r["D"] + r["L"]), negate=True)   # not a letter, digit or space
    q = "{1,%d}" % MAX_RUN if bounded else "+"
    word = " ?%s%s(?:['\\x{2019}]%s%s)%s" % (letter, q, letter, q,
                                             "{0,%d}" % MAX_APOS if bounded else "*")
    digits = " ?%s%s" % (digit, q)
    ws = "%s%s(?!%s)|%s%s" % (space, q, nonspace, space, q)
    if specials:
        alt = _special_alternation(specials)
        parts = ["(?:%s)" % alt, word, digits, " ?(?:(?!%s)%s)%s" % (alt, punct, q), ws]
    else:
        parts = [word, digits, " ?%s%s" % (punct, q), ws]
    return "|".join(parts)


def hf_tokenizer_dict(tok):
    """A HuggingFace `tokenizers` tokenizer.json (as a dict) giving the ids of tok.encode."""
    b2u = _bytes_to_unicode()
    spell = [s for s in tok.special_tokens]
    spell += ["".join(b2u[b] for b in tok.id_to_bytes(i)) for i in range(len(spell), tok.vocab_size)]
    seen = {}
    for i, s in enumerate(spell):
        if s in seen:
            raise ShoestringError(
                "this tokenizer has two tokens with the same bytes (ids %d and %d, %r), which a "
                "HuggingFace tokenizer.json cannot express (export with --format json)"
                % (seen[s], i, tok.id_to_piece(i)))
        seen[s] = i
    merges = ["%s %s" % (spell[a], spell[b]) for a, b in tok.merges]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": hf_pretokenizer_regex(tok.special_tokens,
                                                                     tok.pretokenizer != "shoestring-1")},
             "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {s: i for i, s in enumerate(spell)}, "merges": merges},
    }


# ---- the command ------------------------------------------------------------------------------
def _fmt_size(n):
    return "%.1f MB" % (n / 1e6) if n >= 1e6 else "%.1f KB" % (n / 1e3)


def _strip_suffix(path, suffixes):
    for s in suffixes:
        if path.endswith(s):
            return path[:-len(s)]
    return path


def output_paths(out, fmt="json", int8=False):
    """The files export(..., out, fmt, int8) writes."""
    if fmt == "safetensors" and not int8:
        base = _strip_suffix(out, (".safetensors",))
        return [base + ".safetensors", base + ".tokenizer.json"]
    return [out if out.endswith(".json") else out + ".json"]


def export_json(ckpt, out, source):
    """Weights-only checkpoint at `out` (.json added when missing). Returns [(path, bytes)]."""
    path, = output_paths(out)
    save_checkpoint(path, weights_only(ckpt, source))
    return [(path, os.path.getsize(path))]


def export_safetensors(ckpt, out, source):
    """`out`.safetensors and `out`.tokenizer.json. Returns [(path, bytes)]."""
    st_path, tj_path = output_paths(out, "safetensors")
    meta = {
        "format": "shoestring",
        "created_by": "shoestring %s" % __version__,
        "source": os.path.basename(os.fspath(source)),
        "config": json.dumps(ckpt.model.to_dict(), sort_keys=True),
        "tokenizer": json.dumps(ckpt.tokenizer.to_dict(), separators=(",", ":")),
    }
    data = safetensors_bytes(model_tensors(ckpt.model, ckpt.params), meta)
    tj = json.dumps(hf_tokenizer_dict(ckpt.tokenizer), ensure_ascii=False, indent=1) + "\n"
    atomic_write_bytes(st_path, data, what="safetensors file")
    atomic_write_text(tj_path, tj, what="tokenizer file")
    return [(st_path, len(data)), (tj_path, os.path.getsize(tj_path))]


WRITERS = {"json": export_json, "safetensors": export_safetensors}


def export_int8(ckpt, out, source):
    """Weights-only int8 file at `out` (.json added when missing; shoestring.quant). Returns
    [(path, bytes)]."""
    from .quant import int8_document

    path, = output_paths(out, int8=True)
    training = {k: v for k, v in weights_only(ckpt, source)["training"].items()
                if isinstance(v, (int, str, bool))}
    atomic_write_text(path, int8_document(ckpt.model, ckpt.params, ckpt.tokenizer.to_dict(),
                                          training),
                      what="int8 file")
    return [(path, os.path.getsize(path))]


def export(checkpoint, out, fmt="json", int8=False):
    """Export `checkpoint` to `out` in format `fmt` (int8: the json format with int8 matrices);
    returns [(path written, size in bytes)]."""
    if int8 and fmt != "json":
        raise ShoestringError("--int8 writes a shoestring file: use it with --format json")
    if fmt not in WRITERS:
        raise ShoestringError("unknown export format %r (use one of: %s)" % (fmt, ", ".join(WRITERS)))
    out = os.fspath(out)
    if os.path.isdir(out):
        raise ShoestringError("--out %s is a folder; give a file name (like %s)"
                              % (out, os.path.join(out, "model")))
    return (export_int8 if int8 else WRITERS[fmt])(read_checkpoint(checkpoint), out, checkpoint)


def summary(checkpoint, written):
    """The lines `shoestring export` prints."""
    src = os.path.getsize(checkpoint)
    lines = []
    for path, size in written:
        ratio = size / src if src else math.nan
        lines.append("wrote %s (%s, %.0f%% of %s)" % (path, _fmt_size(size), 100 * ratio,
                                                     os.path.basename(checkpoint)))
    return lines
