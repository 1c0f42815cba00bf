"""shoestring.progress: on a pseudo-terminal of a set width the bar never wraps (60 and 80
columns, long runs, long ETAs, a resize mid-run) and redraws at most about 10 times a second;
in a pipe it is a plain line every 10 seconds; quiet prints nothing."""
import io
import os
import re
import sys
import threading
import time

import pytest

from shoestring.progress import PLAIN_EVERY, Progress

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TEXT = "loss 1.2345 lr 1.00e-03 123456 tok/s"


class Pty:
    """A pseudo-terminal of a given width; .stream writes to it, .output() is what it showed."""

    def __init__(self, columns):
        import pty
        self.master, self.slave = pty.openpty()
        self.resize(columns)
        self.stream = io.TextIOWrapper(os.fdopen(self.slave, "wb", buffering=0), encoding="utf-8",
                                       write_through=True)
        self.buf = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def resize(self, columns):
        import fcntl
        import struct
        import termios
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.buf.extend(data)

    def output(self):
        time.sleep(0.2)
        return self.buf.decode("utf-8", "replace")

    def close(self):
        self.stream.close()
        os.close(self.master)


def segments(text):
    """What each carriage return or newline leaves on a line, escapes removed."""
    return [s for s in re.split(r"[\r\n]", ANSI.sub("", text)) if s.strip()]


@pytest.mark.parametrize("columns", [60, 80])
@pytest.mark.parametrize("total", [181, 12_000, 2_000_000])
def test_bar_never_wraps(columns, total):
    pytest.importorskip("tqdm")
    t = Pty(columns)
    try:
        p = Progress(0, stream=t.stream)
        p.total, p.start_step = total, total // 3
        for step in range(total // 3, total // 3 + 40):
            p.update(step, TEXT)
            if step == total // 3 + 20:
                p.message("evaluated")
            time.sleep(0.005)
        p.update(total, TEXT)
        p.close()
        segs = segments(t.output())
    finally:
        t.close()
    bars = [s for s in segs if "/%d" % total in s]
    assert len(bars) >= 2
    assert max(len(s) for s in bars) <= columns - 1, max(bars, key=len)
    assert "evaluated" in segs
    # the step count and ETA always show; the loss shows when there is room for it
    assert all(re.search(r"\d+/%d \[[\d:]+<[\d:?]+" % total, s) for s in bars)
    if columns == 80 or total < 10_000:
        assert any("loss 1.2345" in s for s in bars)


def test_bar_follows_a_resize():
    pytest.importorskip("tqdm")
    t = Pty(80)
    try:
        p = Progress(0, stream=t.stream)
        p.total = 500
        for step in range(1, 30):
            p.update(step, TEXT)
            time.sleep(0.02)
        before = len(t.output())
        t.resize(40)
        for step in range(30, 60):
            p.update(step, TEXT)
            time.sleep(0.02)
        p.close()
        after = segments(t.output()[before:])
    finally:
        t.close()
    bars = [s for s in after if "/500" in s]
    assert bars and max(len(s) for s in bars) <= 39


def test_redraws_at_most_about_ten_times_a_second():
    pytest.importorskip("tqdm")
    t = Pty(80)
    try:
        p = Progress(0, stream=t.stream)
        p.total = 10 ** 6
        t0 = time.time()
        for step in range(1, 20_001):
            p.update(step, TEXT)
        elapsed = time.time() - t0
        p.close()
        draws = len([s for s in segments(t.output()) if "/1000000" in s])
    finally:
        t.close()
    assert draws <= elapsed / 0.1 + 3


def test_plain_lines_in_a_pipe(monkeypatch):
    out = io.StringIO()
    p = Progress(0, stream=out)
    p.total = 100
    clock = [1000.0]
    monkeypatch.setattr("shoestring.progress.time.time", lambda: clock[0])
    p.t0 = clock[0]
    for step in range(1, 101):
        clock[0] += 0.5                     # 50 s in all: a line at 0.5 s, 10.5, ... and the end
        p.update(step, TEXT)
        if step == 30:
            p.message("evaluated")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    progress = [line for line in lines if line.startswith("step ")]
    assert len(progress) == int(50 / PLAIN_EVERY) + 1
    assert progress[-1].startswith("step 100/100 (100%) loss 1.2345")
    assert "evaluated" in lines


def test_a_total_planned_after_the_bar_opened_reaches_it():
    """A time budget's last step is known only once its plan is made, after the first steps:
    until then the bar shows no total, then the planned one (it once kept the placeholder of
    10**12 steps, 0% and an ETA of years, for the whole run). In a pipe, no total, no ETA."""
    t = Pty(80)
    try:
        p = Progress(None, stream=t.stream)
        p.update(1, TEXT)
        time.sleep(0.15)
        p.total = 400
        for step in range(2, 201):
            p.update(step, TEXT)
        time.sleep(0.15)
        p.update(201, TEXT)
        p.close()
        segs = segments(t.output())
    finally:
        t.close()
    assert any(re.search(r"\d/\?", s) for s in segs), segs
    assert re.search(r"\b50%\|.*\b201/400\b", segs[-1]), segs
    assert not any("1000000000000" in s for s in segs)
    out = io.StringIO()
    p = Progress(None, stream=out)
    p.update(1, TEXT)
    p.total = 2
    p.update(2, TEXT)
    assert out.getvalue().splitlines() == ["step 1 " + TEXT, "step 2/2 (100%%) %s, eta 0:00" % TEXT]


def test_quiet_prints_nothing():
    out = io.StringIO()
    p = Progress(10, stream=out, quiet=True)
    for step in range(11):
        p.update(step, TEXT)
    p.message("x")
    p.close()
    assert out.getvalue() == ""
