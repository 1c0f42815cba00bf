"""shoestring.train from Python (issue #18): TrainConfig, callbacks, gradient hooks, stop, resume.

Tiny model on the tiny chat corpus so that each run takes a fraction of a second.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import shoestring
from shoestring import ModelConfig, TrainConfig, TrainingError, UsageError
from shoestring.checkpoint import read_checkpoint
from shoestring.config import NEW_RUN_CAP
from shoestring.cli import main

SMALL_MODEL = ModelConfig(V=300, C=16, H=24, L=2, X=3, K=2, cap=NEW_RUN_CAP)   # as the CLI
SMALL = TrainConfig(model=SMALL_MODEL, seq_length=16, batch_size=4, max_steps=8, eval_every=4,
                    epochs=50, lr=0.005, threads=2)
HERE = os.path.dirname(os.path.abspath(__file__))


def run(tmp_path, name, corpus, config=SMALL, **kw):
    return shoestring.train(config, model_data=[corpus], out_dir=str(tmp_path / name), quiet=True,
                            **kw)


def same_run_state(a, b):
    """Two checkpoints hold the same bits: parameters, optimiser, data position, RNG, state."""
    a, b = read_checkpoint(a), read_checkpoint(b)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.optimizer["m"], b.optimizer["m"])
    np.testing.assert_array_equal(a.optimizer["v"], b.optimizer["v"])
    assert a.state.tobytes() == b.state.tobytes()
    for key in ("step", "epoch", "window", "offset", "rng", "state_resets"):
        assert a.training[key] == b.training[key], key


class Recorder:
    def __init__(self):
        self.events = []

    def on_train_start(self, run):
        self.events.append(("start", run.step))

    def on_gradients(self, run, step):
        self.events.append(("grads", step))

    def on_step_end(self, run, step, metrics):
        assert set(metrics) >= {"train_loss", "lr", "grad_norm", "tokens_per_s"}
        self.events.append(("step", step))

    def on_eval(self, run, metrics):
        self.events.append(("eval", metrics["step"]))

    def on_checkpoint(self, run, path):
        self.events.append(("ckpt", os.path.basename(path)))

    def on_train_end(self, run):
        self.events.append(("end", run.step))


def test_events_fire_in_order_and_the_expected_number_of_times(tmp_path, tiny_corpus):
    rec, evals = Recorder(), []
    result = run(tmp_path, "r", tiny_corpus, callbacks=[rec, {"on_eval": lambda r, m: evals.append(m)}])
    ev = rec.events
    assert ev[0] == ("start", 0) and ev[-1] == ("end", 8)
    assert [s for e, s in ev if e == "grads"] == list(range(1, 9))
    assert [s for e, s in ev if e == "step"] == list(range(1, 9))
    assert [s for e, s in ev if e == "eval"] == [4, 8]
    for s in range(1, 9):                     # the gradient hook comes before its step's end
        assert ev.index(("grads", s)) < ev.index(("step", s))
    for s in (4, 8):                          # validation after the step, checkpoints after it
        i = ev.index(("eval", s))
        assert ev[i - 1] == ("step", s) and ev[i + 1][0] == "ckpt"
    assert [p for e, p in ev if e == "ckpt"].count("last.json") == 2
    assert 1 <= [p for e, p in ev if e == "ckpt"].count("best.json") <= 2
    assert [m["step"] for m in evals] == [4, 8] and result.metrics == evals
    assert result.steps == 8 and result.tokens == 8 * 4 * 16 and not result.stopped
    assert result.last_checkpoint == str(tmp_path / "r" / "last.json")
    assert result.best_checkpoint == str(tmp_path / "r" / "best.json")


def test_zeroing_a_gradient_freezes_that_tensor(tmp_path, tiny_corpus):
    seen = {}

    def start(run):
        seen["WE"] = run.params["WE"].copy()
        seen["Wo"] = run.params["Wo"].copy()

    def freeze(run, step):
        assert run.grads["WE"].shape == seen["WE"].shape and run.grads["WE"].flags.writeable
        run.grads["WE"][...] = 0.0

    result = run(tmp_path, "f", tiny_corpus,
                 callbacks=[{"on_train_start": start, "on_gradients": freeze}])
    views = shoestring.load(result.last_checkpoint).views
    assert np.array_equal(views["WE"], seen["WE"])           # WE is not weight-decayed
    assert not np.array_equal(views["Wo"], seen["Wo"])       # the rest trained


def test_callbacks_that_do_not_touch_gradients_change_no_bit(tmp_path, tiny_corpus):
    """With a clip that engages every step, so that the hooks' clipped-gradient path is used."""
    cfg = SMALL.replace(grad_clip=0.05)
    plain = run(tmp_path, "plain", tiny_corpus, cfg)
    seen = []

    def look(run, step):
        seen.append(float(np.abs(run.grads["Wo"]).max()))
        acts = run.activations()
        assert acts["embedding"].shape == (4, 16, 16) and acts["l1"].shape == (4, 16, 24)
        assert not acts["l0"].flags.writeable and not run.params["Wo"].flags.writeable
        with pytest.raises(ValueError):
            run.params["Wo"][0, 0] = 1.0

    hooked = run(tmp_path, "hooked", tiny_corpus, cfg, callbacks=[Recorder(), {"on_gradients": look}])
    assert len(seen) == 8 and all(g > 0 for g in seen)
    same_run_state(plain.last_checkpoint, hooked.last_checkpoint)
    assert [m["grad_norm"] for m in plain.metrics] == [m["grad_norm"] for m in hooked.metrics]


