"""progress.py: the training progress display.

On a terminal it is a tqdm bar: it fits the terminal's width and follows resizing
(dynamic_ncols), redraws at most 10 times a second, works on dumb terminals (carriage returns
only) and Windows consoles, and falls back to ASCII where stderr cannot print the block
characters. In a pipe or a log file it is one plain line every 10 seconds (and at the end), so
logs stay readable. Messages (evaluations, samples) are printed above the bar.

tqdm is a small pure-Python dependency; where it is missing (a distribution package installed
without it) the terminal gets the plain lines too.
"""
import os
import re
import sys
import time

PLAIN_EVERY = 10.0          # seconds between plain lines in pipes and logs
MAX_REFRESH = 0.1           # seconds between redraws of the bar (at most 10 per second)
_NUM = r"[-+]?[\d.]+(?:[eE][-+]?\d+)?%?"
_FIELD = re.compile(r"[^\s\d][^\s,]* %s|%s [^\s,]+|[^\s,]+" % (_NUM, _NUM))


def fmt_seconds(s):
    s = int(s)
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) if s >= 3600 else "%d:%02d" % (s // 60, s % 60)


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """update(step, text) after each step, message(text) for a line of its own, close() at the
    end. `total` and `start_step` (the step this session started from, for the rate and the
    ETA) may be set after construction, before the first update."""

    def __init__(self, total, stream=None, quiet=False):
        self.stream = sys.stderr if stream is None else stream     # looked up now: redirects work
        self._bar = None
        self.total, self.quiet = total, quiet
        self.tty = _is_tty(self.stream)
        self.start_step = 0
        self.t0 = time.time()
        self.last = 0.0
        self._tqdm = _tqdm() if self.tty and not quiet else None

    @property
    def total(self):
        """The last step, or None while it is not known (a time budget before its plan)."""
        return self._total

    @total.setter
    def total(self, total):
        self._total = total
        if self._bar is not None:            # a plan made after the bar opened reaches it
            self._bar.total = total and max(1, total)
            self._bar.refresh()

    # -- the bar (terminal) ---------------------------------------------------------------------
    def _ascii(self):
        enc = (getattr(self.stream, "encoding", None) or "ascii").lower().replace("-", "")
        return enc not in ("utf8", "utf16", "utf32")

    def _open_bar(self, step):
        self._bar = self._tqdm(
            total=self.total and max(1, self.total), initial=step, file=self.stream,
            dynamic_ncols=True, mininterval=MAX_REFRESH, miniters=1, unit="step",
            ascii=self._ascii(), leave=True,
            bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}"
                       "{postfix}]")

    def _columns(self):
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            return 80

    def _fit(self, text):
        """As many leading fields of `text` ("loss 1.23", "456 tok/s") as fit beside a bar of
        at least 6 characters."""
        n = len(str(max(1, self.total or 10 ** 6)))
        # "100%|" bar(>= 6) "| " n "/" total " [" elapsed "<" remaining(<= 7 each) ", " text "]"
        room = self._columns() - 1 - (5 + 6 + 2 + 2 * n + 1 + 2 + 7 + 1 + 7 + 2 + 1)
        words, out = _FIELD.findall(text), ""
        for w in words:
            if len(out) + len(w) + (1 if out else 0) > room:
                break
            out += (" " if out else "") + w
        return out

    def _narrower(self, cols):
        """The terminal shrank: clear the line within the new width and stop tqdm padding its
        next line to the old length (those spaces would wrap)."""
        try:
            self._bar.sp = self._bar.status_printer(self._bar.fp)
        except AttributeError:
            return
        self.stream.write("\r" + " " * (cols - 1) + "\r")
        self.stream.flush()

    def update(self, step, text):
        if self.quiet:
            return
        if self._tqdm is not None:
            if self._bar is None:
                self._open_bar(self.start_step)
                self._cols = self._columns()
            cols = self._columns()
            if cols < self._cols:
                self._narrower(cols)
            self._cols = cols
            self._bar.set_postfix_str(self._fit(text), refresh=False)
            if step > self._bar.n:
                self._bar.update(step - self._bar.n)
            return
        now = time.time()
        if now - self.last < PLAIN_EVERY and (self.total is None or step < self.total):
            return
        self.last = now
        if self.total is None:
            self.stream.write("step %s %s\n" % (format(step, ","), text))
            self.stream.flush()
            return
        done = step - self.start_step
        rate = done / max(1e-9, now - self.t0)
        eta = (self.total - step) / rate if rate > 0 else 0
        self.stream.write("step %s/%s (%d%%) %s, eta %s\n"
                          % (format(step, ","), format(self.total, ","),
                             100 * step // max(1, self.total), text, fmt_seconds(eta)))
        self.stream.flush()

    def message(self, text):
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
