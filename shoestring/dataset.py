"""dataset.py: text files in and out, and the (B, T) windows training reads.

- The one text reader (`read_text_chunks`, and `read_text`/`read_texts` on top), used by the
  tokenizer and the training data alike: paths or folders (a folder stands for its .txt files in
  sorted order), read in chunks never splitting a character, UTF-8 with `encoding_errors`
  "strict" (an error naming the file and byte offset) or "replace" (U+FFFD), a leading BOM
  dropped, a file with a NUL byte refused as binary.
- The one atomic writer (`atomic_write_bytes`/`atomic_write_text`), used by checkpoints,
  tokenizer files and the metrics log: readers see the old file or the new one, never a mix.
- `Windows`: MODEL.md §2: the token stream is cut into B contiguous streams; each step takes the
  next T tokens of every stream; the stream boundaries move by a random offset each epoch (the
  stream is read as a ring, so every epoch has the same number of windows and covers the whole
  corpus once).
"""
import codecs
import os
import re
import stat
import time

import numpy as np

from .errors import CheckpointError, DataError
from .safeio import file_in_path, os_error_hint, why_missing

CHUNK_BYTES = 1 << 20               # text files are read this many bytes at a time


def expand_paths(paths, what="model data", error=DataError):
    """Files as given; a folder stands for its .txt files in sorted order."""
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            try:
                names = os.listdir(p)
            except OSError as exc:
                raise error("cannot list %s folder %s: %s (%s)"
                            % (what, p, exc.strerror or exc, os_error_hint(exc))) from None
            found = sorted(os.path.join(p, f) for f in names
                           if f.endswith(".txt") and os.path.isfile(os.path.join(p, f)))
            if not found:
                raise error("%s folder %s has no .txt files (put UTF-8 text files ending "
                            "in .txt there)" % (what, p))
            out += found
        elif os.path.isfile(p):
            out.append(p)
        elif os.path.exists(p):
            raise error("%s %s is not a regular file (pass a text file or a folder)" % (what, p))
        elif os.path.lexists(p):
            raise error("%s %s is %s (fix the link or pass the file itself)"
                        % (what, p, why_missing(p)))
        else:
            part = file_in_path(p)
            raise error("%s file not found: %s (%s)" % (
                what, p, "%s is a file, not a folder" % part if part else "check the path"))
    return out


