"""safeio.py: output that can never stop a run, OS errors named truly, closed std streams.

- `SafeStream(stream)`: a text stream for progress and notes. A write or flush that fails
  (stderr piped into `head` that has exited, a closed terminal after SIGHUP, `2>/dev/full`,
  `2>&-`) silences the stream instead of raising: the display is lost, never the run.
- `os_error_hint(exc, where)`: the fix that matches an OSError (disk full: free space; permission
  denied: check permissions; read-only file system; ...), so a permission error never hints
  "free some disk space".
- `guard_std_streams()`: standard streams closed at start (`>&-`, `<&-`, `2>&-`) become the null
  device, so nothing later trips over a missing sys.stdout.
"""
import errno
import os
import sys
import threading


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
        return "check that the folder exists, or choose %s" % where
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


_DONE = []       # set once the command has ended: a signal is no longer sent again
_PENDING = []    # stop signals raised that have not (yet) ended the command: take_pending_stop
_TAKE = threading.Lock()   # one taker of a pending signal: the training loop or the redelivery


class Terminated(BaseException):
    """SIGTERM or SIGHUP outside the training loop: unwinds like Ctrl-C does (so a file being
    written is cleaned up by its writer), and the command exits 128 + the signal number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def take_pending_stop():
    """The stop signal (SIGTERM or SIGHUP; SIGINT only when dropped in a finaliser) whose
    exception was raised during start-up but never ended the command (something on the way
    swallowed it), or None; taking it clears it.
    The training loop calls this when it installs its own handlers and stops at once, saved, as
    if the signal had arrived then; the command line calls it when a command returns (#17)."""
    with _TAKE:
        sig = _PENDING[-1] if _PENDING else None
        del _PENDING[:]
    return sig


def raise_on_termination():
    """Make SIGTERM and SIGHUP raise Terminated in the main thread; returns a function that puts
    the previous handlers back. (The training loop installs its own, which finish the step and
    save, and restores these afterwards.)

    A signal the parent set to be ignored stays ignored (`nohup shoestring train ...` survives
    its terminal closing). Every Terminated raised is also recorded until the command ends
    (take_pending_stop), so code that swallows the exception cannot lose the signal (Ctrl-C
    keeps Python's KeyboardInterrupt, unrecorded: chat and serve catch it on purpose). A
    Terminated raised while Python runs a finaliser (a generator's close, a __del__) is
    dropped by Python itself ("Exception ignored in ..."); the sys.unraisablehook installed
    here catches that case (and Ctrl-C's KeyboardInterrupt dropped the same way) and sends
    the signal again a few milliseconds later, outside the finaliser, unless the training loop
    has taken it by then, so a signal is never lost (#17)."""
    import signal
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        _PENDING.append(signum)
        raise Terminated(signum)

    def redeliver(signum):
        with _TAKE:
            if _DONE or signum not in _PENDING:   # ended, or the training loop took it
                return
            del _PENDING[:]
        os.kill(os.getpid(), signum)

    def unraisable(u, default=sys.unraisablehook):
        # swallowed in a finaliser: again (Ctrl-C's KeyboardInterrupt too)
        if isinstance(u.exc_value, (Terminated, KeyboardInterrupt)):
            signum = getattr(u.exc_value, "signum", signal.SIGINT)
            if signum not in _PENDING:
                _PENDING.append(signum)
            t = threading.Timer(0.005, redeliver, (signum,))
            t.daemon = True
            t.start()
            return
        default(u)

    prev = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:   # nohup, or a parent that means it
                continue
            prev[sig] = signal.signal(sig, handler)
        except (OSError, ValueError):
            pass
    prev_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    del _DONE[:]
    del _PENDING[:]

    def restore():
        _DONE.append(True)
        del _PENDING[:]
        sys.unraisablehook = prev_hook
        for sig, h in prev.items():
            try:
                signal.signal(sig, h)
            except (OSError, ValueError, TypeError):
                pass
    return restore


def file_in_path(path):
    """The leading part of path that is a file where a folder must be (`a.txt` of `a.txt/b`),
    or None: what makes such a path "not found" (ENOTDIR)."""
    parts = os.path.normpath(os.fspath(path)).split(os.sep)
    for k in range(1, len(parts)):
        head = os.sep.join(parts[:k]) or os.sep
        if os.path.lexists(head) and not os.path.isdir(head):
            return head
    return None


def why_missing(path):
    """Why os.path.exists(path) is False, in words: "not found", or the symbolic link problem
    (a loop, or a link to nothing) -- never "not found" for a path that is there."""
    if not os.path.lexists(path):
        return "not found"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if exc.errno == errno.ENOENT:
            try:
                return "a symbolic link to %s, which does not exist" % os.readlink(path)
            except OSError:
                return "a broken symbolic link"
        return os_error_text(exc)
    return "not found"
