"""Faults around a training run (#17): signals, a vanishing stderr, two runs and one folder, a
full disk for the metrics log, numbers in their float32 meaning, sampling and loading checks.

The promise: a stopped run (SIGINT, SIGTERM, SIGHUP) saves last.json and exits with the shell's
status for that signal; output that cannot be written never stops a run; a run owns its folder;
nothing is ever lost or rewound. Every test works inside pytest's temporary folders.
"""
import errno
import glob
import json
import os
import random
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from reliability_cases import TINY_CHAT
from shoestring.checkpoint import read_checkpoint
from shoestring.cli import main
from test_faults import ARCH, QUIET, corpus, step_of  # noqa: F401  (corpus: a fixture)
from test_faults import startup_stretch
from test_faults import shoestring_cmd as cmd

POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and file descriptors")


def no_temp_files(folder):
    return not glob.glob(os.path.join(folder, ".*.tmp"))


# ---- signals at random moments -----------------------------------------------------------------
@POSIX
def test_term_hup_int_at_random_moments_lose_nothing(tmp_path, corpus):
    """21 runs, each stopped by SIGTERM, SIGHUP or SIGINT (in turn) after a random delay of
    0-1.2 s from its first line of output, each resuming from last.json when there is one.

    A stop that lands in the training loop (nearly all) must exit 128 + the signal number, say
    "at step N; saved", and leave last.json at step N; one that lands in the few milliseconds
    before the loop installs its handlers may die by the signal, with nothing saved yet to lose.
    Always: no traceback, last.json loads completely and never goes back, no temp file."""
    out = str(tmp_path / "run")
    last = os.path.join(out, "last.json")
    rng = random.Random(1717)
    sigs = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
    common = ["--model-data", corpus, "--out-dir", out, "--eval-every", "7", "--epochs",
              "100000", "--sample-every", "0", "--no-chat"] + ARCH
    steps, graceful, during = [], 0, []
    for i in range(21):
        sig = sigs[i % 3]
        argv = ["train"] + common + (["--checkpoint", last] if os.path.exists(last) else [])
        p = subprocess.Popen(cmd(argv), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=dict(os.environ, PYTHONFAULTHANDLER="1"))
        first = p.stderr.readline()
        assert first, "the run printed nothing"
        time.sleep(rng.uniform(0.0, 1.2))
        p.send_signal(sig)
        try:
            rest = p.communicate(timeout=120)[1]
        except subprocess.TimeoutExpired:     # where it hangs, for the failure message
            p.send_signal(signal.SIGABRT)
            raise AssertionError("no exit after %s: %s" % (
                signal.Signals(sig).name, p.communicate(timeout=30)[1].decode()[-3000:]))
        err = (first + rest).decode("utf-8", "replace")
        assert "Traceback" not in err, err[-2000:]
        m = re.search(r"at step (\d+); saved (\S+)", err)
        if p.returncode == 128 + sig and m:
            graceful += 1
            assert step_of(last) == int(m.group(1))
            assert no_temp_files(out), "a graceful stop left a temp file"
            during.append(int(m.group(1)))
        else:                         # before the loop: stopped with nothing new to save
            assert p.returncode in (128 + sig, -sig), (p.returncode, err[-1000:])
            assert re.search("stopped by SIG|interrupted", err) or p.returncode < 0, err[-500:]
            if steps:
                assert step_of(last) == steps[-1]
        if os.path.exists(last):
            ck = read_checkpoint(last)
            assert np.isfinite(ck.params).all()
            s = ck.training["step"]
            assert not steps or s >= steps[-1], ("last.json went backwards", steps, s)
            steps.append(s)
    assert graceful >= 15, "only %d of 21 stops landed in the loop" % graceful
    assert steps[-1] > 0
    print("signals: %d of 21 stops graceful; saved steps %s" % (graceful, during))


@POSIX
def test_sighup_with_the_terminal_gone_still_saves(tmp_path, corpus):
    """A closed SSH session: stderr is gone (its reader closed) and SIGHUP arrives."""
    out = str(tmp_path / "run")
    p = subprocess.Popen(cmd(["train", "--model-data", corpus, "--out-dir", out, "--epochs",
                              "100000", "--eval-every", "50", "--no-chat", "--sample-every", "1"]
                             + ARCH), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p.stderr.readline()
    p.stderr.close()                  # the terminal is gone: every later write is EPIPE
    time.sleep(1.0)
    assert p.poll() is None, "the run died when its stderr went away (rc %r)" % p.returncode
    p.send_signal(signal.SIGHUP)
    assert p.wait(timeout=60) == 128 + signal.SIGHUP
    assert step_of(os.path.join(out, "last.json")) > 0


def _startup_corpora(folder):
    """(tokenizer data, model data): 0.6 MB of random Chinese and words for the tokenizer (about
    a second of training on an idle core, every pre-token distinct) and 100 KB of mixed text."""
    rng = random.Random(1701)
    words = TINY_CHAT.split()
    lines = []
    for i in range(9000):
        if i % 2:
            lines.append("".join(chr(rng.randrange(0x4E00, 0x9FA0)) for _ in range(rng.randrange(20, 40))))
        else:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randrange(5, 15))))
    bpe = os.path.join(folder, "bpe.txt")
    with open(bpe, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    model = os.path.join(folder, "model.txt")
    with open(model, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:1200]) + "\n")
    return bpe, model