def test_stop_saves_and_a_resume_matches_the_uninterrupted_run(tmp_path, tiny_corpus):
    straight = run(tmp_path, "straight", tiny_corpus)

    def stop_at_3(run, step, metrics):
        if step == 3:
            run.stop()

    ended = []
    stopped = run(tmp_path, "stopped", tiny_corpus,
                  callbacks=[{"on_step_end": stop_at_3, "on_train_end": lambda r: ended.append(r.step)}])
    assert stopped.stopped and stopped.steps == 3 and ended == [3]
    assert [m["step"] for m in stopped.metrics] == [3]             # validated at the stop
    assert read_checkpoint(stopped.last_checkpoint).training["step"] == 3
    resumed = shoestring.train(checkpoint=stopped.last_checkpoint, model_data=[tiny_corpus],
                               quiet=True)
    assert resumed.steps == 8 and resumed.out_dir == stopped.out_dir
    same_run_state(straight.last_checkpoint, resumed.last_checkpoint)


def test_cli_and_python_write_identical_checkpoints(tmp_path, tiny_corpus):
    py = run(tmp_path, "py", tiny_corpus)
    rc = main(["train", "--model-data", tiny_corpus, "--out-dir", str(tmp_path / "cli"),
               "--bpe-vocab-size", "300", "--embedding-dim", "16", "--gru-hidden-size", "24",
               "--num-experts", "3", "--active-experts", "2", "--seq-length", "16",
               "--batch-size", "4", "--max-steps", "8", "--eval-every", "4", "--epochs", "50",
               "--lr", "0.005", "--threads", "2", "--no-chat", "--sample-every", "3"])
    assert rc == 0
    same_run_state(py.last_checkpoint, str(tmp_path / "cli" / "last.json"))
    a, b = read_checkpoint(py.last_checkpoint), read_checkpoint(str(tmp_path / "cli" / "last.json"))
    assert a.config == b.config and a.sections()["tokenizer"] == b.sections()["tokenizer"]


def test_a_callback_that_raises_stops_the_run_naming_it(tmp_path, tiny_corpus):
    class Boom:
        def on_step_end(self, run, step, metrics):
            if step == 6:
                raise ValueError("boom")

    with pytest.raises(TrainingError, match=r"callback Boom\.on_step_end raised ValueError: boom") as exc:
        run(tmp_path, "b", tiny_corpus, callbacks=[Boom()])
    assert isinstance(exc.value.__cause__, ValueError)
    ck = read_checkpoint(str(tmp_path / "b" / "last.json"))     # the last good one: step 4
    assert ck.training["step"] == 4 and np.isfinite(ck.params).all()


def test_callback_and_config_mistakes_are_clear(tmp_path, tiny_corpus):
    with pytest.raises(UsageError, match="unknown callback event 'on_epoch'"):
        run(tmp_path, "u", tiny_corpus, callbacks=[{"on_epoch": print}])
    with pytest.raises(UsageError, match="has none of the methods"):
        run(tmp_path, "u", tiny_corpus, callbacks=[object()])
    with pytest.raises(UsageError, match="batch_size"):
        TrainConfig(batch_size=-1)
    assert shoestring.TrainConfig is TrainConfig and shoestring.ModelConfig is ModelConfig


def test_readme_examples_run(tmp_path):
    """The README's "Training from Python" examples, run as written (on the bundled corpus)."""
    text = open(os.path.join(HERE, "..", "README.md"), encoding="utf-8").read()
    section = text[text.index("## Training from Python"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    for i, code in enumerate(blocks):
        p = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, "README example %d: %s" % (i + 1, p.stderr[-2000:])
        if i == 1:
            assert p.stdout.startswith("True "), p.stdout       # the embedding stayed frozen
