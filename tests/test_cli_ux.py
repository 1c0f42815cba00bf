"""The command line as a user meets it (issue #14): progress in a pseudo-terminal at 60 and 80
columns never wraps; every usage error is at most 3 lines on stderr; `generate | head -c 1`
exits 0; undecodable stdin bytes are a warning, not the end of the chat; checkpoints as a
positional argument, a run folder or the newest run; short flags; --traceback anywhere; and the
plot, inspect, prepare and export commands end to end."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

from shoestring.cli import main
from tinyrun import train_tiny_run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


OUTSIDE = tempfile.gettempdir()      # `python -m` in the source tree would import it, not the install


def sh(args, stdin=b"", cwd=None, timeout=120, env=None):
    """`python -m shoestring ARGS` as a separate process (bytes in, bytes out), run outside the
    source tree."""
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "shoestring"] + args, input=stdin,
                          capture_output=True, timeout=timeout, cwd=cwd or OUTSIDE, env=e)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("cliux"), steps=9, eval_every=3)


@pytest.fixture
def in_runs(run, tmp_path, monkeypatch):
    """A working folder whose runs/ holds an old run and the tiny run (the newest)."""
    runs = tmp_path / "runs"
    old = runs / "20200101-000000"
    old.mkdir(parents=True)
    shutil.copy(os.path.join(run, "best.json"), old / "best.json")
    os.utime(old / "best.json", (time.time() - 3600, time.time() - 3600))
    shutil.copytree(run, runs / "20300101-000000")
    monkeypatch.chdir(tmp_path)
    return str(tmp_path)


# ---- progress in a pseudo-terminal -----------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
@pytest.mark.parametrize("columns", [60, 80])
def test_training_progress_never_wraps_in_a_terminal(columns, tmp_path):
    pytest.importorskip("tqdm")
    import fcntl
    import pty
    import struct
    import termios

    corpus = tmp_path / "c.txt"
    corpus.write_text("[USER] what is 1 plus 1 [EOS]\n[BOT] 2 [EOS]\n\n" * 300, encoding="utf-8")
    pid, fd = pty.fork()
    if pid == 0:                                                   # the child: run the command
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        os.chdir(str(tmp_path))
        os.execv(sys.executable, [sys.executable, "-m", "shoestring", "train", "--model-data",
                                  str(corpus), "--bpe-vocab-size", "280", "--embedding-dim", "8",
                                  "--gru-hidden-size", "8", "--num-experts", "2", "--gru-layers",
                                  "1", "--seq-length", "8", "--batch-size", "2", "--max-steps",
                                  "400", "--eval-every", "150", "--threads", "1", "--no-chat",
                                  "--sample-every", "0", "--out-dir", "run"])
    out = bytearray()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out.extend(data)
    _, status = os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    assert os.WEXITSTATUS(status) == 0, text[-2000:]
    segments = [s for s in re.split(r"[\r\n]", ANSI.sub("", text)) if s.strip()]
    bars = [s for s in segments if "/400" in s]
    assert len(bars) >= 2, text[-2000:]
    assert max(len(s) for s in bars) < columns, max(bars, key=len)
    # one line per step would be 400 lines; the bar is redrawn in place
    assert text.count("\n") < 60
    assert "bits/char" in text and "checkpoints in run" in text       # the chart, where it went


# ---- usage errors ------------------------------------------------------------------------------
USAGE_ERRORS = [
    ["trian"], ["train", "--lr", "fast"], ["train", "--no-such-flag"], ["train", "-q", "yes"],
    ["chat", "--temperature", "hot"], ["chat", "-n", "0"], ["chat", "a.json", "b.json"],
    ["generate", "--top-p", "2"], ["generate", "-s", "-1"], ["plot", "--width", "3"],
    ["inspect", "--jsn"], ["prepare"], ["prepare", "x.jsonl"], ["prepare", "x", "--format", "xml",
                                                                  "--out", "y"],
    ["export", "--format", "onnx"], ["tokenizer", "--bpe-vocab-size", "many"],
    ["chat", "--checkpoint"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=[" ".join(a) for a in USAGE_ERRORS])
def test_every_usage_error_is_short(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2
    assert 1 <= len(lines) <= 3, err
    assert "usage:" not in err and "Traceback" not in err
    assert re.search(r"\(see shoestring( \w+)? -h\)$", lines[-1]), lines[-1]
    prefix = "shoestring: error: " if argv[0] == "trian" else "shoestring %s: error: " % argv[0]
    assert lines[-1].startswith(prefix), lines[-1]


def test_no_checkpoint_and_no_runs_is_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["chat"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint given" in err and "(see shoestring chat -h)" in err


def test_traceback_anywhere_on_the_line(tmp_path):
    for argv in (["--traceback", "inspect", "missing.json"], ["inspect", "missing.json", "--traceback"]):
        r = sh(argv, cwd=str(tmp_path))
        assert r.returncode == 1
        assert b"Traceback" in r.stderr and b"CheckpointError" in r.stderr
    r = sh(["inspect", "missing.json"], cwd=str(tmp_path))
    assert r.returncode == 1 and b"Traceback" not in r.stderr and r.stderr.count(b"\n") == 1


# ---- pipes and stdin -----------------------------------------------------------------------------
def test_generate_into_head_exits_0(run):
    p = subprocess.Popen([sys.executable, "-m", "shoestring", "generate", run, "-p", "[USER]",
                          "--special", "-n", "2000", "-t", "1.5", "-s", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=OUTSIDE)
    first = p.stdout.read(1)                  # what `head -c 1` takes, then it closes the pipe
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0, err
    assert first and b"Error" not in err and b"Traceback" not in err


def test_generate_into_head_through_a_shell(run):
    if shutil.which("head") is None or not os.path.exists("/bin/sh"):
        pytest.skip("needs a POSIX shell and head")
    cmd = ('"%s" -m shoestring generate "%s" -p "[USER]" --special -n 2000 -t 1.5 -s 2 | head -c 1;'
           ' echo " status=${PIPESTATUS:-$?}"' % (sys.executable, run))
    r = subprocess.run(["bash", "-c", cmd.replace("${PIPESTATUS:-$?}", "${PIPESTATUS[0]}")],
                       capture_output=True, timeout=120, cwd=OUTSIDE)
    assert r.stdout.endswith(b" status=0\n"), r
    assert b"Traceback" not in r.stderr and b"Error" not in r.stderr


def test_undecodable_stdin_is_a_warning_and_the_chat_goes_on(run):
    r = sh(["chat", run, "-s", "1", "-n", "12"], stdin=b"caf\xe9\nhello\n\xff\xfe\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode("utf-8").rstrip("\n").split("\n")   # (a reply may hold \x1c..\x1e,
    assert len(out) == 3                                   # which splitlines() splits on)
    err = r.stderr.decode("utf-8").splitlines()
    warnings = [line for line in err if "warning" in line]
    assert len(warnings) == 1 and "U+FFFD" in warnings[0]
    assert "Traceback" not in r.stderr.decode("utf-8")
    # the same session as if the bytes had been U+FFFD all along
    clean = sh(["chat", run, "-s", "1", "-n", "12"],
               stdin="caf\ufffd\nhello\n\ufffd\ufffd\n".encode("utf-8"))
    assert clean.stdout == r.stdout and b"warning" not in clean.stderr


def test_undecodable_stdin_for_generate(run):
    r = sh(["generate", run, "-s", "1", "-n", "5"], stdin=b"caf\xe9 au lait\n")
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().count("warning") == 1


# ---- which checkpoint -----------------------------------------------------------------------------
def test_chat_checkpoint_forms_agree(run, in_runs):
    script = b"what is 3 plus 4\nand 2 plus 2\n"
    flags = ["-s", "5", "-n", "10", "-t", "0.7"]
    best = os.path.join(run, "best.json")
    outs = {}
    for name, argv in (("positional file", [best]), ("flag -m", ["-m", best]),
                       ("--checkpoint", ["--checkpoint", best]), ("run folder", [run]),
                       ("newest run", []), ("--max-response alias", [best, "--max-response", "10"])):
        r = sh(["chat"] + argv + flags, stdin=script, cwd=in_runs)
        assert r.returncode == 0, (name, r.stderr)
        outs[name] = r.stdout
        if name == "newest run":
            assert b"using runs/20300101-000000/best.json, the newest run" in r.stderr
        else:
            assert r.stderr == b"", (name, r.stderr)
    assert len(set(outs.values())) == 1, outs
    q = sh(["chat", "-q"] + flags, stdin=script, cwd=in_runs)
    assert q.stdout == outs["flag -m"] and q.stderr == b""


def test_a_folder_without_checkpoints_is_one_line(tmp_path, capsys):
    assert main(["chat", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without best.json or last.json" in err


def test_generate_short_flags_and_special_prompt(run):
    a = sh(["generate", run, "-p", "[USER] what is 1 plus 2 [EOS]\\n[BOT]", "--special", "-n", "8",
            "-t", "0", "-s", "1"])
    b = sh(["generate", "--checkpoint", run, "--prompt", "[USER] what is 1 plus 2 [EOS]\n[BOT]",
            "--special", "--max-tokens", "8", "--temperature", "0", "--seed", "1"])
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and a.stdout.strip()


# ---- plot, inspect, prepare, export ---------------------------------------------------------------
def test_plot_svg_png_and_chart(run, tmp_path):
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"), encoding="utf-8")]
    svg = str(tmp_path / "curve.svg")
    r = sh(["plot", run, "--out", svg])
    assert r.returncode == 0, r.stderr
    assert ("wrote %s (%d evaluations)" % (svg, len(rows))).encode() in r.stdout
    root = ET.parse(svg).getroot()
    for poly in root.iter("{http://www.w3.org/2000/svg}polyline"):
        assert len(poly.get("points").split()) == len(rows) == 3
    chart = sh(["plot", run, "--width", "60"])
    assert chart.returncode == 0 and b"bits/char" in chart.stdout
    assert max(len(line) for line in chart.stdout.decode().splitlines()) <= 60
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        r = sh(["plot", run, "-o", str(tmp_path / "c.png")])
        assert r.returncode == 1 and b"shoestring[plot]" in r.stderr
    else:
        r = sh(["plot", run, "-o", str(tmp_path / "c.png")])
        assert r.returncode == 0, r.stderr
        assert open(str(tmp_path / "c.png"), "rb").read(4) == b"\x89PNG"


def test_inspect_json_parses(run, in_runs):
    r = sh(["inspect", "--json"], cwd=in_runs)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["file"] == "runs/20300101-000000/best.json"
    assert info["training"]["steps"] in (3, 6, 9) and info["parameters"] > 0
    text = sh(["inspect", os.path.join(run, "last.json")])
    assert text.returncode == 0 and b"special tokens  [USER] [BOT] [EOS] [PAD] [UNK]" in text.stdout


def test_prepare_end_to_end(tmp_path):
    src = tmp_path / "chats.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hi [EOS]"},
                                            {"role": "assistant", "content": "hello"}]}) + "\n"
                   "{broken\n", encoding="utf-8")
    out = tmp_path / "corpus.txt"
    r = sh(["prepare", str(src), "-o", str(out)])
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == "[USER] hi (EOS) [EOS]\n[BOT] hello [EOS]\n\n"
    err = r.stderr.decode()
    assert "%s:2: not valid JSON" % src in err
    assert "wrote 1 dialogues (2 turns" in err and "1 system message dropped" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n", encoding="utf-8")
    r = sh(["prepare", str(bad), "-o", str(tmp_path / "x.txt")])
    assert r.returncode == 1 and not (tmp_path / "x.txt").exists()
    lines = r.stderr.decode().strip().splitlines()
    assert lines[0].startswith("%s:1: expected 2 columns" % bad)
    assert lines[-1].startswith("shoestring: error: no usable dialogue")


def test_export_end_to_end(run, tmp_path):
    best = os.path.join(run, "best.json")
    out = str(tmp_path / "small")
    r = sh(["export", best, "--out", out])
    assert r.returncode == 0, r.stderr
    assert b"small.json" in r.stdout and b"% of best.json" in r.stdout
    script = b"what is 3 plus 4\nhello\n"
    a = sh(["chat", best, "-s", "7", "-n", "15"], stdin=script)
    b = sh(["chat", out + ".json", "-s", "7", "-n", "15"], stdin=script)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
    r = sh(["export", "-m", run, "--format", "safetensors", "-o", out])
    assert r.returncode == 0, r.stderr
    assert os.path.exists(out + ".safetensors") and os.path.exists(out + ".tokenizer.json")
    r = sh(["export", run], cwd=str(tmp_path))                 # default name: next to the source
    assert r.returncode == 0 and os.path.exists(os.path.join(run, "best.weights.json"))
    os.remove(os.path.join(run, "best.weights.json"))