def read_text_chunks(path, encoding_errors="strict", what="model data", error=DataError,
                     chunk_bytes=CHUNK_BYTES):
    """Yield the text of one UTF-8 file in pieces of about chunk_bytes, never splitting a
    character; `error` (an exception class) for an unreadable, binary or non-UTF-8 file."""
    if encoding_errors not in ("strict", "replace"):
        raise error("encoding_errors must be 'strict' or 'replace', got %r" % (encoding_errors,),
                    setting="encoding_errors")
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise error("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
    with f:
        dec = codecs.getincrementaldecoder("utf-8")(encoding_errors)
        base, first = 0, True          # base: file offset of the decoder's pending bytes
        while True:
            try:
                block = f.read(chunk_bytes)
            except OSError as exc:
                raise error("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
            if b"\x00" in block:
                raise error("%s %s looks binary (it contains NUL bytes; pass a UTF-8 text file)"
                            % (what, path))
            pending = dec.getstate()[0]
            try:
                text = dec.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                data = pending + block
                bad = ("a truncated character" if not block
                       else "byte 0x%02x" % data[exc.start])
                raise error("%s %s is not valid UTF-8: %s at byte offset %d (fix the file, or use "
                            "encoding_errors replace to read bad bytes as U+FFFD)"
                            % (what, path, bad, base - len(pending) + exc.start),
                            setting="encoding_errors") from None
            base += len(block)
            if first and text:
                text, first = (text[1:] if text.startswith("\ufeff") else text), False
            if text:
                yield text
            if not block:
                return


def read_text(path, encoding_errors="strict", what="model data", error=DataError):
    """The whole text of one file (see read_text_chunks)."""
    return "".join(read_text_chunks(path, encoding_errors, what, error))


def read_texts(paths, encoding_errors="strict", what="model data"):
    """[(path, text)] for the expanded paths; refuses an empty total."""
    files = expand_paths(paths, what)
    texts = [(p, read_text(p, encoding_errors, what)) for p in files]
    if not any(t.strip() for _, t in texts):
        raise DataError("%s is empty: %s (give a file with text in it)" % (what, ", ".join(files)))
    return texts


def _fsync_dir(dirname):
    """Make the rename durable: fsync the directory (POSIX); silently skipped where impossible."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(dirname, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _kind(mode):
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _existing_mode(path, what, error):
    """The permission bits of the regular file at path (None if there is none); `error` if
    something that is not a regular file is there: a writer never replaces a device node, a
    symbolic link, a pipe or a folder (#17: run as root, one replaced /dev/null)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error("could not write %s %s: %s (%s)" % (what, path, exc.strerror or exc,
                                                        os_error_hint(exc))) from None
    if not stat.S_ISREG(st.st_mode):
        raise error("refusing to write %s %s: it is %s, not a regular file (give the path of a "
                    "regular file)" % (what, path, _kind(st.st_mode)))
    return stat.S_IMODE(st.st_mode)


def atomic_write_bytes(path, data, what="file", error=CheckpointError):
    """Write `data` to `path` so that readers see the old file or the new one, never a mix.

    A temp file in the same directory is written, flushed to disk and renamed onto `path`. On
    OSError the previous file is untouched, the temp file is removed and `error` raised; on any
    other interruption (Ctrl-C) the temp file is removed and the exception propagates.
    Only a regular file (or nothing) at `path` is ever replaced: a symbolic link, device node,
    pipe or folder there is refused. A new file gets the usual permissions (0666 less the
    umask: 0644 under umask 022); a replaced one keeps its own. Temp files of this path left by
    a killed writer (whose process is gone) are removed first.
    """
    path = os.fspath(path)
    if not path:
        raise error("could not write %s: the path is empty (give a file name)" % what)
    dirname = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    mode = _existing_mode(path, what, error)
    remove_stale_temp_files(dirname, base)
    tmp = None
    try:
        for _ in range(100):
            tmp = os.path.join(dirname, ".%s.%d.%s.tmp" % (base, os.getpid(), os.urandom(4).hex()))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                             0o666)
                break
            except FileExistsError:
                tmp = None
        else:
            raise FileExistsError("could not create a unique temporary file in %s" % dirname)
        try:
            if mode is not None:
                os.chmod(tmp, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        _existing_mode(path, what, error)      # again, just before the rename
        os.replace(tmp, path)
        tmp = None
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            reason = e.strerror or str(e)
            raise error("could not write %s %s: %s (%s)"
                        % (what, path, reason, os_error_hint(e, "another folder"))) from e
        raise
    _fsync_dir(dirname)


_TMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


def remove_stale_temp_files(dirname, base=None):
    """Delete temp files that atomic_write_bytes left behind when its process was killed
    mid-write (SIGKILL, power loss): `.<name>.<pid>.<hex>.tmp` whose process no longer runs
    (on Windows, where a pid cannot be probed safely: older than a day); only those of `base`
    when given. Returns their names."""
    removed = []
    try:
        names = os.listdir(dirname)
    except OSError:
        return removed
    for name in names:
        m = _TMP_NAME.match(name)
        if not m or (base is not None and not name.startswith("." + base + ".")):
            continue
        if not stat.S_ISREG(_lstat_mode(os.path.join(dirname, name))):
            continue
        path = os.path.join(dirname, name)
        if os.name == "posix":
            try:
                os.kill(int(m.group(1)), 0)
                continue                      # its writer is alive: not ours to touch
            except ProcessLookupError:
                pass
            except (PermissionError, OverflowError, ValueError):
                continue
        else:
            try:
                if time.time() - os.path.getmtime(path) < 86400:
                    continue
            except OSError:
                continue
        try:
            os.unlink(path)
            removed.append(name)
        except OSError:
            pass
    return removed


def _lstat_mode(path):
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def atomic_write_text(path, text, what="file", error=CheckpointError):
    """atomic_write_bytes of `text` encoded as UTF-8 (encoded before anything is touched)."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error("could not write %s %s: the text cannot be encoded as UTF-8 (%s)"
                    % (what, os.fspath(path), e)) from e
    atomic_write_bytes(path, data, what=what, error=error)


class Windows:
    """(B, T) windows over a token array read as a ring of B streams of equal length."""

    def __init__(self, data, B, T, what="model data"):
        data = np.ascontiguousarray(data)       # any integer type: windows come out as int32
        if data.ndim != 1 or data.dtype.kind not in "iu":
            data = np.ascontiguousarray(data, dtype=np.int32)
        n = data.shape[0]
        if n < B * T + 1:
            raise DataError(
                "%s has %d tokens, fewer than one window of batch_size %d x seq_length %d + 1 "
                "(use more data or lower batch_size/seq_length)" % (what, n, B, T),
                setting=("batch_size", "seq_length"))
        self.data, self.n, self.B, self.T = data, n, B, T
        self.stream_len = (n - 1) // B          # tokens per stream per epoch
        self.count = self.stream_len // T       # windows per epoch

    def window(self, w, offset=0):
        """tokens, targets (B,T) int32 of window w (0 <= w < count), streams shifted by offset."""
        idx = (offset + np.arange(self.B)[:, None] * self.stream_len + w * self.T
               + np.arange(self.T)[None, :]) % self.n
        return (self.data[idx].astype(np.int32, copy=False),
                self.data[(idx + 1) % self.n].astype(np.int32, copy=False))

    def random_offset(self, rng):
        return int(rng.integers(0, self.n))
