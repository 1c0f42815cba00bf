"""Checkpoints (MODEL.md §5): exact round trip, atomic writes, and a precise CheckpointError for
every kind of bad file -- never another exception type.

Most tests work on the format layer, checkpoint._load (the sections of a Checkpoint, before the
tokenizer is built), so that their tokenizer section can be any JSON; read_checkpoint, the one
public reader, is that plus the typed Checkpoint (tested at the end and in test_config.py)."""
import base64
import errno
import json
import math
import os
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from shoestring import checkpoint as ck
from shoestring.checkpoint import FORMAT, VERSION, _load as load_sections, read_checkpoint, \
    save_checkpoint
from shoestring.dataset import atomic_write_bytes, atomic_write_text
from shoestring.errors import CheckpointError, ShoestringError
from shoestring.params import ModelConfig, ParamLayout

CFG = ModelConfig(V=20, C=8, H=8, L=1, X=2, K=2)
CFG_PROJ = ModelConfig(V=17, C=5, H=7, L=2, X=3, K=2)     # C != H: Wp and bp present


def make_ckpt(cfg=CFG, seed=0, optimizer=True):
    pl = ParamLayout(cfg)
    params = pl.init(seed)
    rng = np.random.default_rng(seed + 1)
    rng.standard_normal(7)                         # advance: the state is not the seed's
    opt = state = None
    if optimizer:
        m = rng.standard_normal(pl.n).astype(np.float32) * np.float32(1e-3)
        v = np.square(rng.standard_normal(pl.n).astype(np.float32)) * np.float32(1e-6)
        m[0], v[1] = np.float32(-0.0), np.float32(1e-45)   # signed zero and a subnormal survive
        opt = {"step": 1234, "m": m, "v": v}
        state = rng.standard_normal((cfg.L, 16, cfg.X, cfg.H)).astype(np.float32)   # (L,B,X,H)
        state[0, 0, 0, :3] = np.nan, -np.inf, -0.0    # the guard resets these: kept as they are
    return {
        "config": {"model": cfg.to_dict(),
                   "train": {"lr": 1e-3, "batch_size": 16, "lr_schedule": "cosine", "clip": None}},
        "tokenizer": {"kind": "bpe", "merges": [[1, 2, 20], [20, 3, 21]],
                      "specials": ["[USER]", "[BOT]", "[EOS]", "[PAD]", "[UNK]"], "text": "é ☃ \n\t"},
        "params": params,
        "optimizer": opt,
        "training": {"epoch": 3, "position": 98765, "rng": rng.bit_generator.state,
                     "best_val_loss": float("inf"), "worst": float("-inf"), "resets": 0,
                     "tiny": 5e-324, "big": 2 ** 200, "neg": -(2 ** 70)},
        "metrics": [{"step": 1, "loss": 3.5, "val": None}, {"step": 2, "loss": 3.25, "ok": True}],
        "state": state,
    }


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def assert_same(loaded, saved):
    assert set(loaded) == set(saved) | {"state"}
    if saved.get("state") is None:
        assert loaded["state"] is None
    else:
        assert loaded["state"].dtype == np.float32 and loaded["state"].shape == saved["state"].shape
        np.testing.assert_array_equal(bits(loaded["state"]), bits(saved["state"]))
    for k in ("config", "tokenizer", "training", "metrics"):
        assert loaded[k] == saved[k], k
    assert loaded["params"].dtype == np.float32 and loaded["params"].shape == saved["params"].shape
    np.testing.assert_array_equal(bits(loaded["params"]), bits(saved["params"]))
    if saved["optimizer"] is None:
        assert loaded["optimizer"] is None
    else:
        assert loaded["optimizer"]["step"] == saved["optimizer"]["step"]
        for k in ("m", "v"):
            assert loaded["optimizer"][k].dtype == np.float32
            np.testing.assert_array_equal(bits(loaded["optimizer"][k]), bits(saved["optimizer"][k]))


@pytest.fixture
def saved(tmp_path):
    """(path, ckpt) of a freshly saved checkpoint."""
    path = str(tmp_path / "ckpt.json")
    c = make_ckpt()
    save_checkpoint(path, c)
    return path, c


