"""checkpoint.py: the JSON checkpoint of MODEL.md §5 -- atomic writes, strict validating loads.

Contract:
- `save_checkpoint(path, ckpt)` validates `ckpt` (a Checkpoint, or the dict of its sections:
  config, tokenizer, params, optimizer, training, metrics and optionally state), serialises it
  fully in memory, then writes it atomically (temp file in the same directory, flush, fsync,
  os.replace, fsync of the directory). On any OSError the previous file at `path` is left
  intact, the temp file is removed and a CheckpointError is raised.
- `read_checkpoint(path)` returns a typed Checkpoint (ModelConfig, TrainConfig, Tokenizer,
  parameters, optimiser state, run state, carried state), validated once, here, so that
  training, inference and the commands check nothing again. Its sections are exactly what was
  saved: numpy arrays come back as native float32 arrays, bit for bit; every other value is
  JSON-able and comes back equal (big ints, and +-inf / NaN floats included; tuples come back as
  lists). Loading runs no code (json only), refuses files over 2 GiB, and refuses tensor shapes
  the file is too small to hold before decoding or allocating anything. Every problem becomes
  ONE CheckpointError line naming what is wrong and what to do, never another exception type.

The file is one plain JSON document (RFC 8259, ASCII, no NaN/Infinity literals):

    {"format": "shoestring-checkpoint", "version": 2, "created_by": "shoestring 0.1.0",
     "created_at": "2025-01-01T00:00:00+00:00",
     "config": {"model": {"V":..,"C":..,"H":..,"L":..,"X":..,"K":..,"eps_rmsnorm":..}, ...},
     "tokenizer": {...}, "layout": [["l0.Wg", [X, I]], ...], "training": {...}, "metrics": [...],
     "params": TENSOR, "optimizer": null | {"step": int, "m": TENSOR, "v": TENSOR},
     "state": null | TENSOR}

    TENSOR = {"dtype": "float32", "byteorder": "little", "shape": [n], "crc32": zlib.crc32(raw),
              "data": base64(raw)}    where raw is the little-endian float32 bytes

A float that JSON cannot hold is written as {"$float": "inf" | "-inf" | "nan"}; a dict of the
caller's that happens to have the single key "$float" or "$dict" is wrapped as {"$dict": {...}},
so every JSON-able value round-trips unambiguously.

"state" is the training streams' carried recurrent state, shape (L, B, X, H) with B the run's
batch_size; null in a weights-only file. It may hold non-finite values: the trainer's guard
resets such streams at the next step, and resuming must see them as they were. Version 1 files
(still read) kept it as a list of decimal floats under training.state; it loads as the same
tensor, bit for bit (float32 -> repr -> float32 is exact).
"""
import base64
import binascii
import dataclasses
import datetime
import json
import math
import re
import os
import stat
import zlib

import numpy as np

from .version import __version__
from .dataset import atomic_write_bytes
from .errors import CheckpointError, ShoestringError
from .params import ModelConfig, ParamLayout, layout

FORMAT = "shoestring-checkpoint"
VERSION = 2
READS = (1, 2)                          # the format versions this shoestring loads
MAX_FILE_BYTES = 2 * 1024 ** 3          # refuse anything larger: a checkpoint of this model is MBs

CKPT_KEYS = ("config", "tokenizer", "params", "optimizer", "training", "metrics")
CKPT_OPTIONAL = ("state",)
HEADER_KEYS = ("format", "version", "created_by", "created_at")
DOC_KEYS = HEADER_KEYS + ("config", "tokenizer", "layout", "training", "metrics", "params",
                          "optimizer", "state")
DOC_KEYS_V1 = DOC_KEYS[:-1]
TENSOR_KEYS = ("dtype", "byteorder", "shape", "crc32", "data")
OPTIMIZER_KEYS = ("step", "m", "v")
# With weight averaging (--ema), `params` holds the average (what evaluation, chat and every
# reader use) and the optimizer section also keeps the weights being trained, so resume is exact.
OPTIMIZER_OPTIONAL = ("train_params",)
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))
MODEL_OPTIONAL = ("cap", "tie_embeddings")      # added by issue #11: older files lack them

_TAG_FLOAT = "$float"
_TAG_DICT = "$dict"
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

