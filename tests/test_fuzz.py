"""Fuzzing the two untrusted inputs: tokenizer data and checkpoint files.

Contract under test: whatever the bytes, Tokenizer.from_dict / decode raise only TokenizerError,
and read_checkpoint / inference.load raise only CheckpointError (the CLI turns those into one
line); a load that succeeds returns finite float32 arrays of the declared sizes. Bounded:
max_examples ~200 per property, no deadline (CI machines are slow and shared).
"""
import json
import math
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shoestring.checkpoint import read_checkpoint, save_checkpoint
from shoestring.errors import CheckpointError, ShoestringError, TokenizerError
from shoestring.params import ModelConfig, ParamLayout
from shoestring.tokenizer import Tokenizer

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5),
    max_leaves=25)


# ---- tokenizer ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    text = "the cat sat on the mat [EOS] caf\u00e9 na\u00efve \U0001F600 12345 " * 20
    return Tokenizer.train(texts=[text], vocab_size=300)


@FUZZ
@given(text=st.text(max_size=200), allow_special=st.booleans())
def test_tokenizer_round_trips_any_text(tok, text, allow_special):
    ids = tok.encode(text, allow_special=allow_special)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    if not allow_special:
        assert all(i >= len(tok.special_tokens) for i in ids)


@FUZZ
@given(ids=st.lists(st.integers(-2 ** 40, 2 ** 40) | st.booleans() | st.floats() | st.text(max_size=3),
                    max_size=20))
def test_tokenizer_decode_rejects_bad_ids_cleanly(tok, ids):
    try:
        out = tok.decode(ids)
    except TokenizerError:
        return
    assert isinstance(out, str)


def _mutated_tokenizer_dicts(tok):
    good = tok.to_dict()
    keys = sorted(good)
    return st.one_of(
        json_values,
        # one field replaced by arbitrary JSON
        st.tuples(st.sampled_from(keys), json_values).map(lambda kv: dict(good, **{kv[0]: kv[1]})),
        # merges with arbitrary integer pairs, or arbitrary shapes
        st.lists(st.lists(st.integers(-5, 400) | st.integers(-2 ** 70, 2 ** 70), max_size=3),
                 max_size=40).map(lambda m: dict(good, merges=m, vocab_size=None)),
        # a key removed
        st.sampled_from(keys).map(lambda k: {kk: v for kk, v in good.items() if kk != k}),
        # special tokens of any kind
        st.lists(st.text(max_size=8) | json_scalars, max_size=6).map(
            lambda s: dict(good, special_tokens=s)),
    )


@FUZZ
@given(data=st.data())
def test_tokenizer_from_dict_accepts_or_raises_tokenizer_error(tok, data):
    d = data.draw(_mutated_tokenizer_dicts(tok))
    if isinstance(d, dict) and d.get("vocab_size", 0) is None:
        d = {k: v for k, v in d.items() if k != "vocab_size"}
    try:
        t = Tokenizer.from_dict(d)
    except TokenizerError:
        return
    # accepted: it must be a working tokenizer
    s = "hello [EOS] world \u00e9"
    assert t.decode(t.encode(s)) == s
    assert Tokenizer.from_dict(t.to_dict()) == t


# ---- checkpoints -------------------------------------------------------------------------------
CFG = ModelConfig(V=261 + 5 + 3, C=4, H=4, L=1, X=2, K=1)


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    tok = Tokenizer.train(texts=["aaa bbb aaa bbb ccc " * 10], vocab_size=CFG.V)
    assert tok.vocab_size == CFG.V
    lay = ParamLayout(CFG)
    rng = np.random.default_rng(0)
    ck = {"config": {"model": CFG.to_dict(), "train": {"seq_length": 8, "batch_size": 2}},
          "tokenizer": tok.to_dict(), "params": lay.init(0),
          "optimizer": {"step": 3, "m": rng.standard_normal(lay.n).astype(np.float32),
                        "v": rng.random(lay.n).astype(np.float32)},
          "training": {"step": 3, "note": [1, 2.5, None]}, "metrics": [{"step": 3, "loss": 1.5}]}
    path = str(tmp_path_factory.mktemp("fuzz") / "good.json")
    save_checkpoint(path, ck)
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz-scratch") / "ck.json")


def _load(path, data):
    with open(path, "wb") as f:
        f.write(data)
    try:
        ck = read_checkpoint(path)
    except CheckpointError as e:
        assert "\n" not in str(e)
        return None
    n = ParamLayout(ModelConfig(**ck.config["model"])).n
    assert ck.params.dtype == np.float32 and ck.params.shape == (n,)
    assert np.isfinite(ck.params).all()
    # what `shoestring chat` does next: only CheckpointError (or a ShoestringError) may escape
    from shoestring import inference as sample
    try:
        sample.load(path)
    except ShoestringError:
        pass
    return ck


def test_the_unmutated_checkpoint_loads(good_bytes, scratch):
    assert _load(scratch, good_bytes) is not None


edits = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "byte"]),
                           st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                 min_size=1, max_size=4)


@FUZZ
@given(ops=edits)
def test_mutated_checkpoint_bytes_load_or_raise_checkpoint_error(good_bytes, scratch, ops):
    data = bytearray(good_bytes)
    for op, where, value in ops:
        i = int(where * len(data)) if data else 0
        if op == "flip" and data:
            data[i] ^= 1 << (value % 8)
        elif op == "byte" and data:
            data[i] = value
        elif op == "insert":
            data[i:i] = bytes([value]) * (1 + value % 7)
        elif op == "delete" and data:
            del data[i:i + 1 + value % 7]
        elif op == "truncate":
            del data[i:]
    _load(scratch, bytes(data))


@FUZZ
@given(doc=json_values)
def test_arbitrary_json_is_refused_cleanly(scratch, doc):
    _load(scratch, json.dumps(doc).encode())


def _paths(value, prefix=()):
    """Every path into a parsed JSON document (dict keys and list indices), tensors' data skipped."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "data":
                yield from _paths(v, prefix + (k,))
    elif isinstance(value, list) and len(value) < 50:
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_checkpoint_with_any_field_replaced_loads_or_raises(good_bytes, scratch, data):
    doc = json.loads(good_bytes)
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    new = data.draw(json_values | st.integers(-2 ** 64, 2 ** 64) |
                    st.sampled_from([0, -1, 2 ** 31, 2 ** 63, 10 ** 12, [], {}, "", None]))
    target = doc
    for k in path[:-1]:
        target = target[k]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = new
    try:
        text = json.dumps(doc, allow_nan=False)
    except ValueError:
        assume(False)
    ck = _load(scratch, text.encode())
    if ck is not None:
        assert math.isfinite(float(np.sum(ck.params, dtype=np.float64)))


def test_loading_runs_no_code(tmp_path, good_bytes):
    """A checkpoint is JSON only: nothing in it is ever imported, evaluated or unpickled."""
    doc = json.loads(good_bytes)
    marker = tmp_path / "pwned"
    payload = "__import__('os').system('touch %s')" % marker
    doc["training"]["evil"] = {"__reduce__": payload, "$dict": {"py/object": payload}}
    doc["metrics"].append({"py/reduce": [payload]})
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(doc))
    ck = read_checkpoint(str(path))
    assert not marker.exists()
    assert ck.training["evil"]["__reduce__"] == payload        # plain data, untouched