def _complete_run_folder(out):
    """Everything in a run folder is whole: no temp file, every JSON file and every line of
    metrics.jsonl parses, checkpoints load completely."""
    if not os.path.isdir(out):
        return
    assert no_temp_files(out), sorted(os.listdir(out))
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if name in ("last.json", "best.json"):
            assert np.isfinite(read_checkpoint(path).params).all()
        elif name.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                json.load(f)
        elif name == "metrics.jsonl":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    json.loads(line)


@POSIX
def test_term_and_hup_during_start_up_always_end_the_process(tmp_path):
    """SIGTERM and SIGHUP (in turn) at 16 moments of a run's start-up, from the first
    milliseconds (interpreter start, imports) through tokenizer training on 0.6 MB of
    mostly distinct pre-tokens, the data's encoding and token cache, the network's construction,
    to the first steps: the process always ends within seconds (never ignores the signal), with
    the shell's status for the signal (128 + N, or killed by it before its handler exists), no
    traceback, and nothing half-written in its folder."""
    bpe, model = _startup_corpora(str(tmp_path))
    rng = random.Random(1702)
    # delays after the process starts, seconds: the imports take about 0.3-0.6 s, tokenizer
    # training about 1-3 s on 2 shared cores; jittered so the suite tries new moments each time.
    # Stretched where start-up is slower (under qemu the imports alone took over 5 s, and
    # every signal landed before the handlers existed).
    stretch = startup_stretch(tmp_path)
    delays = [stretch * d for d in
              (0.0, 0.02, 0.1, 0.25, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 3.6, 4.3, 5.5)]
    landed = []
    for i, base in enumerate(delays):
        sig = (signal.SIGTERM, signal.SIGHUP)[i % 2]
        out = str(tmp_path / ("run%d" % i))
        argv = ["train", "--bpe-data", bpe, "--model-data", model, "--out-dir", out,
                "--epochs", "100000", "--eval-every", "5", "--sample-every", "0", "--no-chat",
                "--bpe-vocab-size", "600"] + ARCH[2:]
        errf = open(str(tmp_path / ("err%d.txt" % i)), "w+b")
        p = subprocess.Popen(cmd(argv), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=errf,
                             env=dict(os.environ, PYTHONFAULTHANDLER="1"))
        time.sleep(base * rng.uniform(0.8, 1.2))
        p.send_signal(sig)
        t_sig = time.monotonic()
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGABRT)     # faulthandler shows where it was
            p.wait(timeout=30)
            errf.seek(0)
            raise AssertionError("%s %.2f s into start-up was ignored (no exit in 30 s): %s" % (
                signal.Signals(sig).name, base, errf.read().decode("utf-8", "replace")[-3000:]))
        took = time.monotonic() - t_sig
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
        errf.close()
        assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
        assert rc in (128 + sig, -sig), (signal.Signals(sig).name, base, rc, err[-1000:])
        _complete_run_folder(out)
        phase = ("step" if re.search(r"^step ", err, re.M) else
                 "network" if "model:" in err else
                 "encoding" if "tokenizer:" in err else
                 "tokenizer or earlier")
        landed.append((round(base, 2), phase, rc, round(took, 2)))
    phases = {ph for _, ph, _, _ in landed}
    assert "tokenizer or earlier" in phases and len(phases) >= 2, landed
    print("start-up signals (delay s, phase, exit, s to exit):", landed)