_DAMAGED = "the file was edited or damaged; use another checkpoint"
_SNIFF_ABOVE = 16 << 20     # files larger than this must start with the header to be read
_HEADER = re.compile(rb'\s*\{\s*"format"\s*:\s*"shoestring-checkpoint"')


# ---------------------------------------------------------------------------------------------
# JSON-able values: exact round trip of non-finite floats and big ints
# ---------------------------------------------------------------------------------------------

def _to_json(value, where):
    """A copy of `value` that json.dumps(allow_nan=False) accepts; CheckpointError if impossible."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isfinite(f):
            return f
        return {_TAG_FLOAT: "nan" if f != f else ("inf" if f > 0 else "-inf")}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError("cannot save checkpoint: %s has a key %r that is not a string "
                                      "(JSON keys are strings; convert it)" % (where, k))
            out[k] = _to_json(v, "%s.%s" % (where, k))
        if len(out) == 1 and next(iter(out)) in (_TAG_FLOAT, _TAG_DICT):
            return {_TAG_DICT: out}
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(v, "%s[%d]" % (where, i)) for i, v in enumerate(value)]
    raise CheckpointError("cannot save checkpoint: %s is a %s, which JSON cannot hold "
                          "(store numbers, strings, booleans, None, lists and dicts)"
                          % (where, type(value).__name__))


def _from_json(value):
    """Inverse of _to_json on parsed JSON; ValueError on a malformed tag."""
    if isinstance(value, dict):
        if len(value) == 1:
            (k, v), = value.items()
            if k == _TAG_FLOAT:
                if not isinstance(v, str) or v not in _NONFINITE:
                    raise ValueError("%r is not a valid {\"$float\": ...} value" % (v,))
                return _NONFINITE[v]
            if k == _TAG_DICT:
                if not isinstance(v, dict):
                    raise ValueError("{\"$dict\": ...} must hold an object")
                return {kk: _from_json(vv) for kk, vv in v.items()}
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------

def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _model_config(model, fail):
    """ModelConfig from a config["model"] dict; every problem goes to fail(message)."""
    if not isinstance(model, dict):
        fail("config.model must be an object, got %s" % type(model).__name__)
    for k in MODEL_KEYS:
        if k not in model and k not in MODEL_OPTIONAL:
            fail("config.model is missing key '%s'" % k)
    for k in model:
        if k not in MODEL_KEYS:
            fail("config.model has unknown key '%s'" % k)
    for k in MODEL_KEYS:
        if k not in model:
            continue
        v = model[k]
        if k == "cap":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                fail("config.model.cap must be a finite number >= 0, got %r" % (v,))
        elif k == "tie_embeddings":
            if not isinstance(v, bool):
                fail("config.model.tie_embeddings must be true or false, got %r" % (v,))
        elif k == "eps_rmsnorm":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                fail("config.model.eps_rmsnorm must be a finite number > 0, got %r" % (v,))
        elif not isinstance(v, int) or isinstance(v, bool):
            fail("config.model.%s must be a whole number, got %r" % (k, v))
    try:
        return ModelConfig(**model)
    except (ShoestringError, TypeError, ValueError) as e:
        fail("config.model is invalid: %s" % e)


def _check_array(name, arr, n):
    if not isinstance(arr, np.ndarray):
        raise CheckpointError("cannot save checkpoint: %s must be a numpy array, got %s"
                              % (name, type(arr).__name__))
    if arr.dtype.kind != "f" or arr.dtype.itemsize != 4:
        raise CheckpointError("cannot save checkpoint: %s must be float32, got %s" % (name, arr.dtype))
    if arr.shape != (n,):
        raise CheckpointError("cannot save checkpoint: %s has shape %s, but the model config needs (%d,)"
                              % (name, arr.shape, n))
    bad = int(n - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise CheckpointError("refusing to save checkpoint: %s holds %d non-finite values "
                              "(training diverged; resume from an earlier checkpoint)" % (name, bad))


def _state_shape(cfg, config, dims, fail):
    """(L, B, X, H) the state of a model `cfg` run with `config` has, B taken from `dims` (the
    stored shape); every problem goes to fail(message)."""
    if (not isinstance(dims, (list, tuple)) or len(dims) != 4
            or not all(_is_int(d) and d >= 0 for d in dims)):
        fail("the state tensor has shape %s; expected [L, B, X, H] = [%d, B, %d, %d]"
             % (json.dumps([d if _is_int(d) else str(d) for d in dims]
                           if isinstance(dims, (list, tuple)) else str(dims))[:80], cfg.L, cfg.X, cfg.H))
    B = (config.get("train") or {}).get("batch_size") if isinstance(config.get("train"), dict) else None
    want = [cfg.L, int(B) if _is_int(B) else int(dims[1]), cfg.X, cfg.H]
    if [int(d) for d in dims] != want or want[1] < 1:
        fail("the state tensor has shape %s but the model and batch_size need %s" % (list(dims), want))
    return tuple(want)


def _encode_tensor(arr):
    raw = np.ascontiguousarray(arr).astype("<f4", copy=False).tobytes()
    return {"dtype": "float32", "byteorder": "little", "shape": [int(d) for d in arr.shape],
            "crc32": zlib.crc32(raw) & 0xFFFFFFFF, "data": base64.b64encode(raw).decode("ascii")}


def encode_checkpoint(ckpt):
    """The checkpoint document as bytes (validates `ckpt`; touches no file)."""
    def fail(msg):
        raise CheckpointError("cannot save checkpoint: %s (a bug in the caller)" % msg)

    if isinstance(ckpt, Checkpoint):
        ckpt = ckpt.sections()
    if not isinstance(ckpt, dict):
        fail("the checkpoint must be a dict, got %s" % type(ckpt).__name__)
    for k in CKPT_KEYS:
        if k not in ckpt:
            fail("missing key '%s'" % k)
    for k in ckpt:
        if k not in CKPT_KEYS + CKPT_OPTIONAL:
            fail("unknown key '%s'" % k)
    state = ckpt.get("state")
    config, opt = ckpt["config"], ckpt["optimizer"]
    if not isinstance(config, dict) or "model" not in config:
        fail("config must be a dict with a 'model' entry")
    cfg = _model_config(config["model"], fail)
    pl = ParamLayout(cfg)
    _check_array("params", ckpt["params"], pl.n)
    if opt is not None:
        if (not isinstance(opt, dict) or not set(OPTIMIZER_KEYS) <= set(opt)
                or not set(opt) <= set(OPTIMIZER_KEYS + OPTIMIZER_OPTIONAL)):
            fail("optimizer must be None or a dict with the keys step, m, v (and train_params)")
        if not _is_int(opt["step"]) or opt["step"] < 0:
            fail("optimizer step must be a whole number >= 0, got %r" % (opt["step"],))
        _check_array("optimizer m", opt["m"], pl.n)
        _check_array("optimizer v", opt["v"], pl.n)
        if "train_params" in opt:
            _check_array("optimizer train_params", opt["train_params"], pl.n)
    if state is not None:
        if not isinstance(state, np.ndarray) or state.dtype.kind != "f" or state.dtype.itemsize != 4:
            fail("state must be None or a float32 numpy array, got %s"
                 % getattr(state, "dtype", type(state).__name__))
        _state_shape(cfg, config, state.shape, fail)     # non-finite values allowed: see above
    for k, typ in (("tokenizer", dict), ("training", dict), ("metrics", list)):
        if not isinstance(ckpt[k], typ):
            fail("%s must be a %s, got %s" % (k, typ.__name__, type(ckpt[k]).__name__))
    for i, row in enumerate(ckpt["metrics"]):
        if not isinstance(row, dict):
            fail("metrics[%d] must be a dict, got %s" % (i, type(row).__name__))

    try:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "created_by": "shoestring %s" % __version__,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config": _to_json(config, "config"),
            "tokenizer": _to_json(ckpt["tokenizer"], "tokenizer"),
            "layout": [[name, list(shape)] for name, shape, _, _, _ in pl.entries],
            "training": _to_json(ckpt["training"], "training"),
            "metrics": _to_json(ckpt["metrics"], "metrics"),
            "params": _encode_tensor(ckpt["params"]),
            "optimizer": None if opt is None else dict({
                "step": int(opt["step"]), "m": _encode_tensor(opt["m"]), "v": _encode_tensor(opt["v"])},
                **({"train_params": _encode_tensor(opt["train_params"])} if "train_params" in opt
                   else {})),
            "state": None if state is None else _encode_tensor(state),
        }
    except RecursionError:
        fail("a value is nested too deeply or refers to itself")
    # One top-level key per line: `head` shows the header, config and training state readably.
    lines = ["%s: %s" % (json.dumps(k), json.dumps(v, allow_nan=False, ensure_ascii=True))
             for k, v in doc.items()]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("ascii")


def save_checkpoint(path, ckpt):
    """Validate `ckpt`, serialise it in memory, then write it to `path` atomically."""
    atomic_write_bytes(path, encode_checkpoint(ckpt), what="checkpoint")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

class _Reject(Exception):
    """Strict-JSON violation found while parsing (duplicate key, NaN/Infinity literal)."""


def _pairs_no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Reject("duplicate key %r" % k)
        out[k] = v
    return out


def _reject_constant(name):
    raise _Reject("non-standard literal %s" % name)


def _fmt_bytes(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return ("%d %s" % (n, unit)) if unit == "bytes" else ("%.1f %s" % (n, unit))
        n /= 1000.0


def _type_name(v):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


class _Reader:
    """One load: the path, the file's size (the budget every declared tensor must fit in), errors."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.size = 0
        self.claimed = 0          # base64 characters claimed so far by tensor shapes
        self.cfg = None           # the ModelConfig, once check_layout has read it

    def fail(self, what, hint=_DAMAGED):
        sep = " " if what.startswith(("is ", "has ", "cannot ")) else ": "
        raise CheckpointError("checkpoint %s%s%s (%s)" % (self.path, sep, what, hint))

    # -- the file -------------------------------------------------------------------------------
    def read_document(self):
        path = self.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise CheckpointError("checkpoint %s does not exist (check the path, or train one with "
                                  "`shoestring train`)" % path) from None
        except OSError as e:
            self.fail("cannot be read: %s" % (e.strerror or e), "check the path and its permissions")
        if stat.S_ISDIR(st.st_mode):
            self.fail("is a directory, not a checkpoint file", "pass the .json checkpoint file inside it")
        if not stat.S_ISREG(st.st_mode):
            self.fail("is not a regular file", "pass a checkpoint file written by `shoestring train`")
        if st.st_size > MAX_FILE_BYTES:
            self.fail("is %s, larger than the %s a checkpoint may be" % (
                _fmt_bytes(st.st_size), _fmt_bytes(MAX_FILE_BYTES)),
                "this is not a shoestring checkpoint, or it was damaged")
        try:
            with open(path, "rb") as f:
                head = f.read(256)
                # a big file must start as save_checkpoint writes one before it is read whole
                # (a 1.9 GB junk file used to take 3.9 GB of memory to be refused, #17)
                if st.st_size > _SNIFF_ABOVE and not _HEADER.match(head):
                    self.fail("is not a shoestring checkpoint: it is %s and does not start with "
                              "the checkpoint header" % _fmt_bytes(st.st_size),
                              "pass a checkpoint file written by `shoestring train`")
                data = head + f.read(st.st_size + 1 - len(head))   # sized by the file
        except OSError as e:
            self.fail("cannot be read: %s" % (e.strerror or e), "check the path and its permissions")
        if len(data) > MAX_FILE_BYTES:
            self.fail("is larger than the %s a checkpoint may be" % _fmt_bytes(MAX_FILE_BYTES),
                      "this is not a shoestring checkpoint, or it was damaged")
        self.size = len(data)
        if not data.strip():
            self.fail("is empty: truncated or not JSON", "the write was interrupted; use another checkpoint")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail("is truncated or not JSON (not UTF-8 text at byte %d)" % e.start,
                      "pass a checkpoint file written by `shoestring train`")
        del data
        try:
            doc = json.loads(text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            self.fail("is truncated or not JSON: %s (byte %d of %d)" % (e.msg, e.pos, len(text)),
                      "the write was interrupted or the file was damaged; use another checkpoint")
        except _Reject as e:
            self.fail("is not strict JSON: %s" % e)
        except RecursionError:
            self.fail("is not a checkpoint: its JSON is nested too deeply")
        except MemoryError:
            self.fail("is too large to load into memory", "free some memory")
        except ValueError as e:
            self.fail("is not valid JSON: %s" % e)
        if not isinstance(doc, dict):
            self.fail("is not a shoestring checkpoint: the JSON is %s, not an object with a "
                      "\"format\": \"%s\" header" % (_type_name(doc), FORMAT),
                      "pass a checkpoint file written by `shoestring train`")
        return doc

    # -- the header and the small sections ------------------------------------------------------
    def check_header(self, doc):
        if "format" not in doc:
            self.fail("is not a shoestring checkpoint: no \"format\" key",
                      "pass a checkpoint file written by `shoestring train`")
        if doc["format"] != FORMAT:
            self.fail("is not a shoestring checkpoint: \"format\" is %s, expected \"%s\""
                      % (json.dumps(doc["format"])[:80], FORMAT),
                      "pass a checkpoint file written by `shoestring train`")
        if "version" not in doc:
            self.fail("is missing key 'version'")
        ver = doc["version"]
        if not isinstance(ver, int) or isinstance(ver, bool):
            self.fail("'version' must be a whole number, got %s" % _type_name(ver))
        if ver not in READS:
            self.fail("has format version %d, but this shoestring (%s) reads only versions %s" % (
                ver, __version__, " and ".join(map(str, READS))),
                "upgrade shoestring" if ver > VERSION else "re-create the checkpoint with this shoestring")
        keys = DOC_KEYS if ver >= 2 else DOC_KEYS_V1
        for k in keys:
            if k not in doc:
                self.fail("is missing key '%s'" % k)
        for k in doc:
            if k not in keys:
                self.fail("has unknown key '%s'" % k[:80])
        for k in ("created_by", "created_at"):
            if not isinstance(doc[k], str):
                self.fail("'%s' must be a string, got %s" % (k, _type_name(doc[k])))
        for k, typ in (("config", dict), ("tokenizer", dict), ("layout", list), ("training", dict),
                       ("metrics", list)):
            if not isinstance(doc[k], typ):
                self.fail("'%s' must be %s, got %s" % (k, _type_name(typ()), _type_name(doc[k])))
        for i, row in enumerate(doc["metrics"]):
            if not isinstance(row, dict):
                self.fail("metrics[%d] must be an object, got %s" % (i, _type_name(row)))
        if "model" not in doc["config"]:
            self.fail("config is missing key 'model'")

    def check_layout(self, doc):
        """The ParamLayout config.model implies; the stored layout must equal it entry by entry."""
        cfg = self.cfg = _model_config(doc["config"]["model"], self.fail)
        stored = doc["layout"]
        for i, e in enumerate(stored):
            if (not isinstance(e, list) or len(e) != 2 or not isinstance(e[0], str)
                    or not isinstance(e[1], list)
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in e[1])):
                self.fail("layout[%d] must be [name, [dims...]], got %s" % (i, json.dumps(e)[:80]))
        # Each layer adds several tensors: bound L by the stored list before building the layout.
        if cfg.L > len(stored):
            self.fail("layout lists %d tensors but config.model has L=%d layers" % (len(stored), cfg.L))
        implied = layout(cfg)
        n = sum(math.prod(shape) for _, shape, _ in implied)
        if 4 * n > self.size:
            self.fail("config.model implies %d parameters (%s) but the whole file is %s"
                      % (n, _fmt_bytes(4 * n), _fmt_bytes(self.size)))
        pl = ParamLayout(cfg)
        want = [[name, list(shape)] for name, shape, _, _, _ in pl.entries]
        for i, (s, w) in enumerate(zip(stored, want)):
            if s != w:
                self.fail("layout does not match config.model: entry %d is '%s' %s in the file but "
                          "config.model implies '%s' %s"
                          % (i, s[0][:80].encode("unicode_escape").decode("ascii"), s[1], w[0], w[1]),
                          "the model config and the parameters disagree; " + _DAMAGED)
        if len(stored) != len(want):
            self.fail("layout does not match config.model: the file lists %d tensors, config.model "
                      "implies %d" % (len(stored), len(want)),
                      "the model config and the parameters disagree; " + _DAMAGED)
        return pl

    def plain(self, value, where):
        try:
            return _from_json(value)
        except ValueError as e:
            self.fail("%s holds a malformed value: %s" % (where, e))
        except RecursionError:
            self.fail("%s is nested too deeply" % where)

    # -- tensors --------------------------------------------------------------------------------
    def tensor(self, rec, name, shape):
        """Decode a TENSOR record that must have `shape`; sizes are checked before decoding."""
        if not isinstance(rec, dict):
            self.fail("tensor '%s' must be an object, got %s" % (name, _type_name(rec)))
        for k in TENSOR_KEYS:
            if k not in rec:
                self.fail("tensor '%s' is missing key '%s'" % (name, k))
        for k in rec:
            if k not in TENSOR_KEYS:
                self.fail("tensor '%s' has unknown key '%s'" % (name, k[:80]))
        if rec["dtype"] != "float32":
            self.fail("tensor '%s' has dtype %s; only \"float32\" is supported"
                      % (name, json.dumps(rec["dtype"])[:40]))
        if rec["byteorder"] != "little":
            self.fail("tensor '%s' has byteorder %s; only \"little\" is supported"
                      % (name, json.dumps(rec["byteorder"])[:40]))
        dims = rec["shape"]
        if (not isinstance(dims, list) or len(dims) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims)):
            self.fail("tensor '%s' has shape %s; expected a list of whole numbers"
                      % (name, json.dumps(dims)[:80]))
        count = math.prod(dims)
        nbytes = 4 * count
        b64len = 4 * ((nbytes + 2) // 3)
        # Refuse impossible claims before touching the data: every tensor's base64 text must fit
        # in the file, together with the tensors before it.
        self.claimed += b64len
        if self.claimed > self.size:
            self.fail("tensor '%s' declares shape %s = %d float32 values (%s), more than the whole "
                      "file of %s can hold" % (name, dims, count, _fmt_bytes(nbytes), _fmt_bytes(self.size)))
        if dims != list(shape):
            self.fail("tensor '%s' has shape %s but the layout needs %s" % (name, dims, list(shape)))
        crc = rec["crc32"]
        if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc <= 0xFFFFFFFF:
            self.fail("tensor '%s' has crc32 %s; expected a whole number in [0, 2**32)"
                      % (name, json.dumps(crc)[:40]))
        data = rec["data"]
        if not isinstance(data, str):
            self.fail("tensor '%s' data must be a base64 string, got %s" % (name, _type_name(data)))
        if len(data) != b64len:
            self.fail("tensor '%s' has %d base64 characters but shape %s needs %d"
                      % (name, len(data), dims, b64len))
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self.fail("tensor '%s' has invalid base64 data" % name)
        if len(raw) != nbytes:
            self.fail("tensor '%s' decodes to %d bytes but shape %s needs %d"
                      % (name, len(raw), dims, nbytes))
        if zlib.crc32(raw) & 0xFFFFFFFF != crc:
            self.fail("tensor '%s' is corrupted (checksum mismatch)" % name)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def finite(self, arr, name, hint):
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            self.fail("tensor '%s' holds %d non-finite values (NaN or infinity)" % (name, bad), hint)


def _load(path):
    """Decode and validate the checkpoint at `path`: the dict that save_checkpoint was given."""
    r = _Reader(path)
    doc = r.read_document()
    r.check_header(doc)
    pl = r.check_layout(doc)
    n = pl.n

    params = r.tensor(doc["params"], "params", (n,))
    r.finite(params, "params", "the run diverged before this save; use an earlier checkpoint")

    opt = doc["optimizer"]
    optimizer = None
    if opt is not None:
        if not isinstance(opt, dict):
            r.fail("'optimizer' must be null or an object, got %s" % _type_name(opt))
        for k in OPTIMIZER_KEYS:
            if k not in opt:
                r.fail("optimizer is missing key '%s'" % k)
        for k in opt:
            if k not in OPTIMIZER_KEYS + OPTIMIZER_OPTIONAL:
                r.fail("optimizer has unknown key '%s'" % k[:80])
        step = opt["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            r.fail("optimizer step must be a whole number >= 0, got %s" % json.dumps(step)[:40])
        arrays = {}
        for k in ("m", "v") + tuple(k for k in OPTIMIZER_OPTIONAL if k in opt):
            rec = opt[k]
            if isinstance(rec, dict) and isinstance(rec.get("shape"), list) and rec["shape"] != [n]:
                r.fail("optimizer tensor '%s' has shape %s but params has %d values"
                       % (k, json.dumps(rec["shape"])[:80], n))
            arrays[k] = r.tensor(rec, "optimizer." + k, (n,))
            r.finite(arrays[k], "optimizer." + k, _DAMAGED)
        if np.any(arrays["v"] < 0):
            r.fail("tensor 'optimizer.v' holds negative values (AdamW's v is a mean of squares)")
        optimizer = dict(arrays, step=step)

    config, training = r.plain(doc["config"], "config"), r.plain(doc["training"], "training")
    if doc["version"] >= 2:
        rec, state = doc["state"], None
        if rec is not None:
            dims = rec.get("shape") if isinstance(rec, dict) else None
            state = r.tensor(rec, "state", _state_shape(r.cfg, config, dims, r.fail))
    else:                        # version 1: a list of decimal floats under training.state
        state = training.pop("state", None)
        if state is not None:
            try:
                state = np.array(state, dtype=np.float32)
            except (TypeError, ValueError, OverflowError):
                r.fail("training.state is not a nested list of numbers")
            _state_shape(r.cfg, config, state.shape, r.fail)
    return {
        "config": config,
        "tokenizer": r.plain(doc["tokenizer"], "tokenizer"),
        "params": params,
        "optimizer": optimizer,
        "training": training,
        "metrics": r.plain(doc["metrics"], "metrics"),
        "state": state,
    }


# ---------------------------------------------------------------------------------------------
# The typed checkpoint the library reads
# ---------------------------------------------------------------------------------------------

class Checkpoint:
    """A checkpoint as training, inference and the commands use it, validated once, here.

    model: the trained ModelConfig; train: the run's TrainConfig (None in a file without
    config.train, such as a weights-only export); config: the config section as stored ({"model":
    ..., "train": ...}, what a resume merges flags into); tokenizer: a Tokenizer whose vocabulary
    is model.V; params: (n,) float32 in ParamLayout(model) order; optimizer: {"step", "m", "v"
    (, "train_params")} or None; training: the run state (data position, RNG, best_val ...);
    state: the carried recurrent state (L,B,X,H) float32, or None; metrics: the validation rows;
    path: the file it came from (or None). sections() is the dict save_checkpoint writes back.
    `sections` (what the loader decoded, or the int8 reader built) must be validated already.
    """

    def __init__(self, sections, path=None):
        from .config import from_saved
        from .tokenizer import Tokenizer

        where = "checkpoint %s" % path if path else "the checkpoint"
        self.path = path
        self.config = sections["config"]
        self.model = ModelConfig(**self.config["model"])
        self._tokenizer_dict = sections["tokenizer"]
        try:
            self.tokenizer = Tokenizer.from_dict(self._tokenizer_dict)
        except ShoestringError as exc:
            raise CheckpointError("%s: the tokenizer is unusable (%s) (use another checkpoint)"
                                  % (where, exc)) from None
        if self.tokenizer.vocab_size != self.model.V:
            raise CheckpointError(
                "%s: its tokenizer has %d tokens but its model has V=%d (the file was edited or "
                "mixes two runs; use another checkpoint)"
                % (where, self.tokenizer.vocab_size, self.model.V))
        self.train = from_saved(self.config)[0] if "train" in self.config else None
        self.params, self.optimizer = sections["params"], sections["optimizer"]
        self.training, self.metrics = sections["training"], sections["metrics"]
        self.state = sections.get("state")

    def sections(self):
        """The dict save_checkpoint takes (the tokenizer as stored)."""
        return {"config": self.config, "tokenizer": self._tokenizer_dict, "params": self.params,
                "optimizer": self.optimizer, "training": self.training, "metrics": self.metrics,
                "state": self.state}


def read_checkpoint(path):
    """The checkpoint at `path`, fully validated, as a Checkpoint (CheckpointError otherwise)."""
    return Checkpoint(_load(path), os.fspath(path))
