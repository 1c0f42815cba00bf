"""Faults during training: SIGKILL at random moments, a full disk, Ctrl-C, a diverging run.

The promise: whatever happens, `last.json` is either absent (nothing saved yet) or a complete,
loadable checkpoint with finite parameters that never goes backwards, and `--checkpoint` resumes
from it.
"""
import errno
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from reliability_cases import TINY_CHAT
from shoestring import dataset as dataset_mod
from shoestring import trainer as train_mod
from shoestring.checkpoint import read_checkpoint
from shoestring.cli import main

ARCH = ["--bpe-vocab-size", "280", "--embedding-dim", "8", "--gru-hidden-size", "8",
        "--num-experts", "2", "--seq-length", "8", "--batch-size", "2", "--threads", "1"]
QUIET = ["--no-chat", "--quiet", "--sample-every", "0"]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text(TINY_CHAT, encoding="utf-8")
    return str(p)


def shoestring_cmd(argv):
    return [sys.executable, "-m", "shoestring"] + argv


def step_of(path):
    return read_checkpoint(path).training["step"]


_STRETCH = []


def startup_stretch(folder):
    """How many times slower than here (x86, 2 cores: about 0.45 s) this machine imports the
    package, at least 1: tests that stop a run after a delay scale their delays by it, so that
    under qemu, where the imports alone take seconds, their signals still land in every phase.
    Timed once per session, from `folder` (the installed package, not the checkout)."""
    if not _STRETCH:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import shoestring.cli, shoestring.trainer"],
                       cwd=str(folder), check=True, timeout=300)
        _STRETCH.append(max(1.0, (time.monotonic() - t0) / 0.45))
    return _STRETCH[0]


