"""shoestring.inspector: `shoestring inspect`'s description of a checkpoint (and --json)."""
import json
import os

import pytest

from shoestring.checkpoint import read_checkpoint, save_checkpoint
from shoestring.errors import CheckpointError
from shoestring.export import export
from shoestring.inspector import describe, format_text, to_json
from shoestring.params import ModelConfig, ParamLayout
from shoestring.tokenizer import Tokenizer
from tinyrun import train_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("inspect"), steps=8, eval_every=3)


def test_describe_a_full_checkpoint(run):
    path = os.path.join(run, "last.json")
    info = json.loads(to_json(describe(path)))          # --json output parses
    ck = read_checkpoint(path)
    m = ck.config["model"]
    assert info["model"] == m
    assert info["parameters"] == ParamLayout(ModelConfig(**m)).n
    assert info["tokenizer"]["special_tokens"] == ["[USER]", "[BOT]", "[EOS]", "[PAD]", "[UNK]"]
    assert info["tokenizer"]["vocab_size"] == m["V"] == ck.tokenizer.vocab_size
    tr = info["training"]
    assert tr["steps"] == 8 and tr["tokens_seen"] == 8 * 4 * 16
    assert tr["evaluations"] == len(ck.metrics) == 3            # steps 3, 6 and the last
    assert 0 < tr["epochs"] < 10
    best = min(ck.metrics, key=lambda r: r["val_loss"])
    assert info["best"]["bits_per_char"] == best["bits_per_char"]
    assert info["best"]["step"] == best["step"]
    assert info["last"]["step"] == 8
    assert info["data"]["train_fingerprint"] == ck.training["train_fingerprint"]
    assert info["data"]["model_data"][0].endswith("corpus.txt")
    assert info["created_by"].startswith("shoestring ") and info["created_at"][:2] == "20"
    assert not info["weights_only"] and info["can_resume"]
    parts = {p["part"]: p["bytes"] for p in info["parts"]}
    assert sum(parts.values()) == os.path.getsize(path) == info["bytes"]
    assert parts["optimizer"] == pytest.approx(2 * parts["params"], rel=0.01)
    assert parts["header"] < 2000
    assert tr["state_shape"] == [2, 4, 3, 24]                     # L, B, X, H of the tiny run
    assert 0 < parts["state"] - 4 * 2 * 4 * 3 * 24 * 4 / 3 < 200     # base64 float32 + record
    assert "carried state   2 x 4 x 3 x 24 (L x B x X x H, float32)" in format_text(info)


def test_describe_a_version_1_file():
    path = os.path.join(os.path.dirname(__file__), "data", "checkpoint_v1.json")
    info = describe(path)
    assert info["version"] == 1 and info["can_resume"]
    assert info["training"]["state_shape"] == [2, 2, 2, 4]
    parts = {p["part"]: p["bytes"] for p in info["parts"]}
    assert sum(parts.values()) == os.path.getsize(path) and parts["training.state"] > 0
    assert "carried state   2 x 2 x 2 x 4" in format_text(info)


def test_describe_an_export_and_the_text_form(run, tmp_path):
    small = export(os.path.join(run, "best.json"), str(tmp_path / "small.json"))[0][0]
    info = describe(small)
    assert info["weights_only"] and not info["can_resume"]
    assert not {"optimizer", "state"} & {p["part"] for p in info["parts"]}
    assert info["training"]["state_shape"] is None
    assert info["data"]["exported_from"] == "best.json"
    text = format_text(info)
    assert "weights only" in text and "exported from   best.json" in text
    for word in ("parameters", "special tokens  [USER] [BOT] [EOS] [PAD] [UNK]", "tokens seen",
                 "best validation", "fingerprint", "written by", "params"):
        assert word in text
    paths = (info["file"], info["data"]["model_data"][0])
    assert all(len(line) <= 80 for line in text.split("\n") if not line.endswith(paths))


def test_describe_a_minimal_checkpoint(tmp_path):
    tok = Tokenizer.train(texts=["hello world"], vocab_size=270)
    cfg = ModelConfig(V=tok.vocab_size, C=8, H=8, L=1, X=2, K=1)
    path = str(tmp_path / "m.json")
    save_checkpoint(path, {"config": {"model": cfg.to_dict()}, "tokenizer": tok.to_dict(),
                           "params": ParamLayout(cfg).init(1), "optimizer": None,
                           "training": {}, "metrics": []})
    info = describe(path)
    assert info["best"] is None and info["training"]["tokens_seen"] is None
    assert "top-1 of 2 experts" in format_text(info)


def test_describe_refuses_a_bad_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"format": "something else"}')
    with pytest.raises(CheckpointError, match="not a shoestring checkpoint"):
        describe(str(p))
