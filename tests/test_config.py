"""TrainConfig: typed settings, one check for Python and flags, and what a resume takes from where.

Resuming merges the checkpoint's config with exactly the flags given (argparse's own record of
them: every setting flag defaults to SUPPRESS), so an abbreviation argparse accepts
(`--epoch 4`) works as the full flag, and one it cannot resolve is refused.
"""
import dataclasses

import pytest

from shoestring import ModelConfig, TrainConfig, UsageError
from shoestring.checkpoint import read_checkpoint
from shoestring.cli import build_parser, main
from shoestring.commands import train_config
from shoestring.config import (DROPOUT_FEW_PASSES, DROPOUT_MANY_PASSES, FEW_PASSES_CHARS_PER_MINUTE,
                               FEW_PASSES_EPOCHS, FIXED, NEW_RUN_CAP, SESSION, SETTINGS,
                               VOCAB_CHARS_PER_ENTRY, VOCAB_MAX, VOCAB_MIN, parse_setting,
                               planned_dropout, planned_vocab, resume_config)
from shoestring.errors import ShoestringError

SMALL = ["--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "16",
         "--num-experts", "3", "--seq-length", "16", "--batch-size", "4", "--no-chat", "--quiet",
         "--sample-every", "0"]

# a valid value different from the one the fixture's run used, for every setting
OTHER = {"seq_length": "8", "batch_size": "2", "accumulate": "2", "epochs": "7",
         "max_steps": "9", "max_minutes": "1.5", "lr": "0.02", "wd": "0.5", "grad_clip": "0.5",
         "lr_schedule": "constant", "warmup_steps": "3", "eps_adamw": "1e-6", "seed": "5",
         "val_fraction": "0.2", "val_tokens": "1000", "eval_every": "4", "threads": "1",
         "encoding_errors": "replace", "dropout": "0.25", "embedding_dropout": "0.2",
         "weight_drop": "0.4", "ema": "0.99", "minutes": "3", "patience": "5"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from conftest import TINY_CHAT
    d = tmp_path_factory.mktemp("cfg")
    corpus = d / "tiny.txt"
    corpus.write_text(TINY_CHAT, encoding="utf-8")
    out = d / "run"
    assert main(["train", "--model-data", str(corpus), "--out-dir", str(out), "--max-steps", "2",
                 "--epochs", "3", "--lr", "0.004", "--threads", "2"] + SMALL) == 0
    return str(out / "last.json")


def parse(argv):
    return build_parser().parse_args(argv)


def test_every_setting_is_covered_here():
    assert set(OTHER) == set(SETTINGS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_resume_with_each_setting_given_and_not_given(ckpt, name):
    saved = read_checkpoint(ckpt).config
    train = saved["train"]
    flag = "--" + name.replace("_", "-")
    # not given: the checkpoint's value (a session setting: its default)
    cfg, _ = train_config(parse(["train", "--checkpoint", ckpt]))
    want = SETTINGS[name]["default"] if SETTINGS[name]["resume"] == SESSION else train[name]
    assert getattr(cfg, name) == want
    # given: the value given (a setting fixing the data position may only agree)
    value = parse_setting(name, OTHER[name])
    argv = ["train", "--checkpoint", ckpt, flag, OTHER[name]]
    if SETTINGS[name]["resume"] == FIXED:
        with pytest.raises(ShoestringError, match="contradicts the checkpoint") as exc:
            train_config(parse(argv))
        assert exc.value.settings == (name,)
        cfg, _ = train_config(parse(["train", "--checkpoint", ckpt, flag, str(train[name])]))
        assert getattr(cfg, name) == train[name]
    else:
        cfg, _ = train_config(parse(argv))
        assert getattr(cfg, name) == value
    # nothing else moved
    base, _ = train_config(parse(["train", "--checkpoint", ckpt]))
    for other in SETTINGS:
        if other != name:
            assert getattr(cfg, other) == getattr(base, other), other


def test_an_abbreviated_flag_works_as_the_full_flag(ckpt):
    """The bug of issue #10: `--epoch 4` was accepted and then silently ignored on resume."""
    cfg, _ = train_config(parse(["train", "--checkpoint", ckpt, "--epoch", "4"]))
    assert cfg.epochs == 4
    cfg, _ = train_config(parse(["train", "--checkpoint", ckpt, "--max-st", "11", "--lr-s",
                                 "constant"]))
    assert cfg.max_steps == 11 and cfg.lr_schedule == "constant" and cfg.epochs == 3


def test_an_ambiguous_abbreviation_is_refused(ckpt, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--checkpoint", ckpt, "--eps", "1e-6"])
    assert exc.value.code == 2
    assert "ambiguous option" in capsys.readouterr().err


def test_resume_contradicting_architecture_names_the_flag(ckpt, capsys):
    assert main(["train", "--checkpoint", ckpt, "--num-experts", "4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-experts 4 contradicts the checkpoint" in err[0], err


def test_python_and_flags_share_defaults_and_checks():
    cfg, ck = train_config(parse(["train"]))
    assert ck is None and cfg == TrainConfig()
    for name, spec in SETTINGS.items():
        assert getattr(TrainConfig(), name) == spec["default"]
    with pytest.raises(UsageError) as exc:
        TrainConfig(batch_size=0)
    assert exc.value.settings == ("batch_size",) and "--" not in str(exc.value)
    with pytest.raises(UsageError):
        TrainConfig(lr=float("nan"))
    with pytest.raises(UsageError):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(UsageError):
        TrainConfig(model=dict(H=4))
    with pytest.raises(SystemExit):
        parse(["train", "--batch-size", "0"])
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    cfg, _ = train_config(parse(["train", "--num-experts", "4", "--gru-hidden-size", "32"]))
    assert cfg.model == ModelConfig(V=None, H=32, X=4, K=4, cap=NEW_RUN_CAP)


def test_planned_dropout_follows_the_passes_the_plan_allows():
    """#11: the dropout and weight drop a run does not name are DROPOUT_MANY_PASSES where it
    will see its text many times and DROPOUT_FEW_PASSES where fewer; a value given is kept."""
    few, many, per_minute = DROPOUT_FEW_PASSES, DROPOUT_MANY_PASSES, FEW_PASSES_CHARS_PER_MINUTE
    assert few < many
    c = planned_dropout(TrainConfig(minutes=10), train_chars=10 * per_minute)
    assert (c.dropout, c.weight_drop) == (few, few)
    c = planned_dropout(TrainConfig(minutes=10), train_chars=10 * per_minute - 1)
    assert (c.dropout, c.weight_drop) == (many, many)
    assert planned_dropout(TrainConfig(minutes=5)).dropout == many          # the data unknown
    assert planned_dropout(TrainConfig(epochs=FEW_PASSES_EPOCHS - 1)).dropout == few
    assert planned_dropout(TrainConfig(epochs=FEW_PASSES_EPOCHS)).dropout == many
    assert planned_dropout(TrainConfig(max_steps=100), 10 ** 9).dropout == many
    c = planned_dropout(TrainConfig(minutes=1, dropout=0.05), 10 ** 9)
    assert (c.dropout, c.weight_drop) == (0.05, few)
    c = TrainConfig(dropout=0.0, weight_drop=0.0)
    assert planned_dropout(c, 10 ** 9) is c


def test_a_run_records_the_dropout_it_chose(ckpt, tmp_path):
    """The fixture's run (3 epochs) chose the few-passes value; a 5 KB corpus in a one-minute
    budget (far below FEW_PASSES_CHARS_PER_MINUTE) chooses the many-passes one. Both go into
    the checkpoint, so a resume keeps them."""
    train = read_checkpoint(ckpt).config["train"]
    assert train["dropout"] == train["weight_drop"] == DROPOUT_FEW_PASSES
    from conftest import TINY_CHAT
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_CHAT, encoding="utf-8")
    assert len(TINY_CHAT) < FEW_PASSES_CHARS_PER_MINUTE
    assert main(["train", "--model-data", str(corpus), "--out-dir", str(tmp_path / "run"),
                 "--minutes", "1", "--max-steps", "2", "--threads", "1"] + SMALL) == 0
    train = read_checkpoint(str(tmp_path / "run" / "last.json")).config["train"]
    assert train["dropout"] == train["weight_drop"] == DROPOUT_MANY_PASSES
    cfg, _ = train_config(parse(["train", "--checkpoint", str(tmp_path / "run" / "last.json")]))
    assert cfg.dropout == cfg.weight_drop == DROPOUT_MANY_PASSES


def test_planned_vocab_follows_the_training_text():
    """#11: a run that names no vocabulary gets one entry per VOCAB_CHARS_PER_ENTRY bytes of
    training text, rounded to 50, within [VOCAB_MIN, VOCAB_MAX]; a vocabulary given is kept."""
    per = VOCAB_CHARS_PER_ENTRY
    assert TrainConfig().model.V is None and ModelConfig().V == VOCAB_MIN
    assert planned_vocab(TrainConfig(), 0).model.V == VOCAB_MIN
    assert planned_vocab(TrainConfig(), 235_000).model.V == VOCAB_MIN    # the bundled corpus
    assert planned_vocab(TrainConfig(), 1200 * per).model.V == 1200
    assert planned_vocab(TrainConfig(), 1210 * per).model.V == 1200      # rounded to 50
    assert planned_vocab(TrainConfig(), 900_000).model.V == VOCAB_MAX == 2000   # 1 MB, 90/10
    assert planned_vocab(TrainConfig(), 10 ** 9).model.V == VOCAB_MAX
    c = planned_vocab(TrainConfig(model=ModelConfig(V=None, H=32)), 1200 * per)
    assert c.model == ModelConfig(V=1200, H=32)
    c = TrainConfig(model=ModelConfig(V=VOCAB_MIN))
    assert planned_vocab(c, 10 ** 9) is c
    from shoestring.params import ParamLayout
    with pytest.raises(ShoestringError, match="V is None"):
        ParamLayout(TrainConfig().model)


def test_a_run_asks_the_tokenizer_for_the_planned_vocab(tmp_path, monkeypatch):
    """train() plans V from the model data's bytes (less the held-out fraction, or all of them
    with validation data) before it trains the tokenizer, and records the size asked for."""
    import shoestring.config as config
    from conftest import TINY_CHAT
    monkeypatch.setattr(config, "VOCAB_MIN", 260)          # so that a tiny corpus plans above it
    monkeypatch.setattr(config, "VOCAB_CHARS_PER_ENTRY", 4)
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_CHAT, encoding="utf-8")
    size = corpus.stat().st_size
    small = [a for a in SMALL if a not in ("--bpe-vocab-size", "300")]
    for extra, kept in (([], 0.9), (["--validation-data", str(corpus)], 1.0)):
        out = tmp_path / ("run%d" % len(extra))
        assert main(["train", "--model-data", str(corpus), "--out-dir", str(out), "--max-steps",
                     "1", "--threads", "1"] + extra + small) == 0
        train = read_checkpoint(str(out / "last.json")).config["train"]
        assert train["bpe_vocab_size"] == round(size * kept / 4 / 50) * 50 < VOCAB_MAX


def test_resume_config_from_python(ckpt):
    saved = read_checkpoint(ckpt).config
    cfg = resume_config(saved)
    assert cfg.epochs == 3 and cfg.lr == 0.004 and cfg.threads is None
    assert resume_config(saved, {"lr": 0.1}).lr == 0.1
    # the vocabulary asked for (300) agrees even though the tokenizer ended smaller
    assert resume_config(saved, given_model={"V": 300}).model.V == saved["model"]["V"]
    with pytest.raises(ShoestringError, match="contradicts"):
        resume_config(saved, given_model={"H": 32})
    old = dict(saved, train=dict(saved["train"], max_response=260, temperature=0.8))
    assert resume_config(old) == cfg                 # version-1 keys that are not settings
    bad = dict(saved, train=dict(saved["train"], lr=-1))
    with pytest.raises(ShoestringError, match="config.train.lr"):
        resume_config(bad)
    assert dataclasses.replace(cfg, lr=0.5).lr == 0.5


def test_read_checkpoint_is_typed_and_validated_once(ckpt, tmp_path):
    import json

    from shoestring.checkpoint import Checkpoint, read_checkpoint
    from shoestring.errors import CheckpointError
    from shoestring.tokenizer import Tokenizer

    ck = read_checkpoint(ckpt)
    assert isinstance(ck, Checkpoint) and ck.path == ckpt
    assert isinstance(ck.model, ModelConfig) and isinstance(ck.train, TrainConfig)
    assert isinstance(ck.tokenizer, Tokenizer) and ck.tokenizer.vocab_size == ck.model.V
    assert ck.train == resume_config(ck.config) and ck.train.lr == 0.004
    assert ck.params.dtype.name == "float32" and ck.optimizer["step"] == ck.training["step"] == 2
    assert ck.state.shape == (ck.model.L, ck.train.batch_size, ck.model.X, ck.model.H)
    assert set(ck.sections()) == {"config", "tokenizer", "params", "optimizer", "training",
                                  "metrics", "state"} and not hasattr(ck, "get")
    doc = json.load(open(ckpt))
    doc["tokenizer"]["merges"] = doc["tokenizer"]["merges"][:-3]          # V no longer matches
    doc["tokenizer"]["vocab_size"] -= 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="tokenizer has .* tokens but its model has V="):
        read_checkpoint(str(bad))