def read_doc(path):
    with open(path, encoding="ascii") as f:
        return json.load(f)


def write_doc(path, doc):
    with open(path, "w", encoding="ascii") as f:
        json.dump(doc, f)


def expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as ei:
        load_sections(path)
    msg = str(ei.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [CFG, CFG_PROJ], ids=["C=H", "C!=H"])
@pytest.mark.parametrize("optimizer", [True, False], ids=["adamw", "no-optimizer"])
def test_round_trip_is_exact(tmp_path, cfg, optimizer):
    path = str(tmp_path / "c.json")
    c = make_ckpt(cfg, seed=3, optimizer=optimizer)
    save_checkpoint(path, c)
    out = load_sections(path)
    assert_same(out, c)
    assert math.isinf(out["training"]["best_val_loss"]) and out["training"]["best_val_loss"] > 0
    assert out["training"]["big"] == 2 ** 200
    # Loaded arrays are ordinary writable float32 arrays the trainer can update in place.
    assert out["params"].flags.writeable and out["params"].flags.c_contiguous
    # A second save of the loaded checkpoint writes the same tensors.
    path2 = str(tmp_path / "c2.json")
    save_checkpoint(path2, out)
    assert_same(load_sections(path2), c)


def test_rng_state_round_trips_and_continues_the_stream(saved):
    path, c = saved
    out = load_sections(path)
    a = np.random.default_rng()
    a.bit_generator.state = c["training"]["rng"]
    b = np.random.default_rng()
    b.bit_generator.state = out["training"]["rng"]
    assert out["training"]["rng"]["state"]["state"] > 2 ** 64       # a real 128-bit PCG64 state
    np.testing.assert_array_equal(a.integers(0, 2 ** 62, 100), b.integers(0, 2 ** 62, 100))


def test_nan_round_trips(tmp_path):
    path = str(tmp_path / "c.json")
    c = make_ckpt()
    c["training"]["last_val_loss"] = float("nan")
    save_checkpoint(path, c)
    assert math.isnan(load_sections(path)["training"]["last_val_loss"])


def test_file_is_plain_strict_json(saved):
    path, c = saved

    def no_constants(name):
        raise AssertionError("non-standard JSON literal %s" % name)

    with open(path, "rb") as f:
        raw = f.read()
    raw.decode("ascii")                                   # pure ASCII, readable anywhere
    doc = json.loads(raw, parse_constant=no_constants)
    assert doc["format"] == FORMAT and doc["version"] == VERSION
    assert doc["created_by"].startswith("shoestring ")
    assert doc["layout"] == [[n, list(s)] for n, s, _, _, _ in ParamLayout(CFG).entries]
    t = doc["params"]
    assert (t["dtype"], t["byteorder"], t["shape"]) == ("float32", "little", [ParamLayout(CFG).n])
    raw_params = base64.b64decode(t["data"])
    assert zlib.crc32(raw_params) == t["crc32"]
    np.testing.assert_array_equal(np.frombuffer(raw_params, "<f4"), c["params"])
    assert doc["training"]["best_val_loss"] == {"$float": "inf"}


def test_big_endian_input_is_written_little_endian(tmp_path):
    c = make_ckpt(optimizer=False)
    native = c["params"]
    c["params"] = native.astype(">f4")
    path = str(tmp_path / "c.json")
    save_checkpoint(path, c)
    out = load_sections(path)
    assert out["params"].dtype == np.float32 and out["params"].dtype.isnative
    np.testing.assert_array_equal(bits(out["params"]), bits(native))
    assert base64.b64decode(read_doc(path)["params"]["data"]) == native.astype("<f4").tobytes()


JSONABLE = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8)
    | st.integers(min_value=-(2 ** 130), max_value=2 ** 130)
    | st.floats(allow_nan=False),                       # +-inf included; NaN != NaN, tested above
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["$float", "$dict", "a", "", "x y"]) | st.text(max_size=4),
                      children, max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None)