# ---- SIGKILL at random moments -----------------------------------------------------------------
def test_sigkill_at_random_moments_never_loses_the_checkpoint(tmp_path, corpus):
    """20 kills after a random delay in [0, 1.5] s (stretched on a slower machine: see
    startup_stretch), each run resuming from the last checkpoint.

    --eval-every 1 writes best.json and last.json after every step, so most kills that land
    after start-up land during or between checkpoint writes. After every kill, last.json (once
    it exists) must load completely, hold finite parameters, and never go back in steps.
    """
    out = str(tmp_path / "run")
    last = os.path.join(out, "last.json")
    rng = random.Random(20240601)
    common = ["--model-data", corpus, "--out-dir", out, "--eval-every", "1", "--epochs", "100000",
              "--max-steps", "1000000"] + ARCH + QUIET
    steps, mid_write = [], 0
    stretch = startup_stretch(tmp_path)      # under qemu every kill landed before the first save
    for kill in range(20):
        argv = ["train"] + common + (["--checkpoint", last] if os.path.exists(last) else [])
        p = subprocess.Popen(shoestring_cmd(argv), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(stretch * rng.uniform(0.0, 1.5))
        p.send_signal(signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        assert p.returncode == -signal.SIGKILL, (p.returncode, err.decode()[-2000:])
        assert b"Traceback" not in err, err.decode()[-2000:]
        mid_write += len(glob.glob(os.path.join(out, ".*.tmp")))
        for tmp in glob.glob(os.path.join(out, ".*.tmp")):
            os.unlink(tmp)          # a kill mid-write leaves its temp file; the real one is intact
        if os.path.exists(last):
            ck = read_checkpoint(last)                    # complete and valid, or this raises
            assert np.isfinite(ck.params).all()
            s = ck.training["step"]
            assert not steps or s >= steps[-1], ("the checkpoint went backwards", steps, s)
            steps.append(s)
            read_checkpoint(os.path.join(out, "best.json"))
    assert steps and steps[-1] > 0, "no checkpoint was ever written: the delays are too short"
    # the survivor resumes and finishes normally
    final = steps[-1] + 3
    argv = ["train"] + common[:-len(ARCH + QUIET) - 2] + ["--max-steps", str(final),
                                                         "--checkpoint", last] + ARCH + QUIET
    p = subprocess.run(shoestring_cmd(argv), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert step_of(last) == final
    print("sigkill: 20 kills, checkpoint steps %s, %d kills left a temp file (mid-write)"
          % (steps, mid_write))


# ---- a full disk while saving ------------------------------------------------------------------
def test_full_disk_keeps_the_previous_checkpoint(tmp_path, corpus, capsys, monkeypatch):
    out = str(tmp_path / "run")
    real, real_save = dataset_mod._write_all, train_mod.save_checkpoint
    saving = {"step": 0}

    def save(path, ck):
        saving["step"] = ck["training"]["step"]
        return real_save(path, ck)

    def write_until_full(fd, data):
        if saving["step"] > 2:        # the disk fills up after the checkpoints of step 2
            real(fd, memoryview(data)[:len(data) // 2])    # part of the file reaches the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(train_mod, "save_checkpoint", save)
    monkeypatch.setattr(dataset_mod, "_write_all", write_until_full)
    rc = main(["train", "--model-data", corpus, "--out-dir", out, "--eval-every", "1",
               "--max-steps", "5"] + ARCH + QUIET)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("shoestring: error: could not write checkpoint")
    assert "No space left on device" in err[0] and "free some disk space" in err[0]
    monkeypatch.setattr(dataset_mod, "_write_all", real)
    ck = read_checkpoint(os.path.join(out, "last.json"))
    assert ck.training["step"] == 2 and np.isfinite(ck.params).all()
    assert not glob.glob(os.path.join(out, ".*.tmp")), "a temp file was left behind"
    # and training resumes from it once there is space again
    rc = main(["train", "--checkpoint", os.path.join(out, "last.json"), "--model-data", corpus,
               "--eval-every", "1", "--max-steps", "4"] + ARCH + QUIET)
    assert rc == 0 and step_of(os.path.join(out, "last.json")) == 4


# The metrics log on a full disk: tests/test_run_faults.py::test_a_full_disk_for_the_metrics_log
# (the checkpoints are saved first; the log keeps whole lines only; the message says so).


# ---- Ctrl-C ------------------------------------------------------------------------------------
def test_sigint_saves_and_resumes_exactly(tmp_path, corpus):
    """A real SIGINT: exit 130 with last.json saved; resuming gives the uninterrupted run's bits."""
    steps = "8000"
    common = ["--model-data", corpus, "--epochs", "100000", "--max-steps", steps,
              "--lr", "0.003", "--eval-every", "300"] + ARCH + QUIET
    straight = str(tmp_path / "straight")
    rc = main(["train", "--out-dir", straight] + common)
    assert rc == 0

    half = str(tmp_path / "half")
    p = subprocess.Popen(shoestring_cmd(["train", "--out-dir", half] + common), cwd=str(tmp_path),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    t0 = time.time()
    while not os.path.exists(os.path.join(half, "metrics.jsonl")):   # step 300 is done
        assert p.poll() is None and time.time() - t0 < 120, "training did not start"
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    err = err.decode()
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted at step" in err
    last = os.path.join(half, "last.json")
    stopped = step_of(last)
    assert 0 < stopped < int(steps), "the interrupt did not land mid-run (step %d)" % stopped

    p = subprocess.run(shoestring_cmd(["train", "--checkpoint", last] + common), cwd=str(tmp_path),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    a = read_checkpoint(os.path.join(straight, "last.json"))
    b = read_checkpoint(last)
    assert a.training["step"] == b.training["step"] == int(steps)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.optimizer["m"], b.optimizer["m"])
    np.testing.assert_array_equal(a.optimizer["v"], b.optimizer["v"])
    assert a.state.tobytes() == b.state.tobytes()      # bit for bit


# ---- divergence --------------------------------------------------------------------------------
def test_divergence_is_reported_and_the_last_good_checkpoint_kept(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    common = ["--model-data", corpus, "--eval-every", "1"] + ARCH + QUIET
    assert main(["train", "--out-dir", out, "--max-steps", "5"] + common) == 0
    last = os.path.join(out, "last.json")
    good = read_checkpoint(last)
    assert good.training["step"] == 5
    capsys.readouterr()
    # resume with a learning rate that blows the loss up
    rc = main(["train", "--checkpoint", last, "--max-steps", "60", "--lr", "1e4", "--grad-clip",
               "0", "--lr-schedule", "constant", "--warmup-steps", "0"] + common)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("shoestring: error: "), err
    assert ("became nan" in err[0] or "became inf" in err[0] or "diverged" in err[0]
            or "non-finite" in err[0]), err[0]
    ck = read_checkpoint(last)                         # still loadable
    assert np.isfinite(ck.params).all()
    assert ck.training["step"] >= 5
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert all(np.isfinite(r["val_loss"]) for r in rows)
