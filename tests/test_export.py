"""shoestring.export: the weights-only checkpoint chats exactly like the full one; the
safetensors file and the HuggingFace tokenizer.json load in the real `safetensors` and
`tokenizers` packages (test extras; those tests skip when the package is absent), the tokenizer
giving shoestring's ids on a Unicode-heavy text."""
import json
import os
import random
import struct

import numpy as np
import pytest

import shoestring
from shoestring.checkpoint import read_checkpoint
from shoestring.errors import ShoestringError
from shoestring.export import (export, hf_tokenizer_dict, safetensors_bytes,
                               summary)
from shoestring.params import ModelConfig, ParamLayout
from shoestring.tokenizer import Tokenizer
from tinyrun import train_tiny_run

UNICODE_PIECES = [
    "Ça va? Übergrößenträger naïve café — «quotes» ‘single’ don’t we'll o'er",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "日本語のテキスト、漢字とかなカナ。中文句子，标点符号！한국어 문장입니다.",
    "عربي: مرحبا بالعالم ١٢٣٤ ٥٦", "हिन्दी पाठ में मात्राएँ और संयुक्ताक्षर क्ष त्र ज्ञ",
    "ไทย ภาษาไทยไม่มีช่องว่าง", "Ελληνικά: Καλημέρα κόσμε ΑΒΓ αβγ",
    "emoji 😀👍🏽 👨‍👩‍👧 🇫🇷 ❤️ ✓ ★", "math ∑∫√∞ ≠ ≤ ≥ x² y³ ½ ¼ Ⅻ ⅷ",
    "tabs\tand\u00a0nbsp\u2003em\u3000ideo\u2028ls\x1cfs\x1f us\x85nel\x0bvt\x0cff",
    "under_score __init__ snake_case 3.14159 1,000,000 +-*/ <tag attr='v'>",
    "ﬁ ligature ǅ titlecase ʰ modifier ゙ combining ̈ alone", "Zalgo t̶̡̛e̷̢x̸t̵ a\u0301\u0302\u0303",
    "[USER] hi there [EOS]\n[BOT] hello [EOS]\n\n[USER] again  [EOS]\n[BOT][PAD][UNK] [USER[EOS]]",
    "  leading and trailing   \n\n\n  lines \r\n windows\r\n", "\U0001D538\U0001D539 \U000E0041 \U0010FFFD",
]


def unicode_text(n=300, seed=1):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append(rng.choice(UNICODE_PIECES))
        out.append(rng.choice([" ", "  ", "\n", "\n\n", "", "\t", " \n "]))
    return "".join(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("export"))


def test_weights_only_checkpoint_chats_like_the_full_one(run, tmp_path):
    full = os.path.join(run, "last.json")
    written = export(full, str(tmp_path / "small"))
    path = written[0][0]
    assert path == str(tmp_path / "small.json") and os.path.getsize(path) == written[0][1]
    ck, orig = read_checkpoint(path), read_checkpoint(full)
    assert ck.optimizer is None and ck.training["weights_only"] and "weights_only" not in orig.training
    assert np.array_equal(ck.params, orig.params)
    assert ck.config == orig.config and ck.sections()["tokenizer"] == orig.sections()["tokenizer"]
    assert ck.metrics == orig.metrics
    assert ck.training["step"] == orig.training["step"] == 6
    assert "rng" not in ck.training and ck.state is None and orig.state is not None
    # the optimiser's m and v are two thirds of the tensors: the export is about a third
    assert os.path.getsize(path) < 0.4 * os.path.getsize(full)
    a, b = shoestring.load(full), shoestring.load(path)
    for seed in (1, 2):
        ca, cb = a.chat(seed=seed, max_response=30), b.chat(seed=seed, max_response=30)
        for msg in ("what is 3 plus 4", "and 5 plus 6", "naïve ☕"):
            assert ca.send(msg) == cb.send(msg)
    assert a.generate("[USER] hi", seed=3, max_tokens=20) == b.generate("[USER] hi", seed=3,
                                                                          max_tokens=20)
    assert any("small.json" in line and "% of last.json" in line for line in summary(full, written))


def test_weights_only_of_weights_only_is_the_same(run, tmp_path):
    first = export(os.path.join(run, "best.json"), str(tmp_path / "a.json"))[0][0]
    second = export(first, str(tmp_path / "b.json"))[0][0]
    x, y = read_checkpoint(first), read_checkpoint(second)
    assert np.array_equal(x.params, y.params)
    assert {k: v for k, v in x.training.items() if k != "exported_from"} == \
           {k: v for k, v in y.training.items() if k != "exported_from"}


def _read_safetensors_by_hand(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and data[8:9] == b"{"
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == len(body)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))       # back to back, no gaps
    return header, body


def test_safetensors_layout_by_hand(run, tmp_path):
    written = export(os.path.join(run, "best.json"), str(tmp_path / "m"), fmt="safetensors")
    st, tj = (p for p, _ in written)
    assert st.endswith("m.safetensors") and tj.endswith("m.tokenizer.json")
    header, body = _read_safetensors_by_hand(st)
    ck = read_checkpoint(os.path.join(run, "best.json"))
    cfg = ModelConfig(**ck.config["model"])
    views = ParamLayout(cfg).views(ck.params)
    assert set(header) - {"__metadata__"} == set(views)
    for name, v in views.items():
        h = header[name]
        assert h["dtype"] == "F32" and h["shape"] == list(v.shape)
        a, b = h["data_offsets"]
        assert np.array_equal(np.frombuffer(body[a:b], "<f4").reshape(v.shape), v)
    meta = header["__metadata__"]
    assert json.loads(meta["config"]) == ck.config["model"]
    assert Tokenizer.from_dict(json.loads(meta["tokenizer"])) == ck.tokenizer