@given(value=JSONABLE)
def test_any_jsonable_training_state_round_trips(tmp_path_factory, value):
    path = str(tmp_path_factory.mktemp("h") / "c.json")
    c = make_ckpt(optimizer=False)
    c["training"] = {"value": value, "$float": "inf", "$dict": {"$float": "nan"}}
    c["metrics"] = [{"$float": value}]
    save_checkpoint(path, c)
    out = load_sections(path)
    assert out["training"] == c["training"]
    assert out["metrics"] == c["metrics"]


# ---------------------------------------------------------------------------------------------
# Bad files: one precise CheckpointError each
# ---------------------------------------------------------------------------------------------

def test_truncated_file_at_every_tenth(saved, tmp_path):
    path, _ = saved
    with open(path, "rb") as f:
        raw = f.read()
    for tenth in range(10):
        cut = str(tmp_path / ("cut%d.json" % tenth))
        with open(cut, "wb") as f:
            f.write(raw[:len(raw) * tenth // 10])
        msg = expect_error(cut, cut)
        assert "truncated or not JSON" in msg or "empty" in msg, msg


@pytest.mark.parametrize("tensor", ["params", "optimizer.m", "optimizer.v", "state"])
def test_flipped_base64_character_is_a_checksum_mismatch(saved, tensor):
    path, _ = saved
    doc = read_doc(path)
    rec = doc[tensor] if "." not in tensor else doc["optimizer"][tensor.split(".")[1]]
    data = rec["data"]
    i = len(data) // 2                                   # a middle character: base64 stays valid
    rec["data"] = data[:i] + ("B" if data[i] != "B" else "C") + data[i + 1:]
    base64.b64decode(rec["data"], validate=True)
    write_doc(path, doc)
    expect_error(path, "tensor '%s' is corrupted (checksum mismatch)" % tensor)


def test_flipped_raw_byte_in_file_is_detected(saved):
    path, _ = saved
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    start = raw.index(b'"data": "') + len(b'"data": "')
    raw[start + 40] = ord("A") if raw[start + 40] != ord("A") else ord("z")
    with open(path, "wb") as f:
        f.write(raw)
    expect_error(path, "checksum mismatch", "tensor 'params'")


def test_invalid_base64_is_named(saved):
    path, _ = saved
    doc = read_doc(path)
    d = doc["params"]["data"]
    doc["params"]["data"] = d[:10] + "!" + d[11:]
    write_doc(path, doc)
    expect_error(path, "tensor 'params' has invalid base64 data")


def test_base64_of_wrong_length_is_named(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["params"]["data"] = doc["params"]["data"][:-8]
    write_doc(path, doc)
    expect_error(path, "tensor 'params' has", "base64 characters")


@pytest.mark.parametrize("version,hint", [(VERSION + 1, "upgrade shoestring"), (0, "re-create")])
def test_unsupported_version(saved, version, hint):
    path, _ = saved
    doc = read_doc(path)
    doc["version"] = version
    write_doc(path, doc)
    expect_error(path, "version %d" % version, "reads only versions 1 and %d" % VERSION, hint)


def test_version_of_wrong_type(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["version"] = "1"
    write_doc(path, doc)
    expect_error(path, "'version' must be a whole number")


@pytest.mark.parametrize("fmt", ["something-else", None, 7])
def test_wrong_format(saved, fmt):
    path, _ = saved
    doc = read_doc(path)
    doc["format"] = fmt
    write_doc(path, doc)
    expect_error(path, "not a shoestring checkpoint")


def test_missing_format_and_other_json(tmp_path):
    p = str(tmp_path / "other.json")
    write_doc(p, {"hello": "world"})
    expect_error(p, "not a shoestring checkpoint", "no \"format\" key")
    write_doc(p, [1, 2, 3])
    expect_error(p, "not a shoestring checkpoint", "a list")


@pytest.mark.parametrize("key", [k for k in ck.DOC_KEYS if k != "format"])
def test_missing_top_level_key_is_named(saved, key):
    path, _ = saved
    doc = read_doc(path)
    del doc[key]
    write_doc(path, doc)
    expect_error(path, "missing key '%s'" % key)


@pytest.mark.parametrize("where,key", [("model", "K"), ("tensor", "crc32"), ("optimizer", "step"),
                                       ("config", "model")])
def test_missing_nested_key_is_named(saved, where, key):
    path, _ = saved
    doc = read_doc(path)
    obj = {"model": doc["config"].get("model"), "tensor": doc["params"],
           "optimizer": doc["optimizer"], "config": doc["config"]}[where]
    del obj[key]
    write_doc(path, doc)
    expect_error(path, "missing key '%s'" % key)


def test_unknown_key_is_refused(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["surprise"] = 1
    write_doc(path, doc)
    expect_error(path, "unknown key 'surprise'")


@pytest.mark.parametrize("key,value,fragment", [
    ("config", [], "'config' must be an object"),
    ("metrics", {}, "'metrics' must be a list"),
    ("metrics", [1], "metrics[0] must be an object"),
    ("training", None, "'training' must be an object"),
    ("layout", [["WE", "20x8"]], "layout[0] must be [name, [dims...]]"),
    ("optimizer", [], "'optimizer' must be null or an object"),
    ("params", "AAAA", "tensor 'params' must be an object"),
])
def test_wrong_types_are_named(saved, key, value, fragment):
    path, _ = saved
    doc = read_doc(path)
    doc[key] = value
    write_doc(path, doc)
    expect_error(path, fragment)


@pytest.mark.parametrize("field,value,fragment", [
    ("dtype", "float64", "only \"float32\""),
    ("byteorder", "big", "only \"little\""),
    ("crc32", -1, "crc32"),
    ("crc32", "123", "crc32"),
    ("shape", [-5], "expected a list of whole numbers"),
    ("shape", [781], "has shape [781] but the layout needs [782]"),
    ("data", 5, "base64 string"),
])
def test_bad_tensor_fields(saved, field, value, fragment):
    path, _ = saved
    doc = read_doc(path)
    assert doc["params"]["shape"] == [782]
    doc["params"][field] = value
    write_doc(path, doc)
    expect_error(path, "tensor 'params'", fragment)


def test_layout_mismatch_when_model_config_changed(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["config"]["model"]["H"] = 9
    write_doc(path, doc)
    expect_error(path, "layout does not match config.model", "l0.Wz")


def test_layout_mismatch_when_layout_edited(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["layout"][2][0] = "l0.Wzz"
    write_doc(path, doc)
    expect_error(path, "layout does not match config.model", "entry 2", "'l0.Wzz'")
    doc["layout"] = doc["layout"][:-1]
    doc["layout"][2][0] = "l0.Wcx"
    write_doc(path, doc)
    expect_error(path, "layout does not match config.model", "lists 10 tensors")


@pytest.mark.parametrize("key,value,fragment", [
    ("K", 5, "config.model is invalid"),               # K > X: ModelConfig's own check
    ("V", 0, "config.model is invalid"),
    ("V", "20", "config.model.V must be a whole number"),
    ("L", True, "config.model.L must be a whole number"),
    ("eps_rmsnorm", -1.0, "eps_rmsnorm must be a finite number > 0"),
    ("extra", 1, "config.model has unknown key 'extra'"),
])
def test_invalid_model_config_is_a_checkpoint_error(saved, key, value, fragment):
    path, _ = saved
    doc = read_doc(path)
    doc["config"]["model"][key] = value
    write_doc(path, doc)
    msg = expect_error(path, fragment)
    assert msg.startswith("checkpoint ")


def test_huge_model_config_is_refused_without_building_it(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["config"]["model"]["L"] = 10 ** 9                  # would loop a billion times
    write_doc(path, doc)
    expect_error(path, "L=1000000000")
    doc["config"]["model"].update(L=1, V=10 ** 12)         # would need 4 TB
    write_doc(path, doc)
    expect_error(path, "config.model implies", "TB")


@pytest.mark.parametrize("tensor", ["params", "optimizer.m"])
def test_shape_claiming_terabytes_is_refused_before_decoding(saved, monkeypatch, tensor):
    path, _ = saved
    doc = read_doc(path)
    rec = doc["params"] if tensor == "params" else doc["optimizer"]["m"]
    rec["shape"] = [10 ** 12]
    write_doc(path, doc)

    def no_decoding(*a, **k):
        raise AssertionError("base64 decoded despite an impossible shape")

    if tensor == "params":
        monkeypatch.setattr(ck.base64, "b64decode", no_decoding)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as ei:
            load_sections(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "[1000000000000]" in str(ei.value) and tensor.split(".")[-1] in str(ei.value)
    if tensor == "params":
        assert "4.0 TB), more than the whole file" in str(ei.value)
    assert peak < 50 * 2 ** 20, peak


def test_optimizer_arrays_of_wrong_length(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["optimizer"]["v"] = ck._encode_tensor(np.zeros(100, np.float32))
    write_doc(path, doc)
    expect_error(path, "optimizer tensor 'v' has shape [100] but params has 782 values")


def test_non_finite_params_are_refused(saved):
    path, _ = saved
    doc = read_doc(path)
    p = load_sections(path)["params"]
    p[[3, 5]] = [np.nan, np.inf]
    doc["params"] = ck._encode_tensor(p)                  # valid checksum: only finiteness is wrong
    write_doc(path, doc)
    expect_error(path, "tensor 'params' holds 2 non-finite values")


def test_negative_adamw_v_is_refused(saved):
    path, _ = saved
    doc = read_doc(path)
    v = np.ones(782, np.float32)
    v[7] = -1
    doc["optimizer"]["v"] = ck._encode_tensor(v)
    write_doc(path, doc)
    expect_error(path, "optimizer.v", "negative")


def test_bad_optimizer_step(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["optimizer"]["step"] = -3
    write_doc(path, doc)
    expect_error(path, "optimizer step must be a whole number >= 0")


def test_malformed_float_tag(saved):
    path, _ = saved
    doc = read_doc(path)
    doc["training"]["best_val_loss"] = {"$float": "huge"}
    write_doc(path, doc)
    expect_error(path, "training holds a malformed value")


@pytest.mark.parametrize("text,fragment", [
    ('{"format": "shoestring-checkpoint", "format": "x"}', "duplicate key"),
    ('{"format": "shoestring-checkpoint", "version": NaN}', "non-standard literal NaN"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ("   \n", "empty"),
    ('{"a": 1} trailing', "truncated or not JSON"),
])
def test_not_strict_json(tmp_path, text, fragment):
    p = str(tmp_path / "x.json")
    with open(p, "w") as f:
        f.write(text)
    expect_error(p, fragment)


@pytest.mark.parametrize("seed", range(5))
def test_garbage_bytes(tmp_path, seed):
    p = str(tmp_path / "garbage.json")
    with open(p, "wb") as f:
        f.write(np.random.default_rng(seed).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expect_error(p, "truncated or not JSON")


def test_directory_and_missing_file(tmp_path):
    expect_error(str(tmp_path), "is a directory")
    missing = str(tmp_path / "nope.json")
    expect_error(missing, "does not exist", "nope.json")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(missing)


def test_file_over_two_gib_is_refused_without_reading(tmp_path):
    p = str(tmp_path / "huge.json")
    with open(p, "wb") as f:
        f.truncate(ck.MAX_FILE_BYTES + 1)                   # sparse: no disk space used
    expect_error(p, "larger than the", "GB")


def test_unreadable_file(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root reads everything")
    path = str(tmp_path / "c.json")
    save_checkpoint(path, make_ckpt())
    os.chmod(path, 0)
    try:
        expect_error(path, "cannot be read")
    finally:
        os.chmod(path, 0o644)


# ---------------------------------------------------------------------------------------------
# Saving: validation before anything is written, and atomic replacement
# ---------------------------------------------------------------------------------------------

def tmp_files(dirname):
    return [n for n in os.listdir(dirname) if n.endswith(".tmp")]


@pytest.mark.parametrize("mutate,fragment", [
    (lambda c: c["params"].__setitem__(4, np.nan), "non-finite"),
    (lambda c: c.__setitem__("params", c["params"][:-1]), "needs (782,)"),
    (lambda c: c.__setitem__("params", c["params"].astype(np.float64)), "must be float32"),
    (lambda c: c["optimizer"].__setitem__("m", c["optimizer"]["m"][:5]), "optimizer m"),
    (lambda c: c["optimizer"].__setitem__("step", -1), "step"),
    (lambda c: c["training"].__setitem__("arr", np.zeros(3)), "training.arr is a ndarray"),
    (lambda c: c["training"].__setitem__("d", {1: 2}), "not a string"),
    (lambda c: c["config"]["model"].pop("K"), "missing key 'K'"),
    (lambda c: c.pop("metrics"), "missing key 'metrics'"),
    (lambda c: c.__setitem__("extra", 1), "unknown key 'extra'"),
    (lambda c: c.__setitem__("state", c["state"][:, :3]), "state tensor has shape [1, 3, 2, 8]"),
    (lambda c: c.__setitem__("state", c["state"].astype(np.float64)), "float32 numpy array"),
    (lambda c: c.__setitem__("state", c["state"].tolist()), "float32 numpy array"),
])
def test_save_refuses_bad_input_and_keeps_previous_file(saved, mutate, fragment):
    path, c = saved
    before = open(path, "rb").read()
    bad = make_ckpt()
    mutate(bad)
    with pytest.raises(CheckpointError, match=None) as ei:
        save_checkpoint(path, bad)
    assert fragment in str(ei.value), str(ei.value)
    assert open(path, "rb").read() == before
    assert tmp_files(os.path.dirname(path)) == []


def test_numpy_scalars_are_saved_as_plain_numbers(tmp_path):
    c = make_ckpt()
    c["training"].update(a=np.float32(0.5), b=np.int64(7), c=np.bool_(True), d=np.float64(-np.inf))
    c["optimizer"]["step"] = np.int64(9)
    path = str(tmp_path / "c.json")
    save_checkpoint(path, c)
    out = load_sections(path)
    assert out["training"]["a"] == 0.5 and type(out["training"]["a"]) is float
    assert out["training"]["b"] == 7 and type(out["training"]["b"]) is int
    assert out["training"]["c"] is True and out["training"]["d"] == -math.inf
    assert out["optimizer"]["step"] == 9


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_interrupted_write_keeps_previous_checkpoint(saved, monkeypatch, failing):
    path, c = saved
    before = open(path, "rb").read()
    newer = make_ckpt(seed=9)
    real_write = os.write

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def half_then_full(fd, data):
        if len(data) > 100:
            real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing, half_then_full if failing == "write" else disk_full)
    with pytest.raises(CheckpointError) as ei:
        save_checkpoint(path, newer)
    monkeypatch.undo()
    msg = str(ei.value)
    assert msg.startswith("could not write checkpoint %s: " % path), msg
    assert os.strerror(errno.ENOSPC) in msg and "free some disk space or choose another folder" in msg
    assert open(path, "rb").read() == before
    assert_same(load_sections(path), c)
    assert tmp_files(os.path.dirname(path)) == []


def test_ctrl_c_during_write_leaves_no_temp_file(saved, monkeypatch):
    path, c = saved

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_ckpt(seed=5))
    monkeypatch.undo()
    assert_same(load_sections(path), c)
    assert tmp_files(os.path.dirname(path)) == []


def test_save_replaces_previous_checkpoint(saved):
    path, _ = saved
    newer = make_ckpt(seed=11)
    save_checkpoint(path, newer)
    assert_same(load_sections(path), newer)
    assert tmp_files(os.path.dirname(path)) == []


def test_save_into_missing_directory(tmp_path):
    path = str(tmp_path / "no" / "such" / "dir" / "c.json")
    with pytest.raises(CheckpointError, match="could not write checkpoint .*another folder"):
        save_checkpoint(path, make_ckpt())


def test_atomic_write_text_and_bytes(tmp_path, monkeypatch):
    p = str(tmp_path / "config.json")
    atomic_write_text(p, '{"é": "☃"}\n')
    with open(p, encoding="utf-8") as f:
        assert f.read() == '{"é": "☃"}\n'
    atomic_write_bytes(p, b"\x00\x01binary")
    with open(p, "rb") as f:
        assert f.read() == b"\x00\x01binary"
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(CheckpointError, match="could not write file .*config.json: I/O error"):
        atomic_write_text(p, "new")
    monkeypatch.undo()
    with open(p, "rb") as f:
        assert f.read() == b"\x00\x01binary"
    assert tmp_files(str(tmp_path)) == []
    with pytest.raises(CheckpointError, match="UTF-8"):
        atomic_write_text(p, "\ud800")


def test_every_error_is_a_shoestring_error():
    assert issubclass(CheckpointError, ShoestringError)


# ---------------------------------------------------------------------------------------------
# The carried recurrent state (format version 2) and version 1 files
# ---------------------------------------------------------------------------------------------

V1_FILE = os.path.join(os.path.dirname(__file__), "data", "checkpoint_v1.json")   # see README there


def test_state_is_a_tensor_with_its_checksum(saved):
    path, c = saved
    doc = read_doc(path)
    t = doc["state"]
    assert (t["dtype"], t["shape"]) == ("float32", [1, 16, 2, 8]) and "state" not in doc["training"]
    raw = base64.b64decode(t["data"])
    assert zlib.crc32(raw) == t["crc32"]
    np.testing.assert_array_equal(bits(np.frombuffer(raw, "<f4")), bits(c["state"].reshape(-1)))


@pytest.mark.parametrize("shape,fragment", [([1, 15, 2, 8], "batch_size need [1, 16, 2, 8]"),
                                            ([1, 16, 2], "expected [L, B, X, H] = [1, B, 2, 8]"),
                                            ([2, 16, 2, 8], "need [1, 16, 2, 8]")])
def test_state_of_the_wrong_shape_is_named(saved, shape, fragment):
    path, _ = saved
    doc = read_doc(path)
    doc["state"]["shape"] = shape
    write_doc(path, doc)
    expect_error(path, "state tensor has shape", fragment)


def test_version_1_file_loads_with_its_state_as_a_tensor(tmp_path):
    doc = read_doc(V1_FILE)
    assert doc["version"] == 1 and "state" not in doc
    out = load_sections(V1_FILE)
    assert "state" not in out["training"]
    want = np.array(doc["training"]["state"], dtype=np.float64)
    assert out["state"].dtype == np.float32 and out["state"].shape == (2, 2, 2, 4)    # L,B,X,H
    np.testing.assert_array_equal(out["state"].astype(np.float64), want)   # exact: float32 values
    typed = read_checkpoint(V1_FILE)
    assert typed.state.shape == (2, 2, 2, 4) and typed.optimizer["step"] == 3
    # saved again it is a version 2 file holding the same tensors
    path = str(tmp_path / "v2.json")
    save_checkpoint(path, out)
    assert read_doc(path)["version"] == VERSION
    assert_same(load_sections(path), out)


def test_version_1_state_that_is_not_numbers_is_named(tmp_path):
    doc = read_doc(V1_FILE)
    doc["training"]["state"][0][0] = "x"
    path = str(tmp_path / "v1.json")
    write_doc(path, doc)
    expect_error(path, "training.state is not a nested list of numbers")
    doc["training"]["state"] = [[[[0.0]]]]
    write_doc(path, doc)
    expect_error(path, "state tensor has shape [1, 1, 1, 1]")


def test_version_1_file_resumes_exactly_like_its_version_2_copy(tmp_path):
    """Resuming a version 1 file trains on exactly as resuming the same run saved as version 2."""
    import shutil
    from shoestring.cli import main
    from tinyrun import CORPUS

    corpus = str(tmp_path / "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(CORPUS)
    ends = []
    for name in ("v1", "v2"):
        os.makedirs(str(tmp_path / name))
        path = str(tmp_path / name / "last.json")
        if name == "v1":
            shutil.copyfile(V1_FILE, path)
        else:
            save_checkpoint(path, read_checkpoint(V1_FILE))       # a Checkpoint saves as it is
        assert main(["train", "--checkpoint", path, "--model-data", corpus, "--max-steps", "5",
                     "--no-chat", "--quiet"]) == 0
        ends.append(read_checkpoint(path))
    a, b = ends
    assert a.training["step"] == b.training["step"] == 5
    assert a.training["rng"] == b.training["rng"]
    for get in (lambda c: c.params, lambda c: c.optimizer["m"], lambda c: c.optimizer["v"],
                lambda c: c.state):
        assert get(a).tobytes() == get(b).tobytes()
    assert a.state.tobytes() != read_checkpoint(V1_FILE).state.tobytes()   # it trained on
