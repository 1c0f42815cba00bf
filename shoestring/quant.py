"""quant.py: the int8 weights-only file (`shoestring export --int8`) and its loader.

The decode step reads every matrix once per token, so its speed is the speed of reading the
weights: int8 copies with one float32 scale per row (kernels.quantize_rows: scale = max|row| /
127, q = round(row / scale)) are a quarter of the bytes. This file stores exactly those int8
rows, so loading it gives the same weights bit for bit as quantising the float32 checkpoint at
load (`shoestring chat --int8`), in about a third of the bytes of a weights-only checkpoint.

One plain JSON document (ASCII), written atomically:

    {"format": "shoestring-int8", "version": 1, "created_by": "shoestring X.Y.Z",
     "config": {"model": {...}}, "tokenizer": {...}, "training": {...},
     "float": TENSOR,                     # float32: every parameter that is not a matrix
                                          # (WE, biases, gains), in the parameter layout's order
     "int8": {NAME: {"q": TENSOR, "scale": TENSOR}, ...}}
                                          # every matrix: l<l>.Wg, .Wz, .Wcx, .Wch, (.Wp), and
                                          # "Wo", the head (the quantised WE when tied)

    TENSOR = {"dtype": "float32" | "int8", "byteorder": "little", "shape": [...],
              "crc32": zlib.crc32(raw), "data": base64(raw)}

The loader rebuilds the float32 parameter vector (matrices as q * scale, for code that reads
Model.params) and returns the int8 rows for kernels.DecodeWeights. Every problem (damaged JSON,
a missing or misshapen tensor, a checksum that does not match) is one CheckpointError line.
"""
import base64
import json
import zlib

import numpy as np

from .errors import CheckpointError, ShoestringError
from .params import ModelConfig, ParamLayout

FORMAT = "shoestring-int8"
VERSION = 1
_DTYPES = {"float32": np.dtype("<f4"), "int8": np.dtype("i1")}
_FIX = "export it again with `shoestring export --int8`"


def is_int8_file(path):
    """True when `path` starts like an int8 export (the format key comes first)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.replace(b" ", b"").startswith(b'{"format":"%s"' % FORMAT.encode())


def matrix_names(cfg):
    """The matrices the decode step reads, in layout order, then the head "Wo"."""
    from .params import layout
    names = [n for n, _, decayed in layout(cfg) if decayed and n != "Wo"]
    return names + ["Wo"]


def _encode(arr):
    arr = np.ascontiguousarray(arr)
    dtype = {np.dtype(np.float32): "float32", np.dtype(np.int8): "int8"}[arr.dtype]
    raw = arr.astype(_DTYPES[dtype]).tobytes()
    return {"dtype": dtype, "byteorder": "little", "shape": [int(d) for d in arr.shape],
            "crc32": zlib.crc32(raw) & 0xFFFFFFFF, "data": base64.b64encode(raw).decode("ascii")}


def _decode(path, rec, name, dtype, shape):
    def bad(what):
        raise CheckpointError("%s: int8 file is damaged: %s %s (%s)" % (path, name, what, _FIX))
    if not isinstance(rec, dict):
        bad("is missing")
    if rec.get("dtype") != dtype or rec.get("byteorder") != "little":
        bad("has dtype %r, expected %r" % (rec.get("dtype"), dtype))
    if rec.get("shape") != list(shape):
        bad("has shape %s, expected %s" % (rec.get("shape"), list(shape)))
    data = rec.get("data")
    if not isinstance(data, str):
        bad("has no data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        bad("has invalid base64 data")
    size = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
    if len(raw) != size:
        bad("has %d bytes, expected %d" % (len(raw), size))
    if (zlib.crc32(raw) & 0xFFFFFFFF) != rec.get("crc32"):
        bad("fails its checksum")
    return np.frombuffer(raw, dtype=_DTYPES[dtype]).astype(dtype).reshape(shape)


def int8_document(cfg, params, tokenizer_dict, training=None):
    """The int8 file's JSON text for ModelConfig `cfg` and its float32 parameters."""
    from . import kernels
    from .version import __version__

    lay = ParamLayout(cfg)
    views = lay.views(params)
    mats = matrix_names(cfg)
    q8 = {}
    for name in mats:
        W = kernels.head_weight(views) if name == "Wo" else views[name]
        q = np.empty(W.shape, np.int8)
        s = np.empty(W.shape[:-1], np.float32)
        kernels.quantize_rows(q, s, np.ascontiguousarray(W))
        q8[name] = {"q": _encode(q), "scale": _encode(s)}
    rest = [views[n].reshape(-1) for n, _, _, _, decayed in lay.entries if not decayed]
    doc = {"format": FORMAT, "version": VERSION, "created_by": "shoestring %s" % __version__,
           "config": {"model": cfg.to_dict()}, "tokenizer": tokenizer_dict,
           "training": dict(training or {}, weights_only=True, int8=True),
           "float": _encode(np.concatenate(rest).astype(np.float32)), "int8": q8}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def load_int8(path):
    """-> (the sections of a Checkpoint, {name: (q, scale)})."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise CheckpointError("%s: cannot read the int8 file (%s)" % (path, exc.strerror or exc)) \
            from None
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError("%s: int8 file is damaged: not valid JSON (%s)" % (path, _FIX)) \
            from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError("%s: not a shoestring int8 file (%s)" % (path, _FIX))
    if doc.get("version") != VERSION:
        raise CheckpointError("%s: int8 file version %r is not supported (this shoestring reads "
                              "version %d; %s)" % (path, doc.get("version"), VERSION, _FIX))
    try:
        cfg = ModelConfig(**doc["config"]["model"])
    except (KeyError, TypeError, ShoestringError) as exc:
        raise CheckpointError("%s: int8 file is damaged: the model configuration is unusable "
                              "(%s) (%s)" % (path, exc, _FIX)) from None
    lay = ParamLayout(cfg)
    ints = doc.get("int8")
    if not isinstance(ints, dict):
        raise CheckpointError("%s: int8 file is damaged: no int8 matrices (%s)" % (path, _FIX))
    rest_n = sum(size for _, _, _, size, decayed in lay.entries if not decayed)
    rest = _decode(path, doc.get("float"), "float", "float32", (rest_n,))
    params = np.empty(lay.n, np.float32)
    views = lay.views(params)
    q8 = {}
    pos = 0
    for name, shape, off, size, decayed in lay.entries:
        if not decayed:
            params[off:off + size] = rest[pos:pos + size]
            pos += size
    for name in matrix_names(cfg):
        shape = lay.shape(name) if name in lay.index else lay.shape("WE")
        rec = ints.get(name) if isinstance(ints.get(name), dict) else {}
        q = _decode(path, rec.get("q"), name + ".q", "int8", shape)
        s = _decode(path, rec.get("scale"), name + ".scale", "float32", shape[:-1])
        q8[name] = (q, s)
        if name in lay.index:
            views[name][...] = q * s[..., None]
    ckpt = {"config": doc["config"], "tokenizer": doc.get("tokenizer"), "params": params,
            "optimizer": None, "training": doc.get("training") or {}, "metrics": []}
    return ckpt, q8