def test_safetensors_loads_in_the_safetensors_package(run, tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open
    path = export(os.path.join(run, "best.json"), str(tmp_path / "m.safetensors"),
                  fmt="safetensors")[0][0]
    assert path == str(tmp_path / "m.safetensors")
    tensors = st_numpy.load_file(path)
    ck = read_checkpoint(os.path.join(run, "best.json"))
    views = ParamLayout(ModelConfig(**ck.config["model"])).views(ck.params)
    assert set(tensors) == set(views)
    for name, v in views.items():
        assert tensors[name].dtype == np.float32 and np.array_equal(tensors[name], v)
    with safe_open(path, framework="numpy") as f:
        assert json.loads(f.metadata()["config"])["V"] == ck.config["model"]["V"]


def test_safetensors_writer_other_dtypes_for_the_int8_export():
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = [("q", np.arange(-5, 6, dtype=np.int8).reshape(1, 11)),
               ("scale", np.array([0.5, 2.0], np.float32)), ("u", np.arange(7, dtype=np.uint8)),
               ("big", np.arange(3, dtype=">i4")), ("h", np.ones((2, 3), np.float16))]
    data = safetensors_bytes(tensors, {"note": "x"})
    got = st_numpy.load(data)
    for name, arr in tensors:
        assert np.array_equal(got[name], arr) and got[name].shape == arr.shape
    with pytest.raises(ShoestringError, match="used twice"):
        safetensors_bytes([("a", np.zeros(1, np.float32))] * 2)
    with pytest.raises(ShoestringError, match="no safetensors name"):
        safetensors_bytes([("c", np.zeros(1, np.complex64))])


def _same_ids(tok, hf, text):
    ours = tok.encode(text)
    theirs = hf.encode(text).ids
    assert ours == theirs, "first difference at %d" % next(
        i for i, (a, b) in enumerate(zip(ours + [None], theirs + [None])) if a != b)
    assert hf.decode(theirs) == tok.decode(ours)


def test_tokenizer_json_gives_shoestring_ids_on_unicode_text(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    text = unicode_text()
    tok = Tokenizer.train(texts=[text], vocab_size=1500)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(hf_tokenizer_dict(tok), ensure_ascii=False), encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == tok.vocab_size
    _same_ids(tok, hf, text)
    _same_ids(tok, hf, unicode_text(200, seed=7))
    assert hf.token_to_id("[EOS]") == tok.special_id("[EOS]")
    # characters never seen in training, and random code points from every plane
    rng = random.Random(3)
    for _ in range(300):
        s = "".join(chr(rng.choice([rng.randint(0, 0x2FF), rng.randint(0, 0xD7FF),
                                    rng.randint(0xE000, 0x10FFFF)])) for _ in range(rng.randint(0, 24)))
        _same_ids(tok, hf, s)
    # the blank line before a turn: two "\n" pieces in shoestring, never one "\n\n"
    _same_ids(tok, hf, "[BOT] ok [EOS]\n\n[USER]  x  \n\n\n[EOS]")


def test_tokenizer_json_of_an_exported_checkpoint(run, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tj = export(os.path.join(run, "best.json"), str(tmp_path / "m"), fmt="safetensors")[1][0]
    hf = tokenizers.Tokenizer.from_file(tj)
    tok = read_checkpoint(os.path.join(run, "best.json")).tokenizer
    _same_ids(tok, hf, "[USER] what is 3 plus 4 [EOS]\n[BOT] 7 [EOS]\n\n" + unicode_text(50))


def test_tokenizer_with_two_tokens_of_the_same_bytes_is_refused():
    off = len(Tokenizer.SPECIALS)
    a, b, c = (off + ord(x) for x in "abc")
    n = off + 256
    tok = Tokenizer([(a, b), (b, c), (n, c), (a, n + 1)])   # "ab"+"c" and "a"+"bc": both "abc"
    with pytest.raises(ShoestringError, match="two tokens with the same bytes"):
        hf_tokenizer_dict(tok)


def test_export_errors(run, tmp_path):
    with pytest.raises(ShoestringError, match="unknown export format"):
        export(os.path.join(run, "best.json"), str(tmp_path / "x"), fmt="onnx")
    with pytest.raises(ShoestringError, match="is a folder"):
        export(os.path.join(run, "best.json"), str(tmp_path))
    with pytest.raises(ShoestringError, match="does not exist"):
        export(str(tmp_path / "missing.json"), str(tmp_path / "x"))


def test_a_weights_only_export_cannot_resume_training(run, tmp_path, capsys):
    from shoestring.cli import main
    from tinyrun import CORPUS, TRAIN_FLAGS
    small = export(os.path.join(run, "last.json"), str(tmp_path / "small.json"))[0][0]
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    rc = main(["train", "--checkpoint", small, "--model-data", str(corpus), "--max-steps", "8"]
              + TRAIN_FLAGS)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "weights-only export" in err[0] and "last.json" in err[0]
