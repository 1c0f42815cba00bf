"""Bad input at the command line: every row of RELIABILITY.md's table is one test here.

The cases live in tests/reliability_cases.py (tools/make_reliability_table.py runs the same list
to write the table). Each must exit with its code and print one clear error line, never a
traceback. Most run in-process through cli.main (fast); a sample runs as a real subprocess with
a timeout, so a hang or a crash of the interpreter would also fail.
"""
import os
import subprocess

import pytest

import reliability_cases as rc_mod
from reliability_cases import CASES, check, expand, subprocess_argv
from shoestring.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return rc_mod.make_files(str(tmp_path_factory.mktemp("reliability")))


def run_inprocess(argv, capsys):
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.err, cap.out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_error_line(case, files, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)         # no runs/ folder here: a missing checkpoint stays missing
    files = dict(files, out=str(tmp_path / "out"))
    code, err, out = run_inprocess(expand(case[1], files), capsys)
    problem = check(case, code, err, out)
    assert problem is None, problem


SUBPROCESS = ["train --gru-hidden-size 65536 (terabytes)", "train --seq-length absurd",
              "train --checkpoint 1 TB shape", "train --checkpoint config of TBs",
              "train --checkpoint truncated at 50%", "train --model-data binary",
              "tokenizer --encode lone surrogate", "tokenizer --load deeply nested JSON",
              "chat --checkpoint 1 TB shape", "chat --checkpoint flipped byte",
              "generate --checkpoint deeply nested JSON", "generate --checkpoint truncated at 90%",
              "generate --max-tokens absurd"]


@pytest.mark.parametrize("cid", SUBPROCESS)
def test_bad_input_in_a_real_process(cid, files, tmp_path):
    """The same rows as separate processes: exit code, one line, no hang (timeout)."""
    case = next(c for c in CASES if c[0] == cid)
    files = dict(files, out=str(tmp_path / "out"))
    p = subprocess.run(subprocess_argv(expand(case[1], files)), capture_output=True, text=True,
                       errors="replace", timeout=120, cwd=str(tmp_path),
                       stdin=subprocess.DEVNULL)
    problem = check(case, p.returncode, p.stderr, p.stdout)
    assert problem is None, problem


def test_the_table_lists_every_case():
    """RELIABILITY.md's table is generated from CASES: regenerate it when the cases change."""
    path = os.path.join(os.path.dirname(HERE), "RELIABILITY.md")
    if not os.path.exists(path):
        pytest.skip("RELIABILITY.md is not next to the tests (installed elsewhere)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    rows = [l for l in text.splitlines() if l.startswith("| ") and not l.startswith("| case")]
    listed = [r.split(" | ")[0][2:].replace("\\|", "|") for r in rows if not r.startswith("|---")]
    assert listed == [c[0] for c in CASES], \
        "RELIABILITY.md is out of date: run python tools/make_reliability_table.py"


def test_sampling_settings_at_their_limits_from_python(files):
    """The Python API takes what the CLI bounds: a huge top_k is every token, not an overflow."""
    import shoestring
    from shoestring.errors import ShoestringError

    model = shoestring.load(files["ckpt"])
    a = model.generate("hello", max_tokens=8, top_k=10 ** 12, seed=3)
    b = model.generate("hello", max_tokens=8, top_k=0, seed=3)
    assert a == b                                  # top_k >= V keeps every token, like 0
    for bad in ({"top_k": -1}, {"temperature": float("nan")}, {"top_p": 0.0},
                {"max_tokens": -1}, {"seed": "x"}):
        with pytest.raises(ShoestringError):
            model.generate("hello", **dict({"max_tokens": 4, "seed": 1}, **bad))