def _planted(tmp_path, script, argv):
    """`shoestring ARGV` run through `python -c SCRIPT` (a script that plants a fault in
    start-up, then calls cli.main), in tmp_path, without stdin; the CompletedProcess (text)."""
    import sys
    return subprocess.run([sys.executable, "-c", script] + argv, cwd=str(tmp_path),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def _planted_train(tmp_path, script, bpe_vocab):
    """A training run through _planted on _startup_corpora's data; (process, run folder)."""
    bpe, model = _startup_corpora(str(tmp_path))
    out = str(tmp_path / "run")
    return _planted(tmp_path, script, ["train", "--bpe-data", bpe, "--model-data", model,
                                       "--out-dir", out, "--epochs", "100000", "--no-chat",
                                       "--bpe-vocab-size", str(bpe_vocab)] + ARCH[2:]), out


_SWALLOW = """
import os, signal, sys
from shoestring import cli, tokenizer
real = tokenizer.Tokenizer.train.__func__
def gen():
    try:
        yield 1
    finally:                        # runs as a finaliser: Python drops what is raised here
        os.kill(os.getpid(), signal.%s)
        sum(range(10000))
def train(cls, *a, **k):
    g = gen(); next(g); del g
    print("start-up goes on", file=sys.stderr, flush=True)
    return real(cls, *a, **k)
tokenizer.Tokenizer.train = classmethod(train)
sys.exit(cli.main())
"""


@POSIX
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_that_lands_in_a_finaliser_is_not_lost(tmp_path, sig):
    """Python drops an exception raised while it runs a finaliser (a generator closed by the
    garbage collector, a __del__): the signal's Terminated used to vanish there, and start-up
    went on training the tokenizer, encoding the data and building the network before the loop
    noticed (a non-training command never did). The signal is now sent again from outside the
    finaliser: the command stops within moments, before the tokenizer is trained."""
    p, out = _planted_train(tmp_path, _SWALLOW % sig, 600)
    signum = getattr(signal, sig)
    assert "start-up goes on" in p.stderr, p.stderr[-2000:]      # the finaliser did run
    assert p.returncode in (128 + signum, -signum), (p.returncode, p.stderr[-2000:])
    assert "tokenizer:" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr[-2000:]
    _complete_run_folder(out)


_SWALLOW_PLAIN = """
import os, signal, sys
from shoestring import cli, safeio, tokenizer
real = tokenizer.Tokenizer.train.__func__
def train(cls, *a, **k):
    try:                            # careless code on the way: the exception goes nowhere
        os.kill(os.getpid(), signal.%s)
        sum(range(10000))
    except BaseException as exc:
        print("swallowed", type(exc).__name__, file=sys.stderr, flush=True)
    return real(cls, *a, **k)
tokenizer.Tokenizer.train = classmethod(train)
sys.exit(cli.main())
"""


@POSIX
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_signal_whose_exception_is_swallowed_still_stops_a_run(tmp_path, sig):
    """A stop signal raises Terminated during start-up; code that swallows it (here a broad
    `except` around the tokenizer's training) cannot lose the signal: it is recorded, and the
    training loop, once it holds the signals, stops before its first step with last.json
    saved and the signal's status, as if the signal had arrived then."""
    p, out = _planted_train(tmp_path, _SWALLOW_PLAIN % sig, 300)
    signum = getattr(signal, sig)
    assert "swallowed Terminated" in p.stderr, p.stderr[-2000:]
    assert p.returncode == 128 + signum, (p.returncode, p.stderr[-2000:])
    assert "stopped by %s at step 0; saved" % sig in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert step_of(os.path.join(out, "last.json")) == 0
    _complete_run_folder(out)


@POSIX
def test_a_swallowed_signal_still_ends_a_command_with_its_status(tmp_path):
    """The same in a command without a training loop: `tokenizer` finishes what it was doing
    when the exception vanished, then says the signal stopped it and exits 128 + N."""
    bpe, _ = _startup_corpora(str(tmp_path))
    p = _planted(tmp_path, _SWALLOW_PLAIN % "SIGTERM", ["tokenizer", "--bpe-data", bpe,
                 "--bpe-vocab-size", "300", "--out", str(tmp_path / "tok.json")])
    assert "swallowed Terminated" in p.stderr, p.stderr[-2000:]
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, p.stderr[-2000:])
    assert p.stderr.rstrip().endswith("shoestring: stopped by SIGTERM"), p.stderr[-500:]


@POSIX
def test_take_pending_stop_is_cleared_by_each_command():
    """In one process (the Python API after a command), a signal recorded by one command never
    stops what comes later: raise_on_termination starts empty and its restore empties it."""
    from shoestring import safeio
    restore = safeio.raise_on_termination()
    try:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        except safeio.Terminated:
            pass
        assert safeio._PENDING == [signal.SIGTERM]
    finally:
        restore()
    assert safeio.take_pending_stop() is None
    restore = safeio.raise_on_termination()
    restore()
    safeio._PENDING.append(signal.SIGHUP)
    assert safeio.take_pending_stop() == signal.SIGHUP
    assert safeio.take_pending_stop() is None


@POSIX
def test_nohup_keeps_a_run_alive_when_its_terminal_closes(tmp_path, corpus):
    """A signal the parent set to be ignored stays ignored: under `nohup` (SIGHUP ignored) a
    SIGHUP neither stops training nor start-up; SIGTERM still stops and saves."""
    out = str(tmp_path / "run")
    p = subprocess.Popen(cmd(["train", "--model-data", corpus, "--out-dir", out, "--epochs",
                              "100000", "--eval-every", "50", "--no-chat", "--sample-every", "0"]
                             + ARCH), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    time.sleep(0.05)
    p.send_signal(signal.SIGHUP)          # during start-up
    assert p.stderr.readline()
    time.sleep(0.5)
    p.send_signal(signal.SIGHUP)          # during training
    time.sleep(0.5)
    assert p.poll() is None, "SIGHUP stopped a run started under nohup (rc %r)" % p.returncode
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1].decode("utf-8", "replace")
    assert p.returncode == 128 + signal.SIGTERM, err[-1000:]
    assert step_of(os.path.join(out, "last.json")) > 0


