"""safeio.py: output that can never stop a run, logs appended whole, OS errors named truly.

- `SafeStream(stream)`: a text stream for progress and notes. A write or flush that fails
  (stderr piped into `head` that has exited, a closed terminal after SIGHUP, `2>/dev/full`,
  `2>&-`) silences the stream instead of raising: the display is lost, never the run.
- `append_line(path, line)`: append one line to a log (metrics.jsonl) whole or not at all. A
  partial last line left by a crash or a full disk is cut off first, so a new record never glues
  onto it; a failed write is undone (the file is truncated back to where it was).
- `os_error_hint(exc, where)`: the fix that matches an OSError (disk full: free space; permission
  denied: check permissions; read-only file system; ...), so a permission error never hints
  "free some disk space".
- `guard_std_streams()`: standard streams closed at start (`>&-`, `<&-`, `2>&-`) become the null
  device, so nothing later trips over a missing sys.stdout.
"""
import errno
import os
import sys


class SafeStream:
    """Wraps a text stream; after the first failed write or flush it discards everything."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = stream is None

    def write(self, text):
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except (OSError, ValueError):      # ValueError: the stream was closed
            self.broken = True
            return len(text)

    def flush(self):
        if self.broken:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self.broken = True

    def isatty(self):
        if self.broken:
            return False
        try:
            return self._stream.isatty()
        except (AttributeError, OSError, ValueError):
            return False

    def fileno(self):
        if self._stream is None:
            raise OSError(errno.EBADF, "no stream")
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", None) or "utf-8"

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _tail_newline(fd, size):
    """Offset just after the last newline in the first `size` bytes of fd (0 if none)."""
    pos = size
    while pos > 0:
        n = min(65536, pos)
        block = os.pread(fd, n, pos - n)
        k = block.rfind(b"\n")
        if k >= 0:
            return pos - n + k + 1
        pos -= n
    return 0


def append_line(path, line):
    """Append `line` (a str without newline) plus a newline to `path`, whole or not at all.

    A last line without its newline (a crash or a full disk mid-write) is cut off before the
    append. On OSError the file is truncated back to its size before this call and the OSError
    propagates."""
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            size = _tail_newline(fd, size)
            os.ftruncate(fd, size)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except BaseException:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
_PERMISSION = (errno.EACCES, errno.EPERM)


def os_error_hint(exc, where="another folder"):
    """The fix for an OSError, in words: `where` names the alternative (e.g. "--out-dir")."""
    code = getattr(exc, "errno", None)
    if code in _SPACE:
        return "free some disk space or choose %s" % where
    if code in _PERMISSION:
        return "check the permissions of the file and its folder, or choose %s" % where
    if code == errno.EROFS:
        return "the file system is read-only; choose %s" % where
    if code == errno.ELOOP:
        return "the path is a symbolic link loop; fix the link"
    if code == errno.ENOENT:
        return "check that the folder exists"
    if code in (errno.EISDIR, errno.ENOTDIR):
        return "check the path"
    return "choose %s" % where


def os_error_text(exc):
    """The OS's words for exc ("No space left on device")."""
    return exc.strerror or str(exc)


def guard_std_streams():
    """Give closed standard streams (fd 0, 1 or 2 closed at start: sys.std* is None) the null
    device, so writes and reads work (and go nowhere) instead of raising AttributeError."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            try:
                setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))
            except OSError:
                pass
