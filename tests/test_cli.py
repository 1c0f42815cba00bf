"""The `shoestring` command itself: info, help, python -m, usage errors."""
import re
import subprocess
import sys

import pytest

from shoestring import __version__, kernels
from shoestring.cli import build_parser, main


def test_info_names_the_isa_in_use(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "shoestring %s" % __version__ in out
    m = re.search(r"instruction set in use: (\w+)", out)
    assert m and m.group(1) == kernels.isa_active()
    assert "compiled in:" in out and "supported by this CPU:" in out and "build:" in out


def test_python_dash_m_runs_the_same_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "shoestring", "info"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "instruction set in use: %s" % kernels.isa_active() in out.stdout


def test_forced_isa_that_is_unknown_is_one_clear_line(tmp_path):
    env = {"SHOESTRING_ISA": "sse9", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "shoestring", "info"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "sse9" in lines[0] and "Traceback" not in out.stderr


def test_train_help_lists_every_flag_with_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    text = sub.format_help()
    for action in sub._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        flag = action.option_strings[-1]
        assert flag in text, flag
        if action.nargs == 0:                  # on/off switches have no default to show
            continue
        assert action.help and "default" in action.help, flag


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["frobnicate"], ["train", "--no-such-flag"],
                                  ["chat", "--temperature", "hot"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "(see shoestring" in err    # one line, not the usage