# ---- stderr that cannot be written ---------------------------------------------------------
@POSIX
@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full", "2>&1 | head -c 20 >/dev/null"])
def test_unwritable_stderr_never_stops_a_run(tmp_path, corpus, redirect):
    if "/dev/full" in redirect and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = str(tmp_path / "run")
    argv = cmd(["train", "--model-data", corpus, "--out-dir", out, "--max-steps", "40",
                "--eval-every", "1", "--sample-every", "1", "--no-chat"] + ARCH)
    line = " ".join("'%s'" % a for a in argv) + " " + redirect + "; echo rc=${PIPESTATUS[0]}"
    p = subprocess.run(["bash", "-c", line], cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert "rc=0" in p.stdout, (p.stdout, p.stderr[-1000:])
    assert step_of(os.path.join(out, "last.json")) == 40
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == list(range(1, 41))


# ---- a run owns its folder -------------------------------------------------------------------
_KEEPING_STDERR = """
import errno, sys
from shoestring import cli
class Keeping:
    # a stderr that cannot be written and keeps what it was given, as Python 3.11.2's buffered
    # stderr on a full device does: its every flush fails, Python's exit flush included
    def __init__(self):
        self.kept = []
    def write(self, text):
        self.kept.append(text)
        return len(text)
    def flush(self):
        if self.kept:
            raise OSError(errno.ENOSPC, "No space left on device")
    def isatty(self):
        return False
sys.stderr = Keeping()
code = cli.main()
print("main returned", code, flush=True)
sys.exit(code)
"""


@POSIX
def test_a_stderr_that_keeps_failing_never_changes_the_exit_status(tmp_path, corpus):
    """Seen under emulation with Debian's Python 3.11.2 (`2>/dev/full`, `2>&1 | head`, a closed
    terminal): the unwritten text stayed buffered, Python's last flush at exit failed again,
    and a finished run exited 120 instead of 0. Now the command ends by sending such a stream's
    text nowhere. The planted stderr here never stops failing."""
    out = str(tmp_path / "run")
    p = _planted(tmp_path, _KEEPING_STDERR, ["train", "--model-data", corpus, "--out-dir", out,
                                            "--max-steps", "3", "--eval-every", "1",
                                            "--sample-every", "1", "--no-chat"] + ARCH)
    assert "main returned 0" in p.stdout, (p.returncode, p.stdout, p.stderr[-1000:])
    assert p.returncode == 0, (p.returncode, p.stderr[-1000:])
    assert step_of(os.path.join(out, "last.json")) == 3
    p = _planted(tmp_path, _KEEPING_STDERR, ["train", "--model-data", corpus, "--out-dir", out,
                                            "--max-steps", "3", "--no-chat"] + ARCH)
    assert p.returncode == 1, (p.returncode, p.stdout)       # an error keeps its own status


@POSIX
def test_two_runs_aimed_at_one_folder(tmp_path, corpus):
    """Started together into one --out-dir: one trains, the other is refused with one line;
    the survivor's checkpoints are whole and its own."""
    out = str(tmp_path / "shared")
    argv = cmd(["train", "--model-data", corpus, "--out-dir", out, "--max-steps", "60",
                "--eval-every", "3"] + ARCH + QUIET)
    for attempt in range(3):
        if os.path.exists(out):
            for f in os.listdir(out):
                os.unlink(os.path.join(out, f))
            os.rmdir(out)
        ps = [subprocess.Popen(argv + ["--seed", str(k)], cwd=str(tmp_path),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE) for k in (1, 2)]
        res = [(p.wait(timeout=120), p.stderr.read().decode()) for p in ps]
        codes = sorted(r[0] for r in res)
        assert codes == [0, 1], res
        err = next(e for c, e in res if c == 1).strip().splitlines()
        assert len(err) == 1 and re.search(
            "in use by another training run|already holds a training run", err[0]), err
        winner = [1, 2][[r[0] for r in res].index(0)]
        last, best = read_checkpoint(os.path.join(out, "last.json")), \
            read_checkpoint(os.path.join(out, "best.json"))
        assert last.training["step"] == 60
        assert last.config["train"]["seed"] == best.config["train"]["seed"] == winner
        assert last.training["run_id"] == best.training["run_id"]


@POSIX
def test_default_folders_of_runs_started_together_differ(tmp_path, corpus):
    argv = cmd(["train", "--model-data", corpus, "--max-steps", "3"] + ARCH + QUIET)
    ps = [subprocess.Popen(argv, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(3)]
    assert [p.wait(timeout=120) for p in ps] == [0, 0, 0], [p.stderr.read() for p in ps]
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 3, runs
    for r in runs:
        assert step_of(str(tmp_path / "runs" / r / "last.json")) == 3


def test_fresh_run_dir_in_one_second(tmp_path):
    from shoestring.rundir import fresh_run_dir
    made = [fresh_run_dir(str(tmp_path / "runs")) for _ in range(5)]
    assert len(set(made)) == 5 and all(os.path.isdir(d) for d in made)


def test_a_new_run_never_replaces_another_runs_checkpoints(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--model-data", corpus, "--out-dir", out, "--eval-every", "2"] + ARCH + QUIET
    assert main(base + ["--max-steps", "6"]) == 0
    before = {n: open(os.path.join(out, n), "rb").read()
              for n in ("best.json", "last.json", "metrics.jsonl")}
    capsys.readouterr()
    assert main(base + ["--max-steps", "2", "--lr", "0.5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a training run" in err[0] and "--checkpoint" in err[0]
    for n, data in before.items():
        assert open(os.path.join(out, n), "rb").read() == data, n


def test_resuming_an_older_checkpoint_never_rewinds_last(tmp_path, corpus, capsys):
    """best.json (or any older checkpoint) resumed into its folder, where last.json is newer."""
    import shutil
    out = str(tmp_path / "run")
    base = ["--model-data", corpus, "--eval-every", "2"] + ARCH + QUIET
    assert main(["train", "--out-dir", out, "--max-steps", "4"] + base) == 0
    shutil.copy(os.path.join(out, "last.json"), os.path.join(out, "step4.json"))
    assert main(["train", "--checkpoint", os.path.join(out, "last.json"), "--max-steps", "8"]
                + base) == 0
    newer = open(os.path.join(out, "last.json"), "rb").read()
    capsys.readouterr()
    assert main(["train", "--checkpoint", os.path.join(out, "step4.json"), "--max-steps", "10"]
                + base) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "newer than the checkpoint being resumed" in err[0], err
    assert open(os.path.join(out, "last.json"), "rb").read() == newer
    # branching off into another folder is fine
    branch = str(tmp_path / "branch")
    assert main(["train", "--checkpoint", os.path.join(out, "step4.json"), "--out-dir", branch,
                 "--max-steps", "6"] + base) == 0
    assert step_of(os.path.join(branch, "last.json")) == 6
    assert open(os.path.join(out, "last.json"), "rb").read() == newer


def test_resuming_into_another_runs_folder_is_refused(tmp_path, corpus, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    base = ["--model-data", corpus, "--max-steps", "2"] + ARCH + QUIET
    assert main(["train", "--out-dir", a] + base) == 0
    assert main(["train", "--out-dir", b, "--seed", "9"] + base) == 0
    before = open(os.path.join(b, "last.json"), "rb").read()
    capsys.readouterr()
    assert main(["train", "--checkpoint", os.path.join(a, "last.json"), "--out-dir", b,
                 "--max-steps", "4"] + QUIET) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another training run" in err[0], err
    assert open(os.path.join(b, "last.json"), "rb").read() == before


# ---- the metrics log: after the checkpoints, whole lines only ---------------------------------------
def _fd_path(fd):
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return ""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name descriptors")
def test_a_full_disk_for_the_metrics_log(tmp_path, corpus, capsys, monkeypatch):
    """The disk fills up while metrics.jsonl is written (half a line reaches it): the
    checkpoints of that step are already saved, the message says so truly, and the log holds
    whole lines only; the resumed run continues it without gluing onto anything."""
    out = str(tmp_path / "run")
    real_write = os.write
    state = {"fail": False}

    def write(fd, data):
        if state["fail"] and "metrics.jsonl" in _fd_path(fd) or (
                state["fail"] and ".metrics.jsonl" in _fd_path(fd)):
            real_write(fd, bytes(data[:max(1, len(data) // 2)]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    from shoestring import trainer as train_mod
    real_save = train_mod.Trainer.save

    def save(self, name):
        state["fail"] = self.opt.step >= 3
        return real_save(self, name)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(train_mod.Trainer, "save", save)
    rc = main(["train", "--model-data", corpus, "--out-dir", out, "--eval-every", "1",
               "--max-steps", "5"] + ARCH + QUIET)
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "No space left on device" in err[0] and "free some disk space" in err[0]
    assert "step 3 were saved" in err[0], err[0]
    assert step_of(os.path.join(out, "last.json")) == 3
    text = open(os.path.join(out, "metrics.jsonl"), encoding="utf-8").read()
    assert text.endswith("\n")
    assert [json.loads(l)["step"] for l in text.splitlines()] in ([1, 2], [1, 2, 3])
    # a partial line left by an older crash is never glued onto
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"step": 99, "val_lo')
    assert main(["train", "--checkpoint", os.path.join(out, "last.json"), "--eval-every", "1",
                 "--max-steps", "6"] + QUIET) == 0
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"), encoding="utf-8")]
    assert rows[-1]["step"] == 6 and all(r["step"] != 99 for r in rows)


def test_hints_match_the_error():
    from shoestring.safeio import os_error_hint
    assert "disk space" in os_error_hint(OSError(errno.ENOSPC, "x"))
    assert "disk space" not in os_error_hint(OSError(errno.EACCES, "x"))
    assert "permissions" in os_error_hint(OSError(errno.EACCES, "x"))
    assert "read-only" in os_error_hint(OSError(errno.EROFS, "x"))
    assert "loop" in os_error_hint(OSError(errno.ELOOP, "x"))


# ---- numbers in their float32 meaning ------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"eps_adamw": 1e-46}, {"lr": 1e39}, {"wd": 1e300},
                                {"grad_clip": 1e-50}])
def test_float32_meaning_of_settings(kw):
    from shoestring import TrainConfig, UsageError
    name = next(iter(kw))
    with pytest.raises(UsageError, match=name):
        TrainConfig(**kw)


def test_eps_rmsnorm_in_float32():
    from shoestring import ModelConfig, ShoestringError
    for bad in (1e-46, 1e-300):
        with pytest.raises(ShoestringError, match="eps_rmsnorm"):
            ModelConfig(eps_rmsnorm=bad)


def test_nan_weights_after_an_update_blame_the_update(tmp_path, corpus, capsys, monkeypatch):
    from shoestring import kernels

    real = kernels.StepBinding.run
    calls = {"n": 0}

    def run(self, t, lo, hi, loss):           # the training step's update, in C (csrc/step.c)
        updated = real(self, t, lo, hi, loss)
        if lo <= 7 < hi:                      # on the thread whose range holds weight 7
            calls["n"] += 1
            if calls["n"] == 3:
                self.params[7] = np.nan       # what 0/0 in the update produces, and the sum
                self.param_sumsq[t] = np.nan  # of squares the C step then computes
        return updated
    monkeypatch.setattr(kernels.StepBinding, "run", run)
    out = str(tmp_path / "run")
    rc = main(["train", "--model-data", corpus, "--out-dir", out, "--eval-every", "1",
               "--max-steps", "6"] + ARCH + QUIET)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "--eps-adamw" in err[0] and "non-finite" in err[0] and "step 3" in err[0], err[0]
    assert step_of(os.path.join(out, "last.json")) == 2


# ---- sampling: one check, safe for every float ---------------------------------------------------
@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    corpus = d / "tiny.txt"
    corpus.write_text(TINY_CHAT, encoding="utf-8")
    out = str(d / "run")
    assert main(["train", "--model-data", str(corpus), "--out-dir", out, "--max-steps", "30"]
                + ARCH + QUIET) == 0
    return os.path.join(out, "last.json")


def test_tiny_temperatures_are_greedy_and_never_print_banned_tokens(model_ckpt):
    import shoestring
    m = shoestring.load(model_ckpt)
    greedy = m.generate("what is", max_tokens=20, temperature=0.0)
    for t in (1e-7, 1e-30, 3e-39, 1e-40, 1e-45, 5e-324):
        outs = {m.generate("what is", max_tokens=20, temperature=t, seed=s) for s in (1, 2, 3)}
        assert outs == {greedy}, (t, outs)
        assert not any(s in greedy for s in ("[USER]", "[PAD]", "[UNK]"))


def test_sampling_settings_one_check(model_ckpt):
    import shoestring
    from shoestring.errors import UsageError
    m = shoestring.load(model_ckpt)
    for bad in ({"seed": -1}, {"seed": 2 ** 64}, {"seed": 1.0}, {"temperature": float("inf")},
                {"temperature": 1e39}, {"temperature": True}, {"top_p": float("nan")},
                {"top_k": -1}):
        with pytest.raises(UsageError):
            m.generate("hi", max_tokens=2, **bad)
        with pytest.raises(UsageError):
            m.chat(**bad)
    assert m.generate("hi", max_tokens=4, seed=2 ** 64 - 1) is not None


def test_huge_but_finite_parameters_refused_at_load(model_ckpt, tmp_path):
    import base64
    import zlib
    doc = json.load(open(model_ckpt))
    vals = np.frombuffer(base64.b64decode(doc["params"]["data"]), "<f4").copy()
    vals[:] = 3e37
    raw = vals.astype("<f4").tobytes()
    doc["params"].update(data=base64.b64encode(raw).decode(), crc32=zlib.crc32(raw) & 0xFFFFFFFF)
    bad = str(tmp_path / "huge.json")
    json.dump(doc, open(bad, "w"))
    for argv in (["generate", "--checkpoint", bad, "--prompt", "hi"], ["chat", "--checkpoint", bad]):
        p = subprocess.run(cmd(argv), capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, cwd=str(tmp_path))
        assert p.returncode == 1 and "non-finite outputs" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_the_c_sampler_is_safe_for_every_temperature():
    """ss_sample itself (not only the Python check): a temperature whose reciprocal is infinite
    or zero in float32 is greedy, never a banned id (the max here is at a banned id 1 and ties
    at the allowed ids 3 and 5: greedy is 3)."""
    from shoestring import kernels
    logits = np.array([1.0, 9.0, 2.0, 3.0, 0.5, 3.0, -1.0], np.float32)
    allowed = np.array([1, 0, 1, 1, 1, 1, 1], np.uint8)
    for t in (1e-38, 3e-39, 1e-40, 1e-45, 5e-324, float("inf"), 1e38):
        for top_k in (0, 3):
            got = {kernels.sample(logits, kernels.Rng(s), t, top_k, 1.0, allowed)
                   for s in range(16)}
            assert 1 not in got, (t, top_k, got)
            if t < 2.9e-39 or t == float("inf"):     # 1/T is inf or 0 in float32: greedy
                assert got == {3}, (t, top_k, got)
            elif t < 1e-30:                           # one-hot but for the exact tie
                assert got <= {3, 5}, (t, top_k, got)


# ---- tokenizer training stays linear: pre-token runs are bounded (shoestring-2) ----------------
def test_pretoken_runs_are_bounded_and_lossless():
    import random as rnd
    from shoestring.tokenizer import (MAX_RUN, SPECIALS, Tokenizer, _compile_pattern,
                                      pretokenize_reference)
    r = rnd.Random(5)
    alphabet = ["a", "b", "'", "\u2019", " ", "  ", "\n", "7", "9", "-", "!", "\u4e2d", "\u6587",
                "[EOS]", "_", "\t"]
    texts = ["x" * 1000, "\u4e2d\u6587" * 700, "1" * 300, "-" * 200, " " * 150 + "b",
             "a'" * 40 + "a", " " + "q" * 64 + "r" * 70]
    texts += ["".join(r.choice(alphabet) * r.choice([1, 1, 2, 70]) for _ in range(60))
              for _ in range(300)]
    for t in texts:
        for specials in ((), SPECIALS):
            got = _compile_pattern(specials).findall(t)
            assert got == pretokenize_reference(t, specials), t
            assert "".join(got) == t
            assert max(len(p) for p in got) <= 5 * (MAX_RUN + 1)
    tok = Tokenizer.train(texts=texts, vocab_size=400)
    assert tok.pretokenizer == "shoestring-2"
    for t in texts[:60]:
        assert tok.decode(tok.encode(t)) == t
        assert tok.encode(t) == tok.encode_slow(t)


def test_old_tokenizers_keep_their_rules():
    from shoestring.tokenizer import Tokenizer
    d = Tokenizer.train(texts=["hello world " * 50], vocab_size=300).to_dict()
    d["pretokenizer"] = "shoestring-1"
    old = Tokenizer.from_dict(d)
    assert old.to_dict()["pretokenizer"] == "shoestring-1"
    assert old.pretokenize("x" * 500) == ["x" * 500]            # unbounded, as trained
    assert Tokenizer.from_dict(dict(d, pretokenizer="shoestring-2")).pretokenize("x" * 500) \
        == ["x" * 64] * 7 + ["x" * 52]


def test_export_never_writes_over_the_checkpoint_it_reads(model_ckpt, tmp_path, capsys,
                                                          monkeypatch):
    """`export --out` naming the checkpoint being exported (as given, without .json, through
    another spelling of the path or a hard link) replaced a resumable training checkpoint with a
    weights-only file; `--out ''` wrote a hidden `.json`. Each is one line, exit 2, nothing
    written."""
    import shutil
    ck = tmp_path / "last.json"
    shutil.copy(model_ckpt, ck)
    os.link(ck, tmp_path / "alias.json")
    before = ck.read_bytes()
    monkeypatch.chdir(tmp_path)
    for fmt, out in [("json", "last.json"), ("json", "last"), ("json", "./sub/../last.json"),
                     ("json", str(ck)), ("json", "alias.json"), ("json", "")]:
        os.makedirs("sub", exist_ok=True)
        argv = ["export", "--checkpoint", "last.json", "--format", fmt, "--out", out]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("also an input" in err or "empty" in err), err
        assert ck.read_bytes() == before
    assert not os.path.exists(".json")
    assert main(["export", "--checkpoint", "last.json", "--int8", "--out", "last"]) == 2
    assert ck.read_bytes() == before
    assert main(["export", "--checkpoint", "last.json", "--out", "w"]) == 0
    assert ck.read_bytes() == before and os.path.isfile("w.json")


def test_prepare_never_writes_over_its_input(tmp_path, capsys, monkeypatch):
    """`prepare d.jsonl --out d.jsonl` replaced the chat data with the corpus made from it."""
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "d.jsonl"
    src.write_text('{"messages": [{"role": "user", "content": "hi"}, '
                   '{"role": "assistant", "content": "hello"}]}\n', encoding="utf-8")
    before = src.read_bytes()
    for out in ["d.jsonl", "./d.jsonl", str(src), ""]:
        assert main(["prepare", "d.jsonl", "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("also an input" in err or "empty" in err), err
        assert src.read_bytes() == before
    assert main(["prepare", "d.jsonl", "--out", "corpus.txt"]) == 0
    assert "[USER] hi [EOS]" in (tmp_path / "corpus.txt").read_text(encoding="utf-8")


def test_messages_name_a_file_used_as_a_folder(tmp_path, corpus, capsys, monkeypatch):
    """`corpus.txt/x` is not "not found, check the path" but a file where a folder must be;
    an --out-dir that is a file says so before any work; a bad --validation-data is refused
    before the tokenizer and the token cache, leaving no folder behind."""
    monkeypatch.chdir(tmp_path)
    small = ["--max-steps", "1"] + ARCH + QUIET
    cases = [
        (["train", "--model-data", corpus + "/x"] + small, "tiny.txt is a file, not a folder"),
        (["tokenizer", "--load", corpus + "/t.json"], "tiny.txt is a file, not a folder"),
        (["train", "--model-data", corpus, "--out-dir", corpus] + small,
         "is a file, not a folder (choose another --out-dir)"),
        (["train", "--model-data", corpus, "--validation-data", "/dev/zero", "--out-dir", "r"]
         + small, "validation data /dev/zero is not a regular file"),
    ]
    for argv, needle in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert not os.path.exists("r")


def test_resume_refuses_another_validation_data(tmp_path, corpus, capsys, monkeypatch):
    """--validation-data on resume used to be reported as "the model data differs" (a split by
    val_fraction) or taken silently (a held-out file): it is named, and the same file under
    another spelling still resumes."""
    monkeypatch.chdir(tmp_path)
    held = tmp_path / "held.txt"
    held.write_text(TINY_CHAT[:2000], encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text(TINY_CHAT[2000:4000], encoding="utf-8")
    small = ["--max-steps", "2"] + ARCH + QUIET
    assert main(["train", "--model-data", corpus, "--out-dir", "a"] + small) == 0
    assert main(["train", "--model-data", corpus, "--validation-data", "held.txt",
                 "--out-dir", "b"] + small) == 0
    capsys.readouterr()
    for ck, given, said in [("a", "held.txt", "the last 10% of the model data"),
                            ("b", "other.txt", str(held))]:
        argv = ["train", "--checkpoint", ck + "/last.json", "--validation-data", given,
                "--max-steps", "3", "--out-dir", ck + "2"] + QUIET
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "--validation-data %s contradicts the checkpoint, which held out %s" % (
            given, said) in err, err
    assert main(["train", "--checkpoint", "b/last.json", "--validation-data", "./held.txt",
                 "--max-steps", "3"] + QUIET) == 0
    assert step_of("b/last.json") == 3


@POSIX
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("argv", [["-h"], ["--version"], ["train", "-h"], ["chat", "--help"]])
def test_help_and_version_into_a_full_stdout_are_an_error(tmp_path, argv):
    """argparse swallows the OSError of its own writes: help and --version into /dev/full
    printed nothing and exited 0. Now one line and exit 1, as for every other output; a
    closed pipe (`| head`) still ends quietly with 0."""
    with open("/dev/full", "w") as full:
        p = subprocess.run(cmd(argv), stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=60, cwd=str(tmp_path))
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == ("shoestring: error: cannot write the output: No space left on "
                                "device (free some disk space or choose another place for the "
                                "output)"), p.stderr
    line = " ".join(cmd(argv)) + " | head -c 5 >/dev/null; echo rc=${PIPESTATUS[0]}"
    p = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60,
                       cwd=str(tmp_path))
    assert "rc=0" in p.stdout and "Traceback" not in p.stderr, (p.stdout, p.stderr)


def test_token_counts_from_python_have_the_command_lines_bounds(model_ckpt):
    """generate(max_tokens=True) generated one token and max_tokens=10**7 was taken, where the
    command line refuses both: one check (config.check_length) for both."""
    from shoestring import load
    from shoestring.errors import UsageError
    m = load(model_ckpt)
    for bad in (True, -1, 10 ** 7, 2.0):
        with pytest.raises(UsageError, match="max_tokens must be a whole number in"):
            m.generate("hi", max_tokens=bad)
    for bad in (True, 0, 10 ** 7):
        with pytest.raises(UsageError, match="max_response must be a whole number in"):
            m.chat(max_response=bad)
    assert m.generate("hi", max_tokens=0) == ""
    assert isinstance(m.generate("hi", max_tokens=np.int64(3), temperature=0), str)
