"""dataset.py: reading model data and cutting the token stream into (B, T) windows.

Model data is one or more UTF-8 files, or folders whose `.txt` files are read in sorted order.
MODEL.md §2: the token stream is cut into B contiguous streams; each step takes the next T tokens
of every stream; the stream boundaries move by a random offset each epoch (the stream is read as
a ring, so every epoch has the same number of windows and covers the whole corpus once).
"""
import os

import numpy as np

from .errors import DataError


def expand_paths(paths, what="model data"):
    """Files as given; a folder stands for its .txt files in sorted order."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p)
                           if f.endswith(".txt") and os.path.isfile(os.path.join(p, f)))
            if not found:
                raise DataError("%s folder %s has no .txt files (put UTF-8 text files ending "
                                "in .txt there)" % (what, p))
            out += found
        elif os.path.isfile(p):
            out.append(p)
        elif os.path.exists(p):
            raise DataError("%s %s is not a regular file (pass a text file or a folder)" % (what, p))
        else:
            raise DataError("%s file not found: %s (check the path)" % (what, p))
    return out


def read_text(path, encoding_errors="strict", what="model data"):
    """The file's text; a clear DataError for unreadable, binary, non-UTF-8 or empty files."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError("cannot read %s %s: %s" % (what, path, exc.strerror or exc))
    if b"\x00" in raw:
        raise DataError("%s %s looks binary (it contains NUL bytes; pass a UTF-8 text file)"
                        % (what, path))
    try:
        text = raw.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as exc:
        raise DataError("%s %s is not valid UTF-8 at byte offset %d (fix the file or pass "
                        "encoding_errors replace)" % (what, path, exc.start),
                        setting="encoding_errors")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def read_texts(paths, encoding_errors="strict", what="model data"):
    """[(path, text)] for the expanded paths; refuses an empty total."""
    files = expand_paths(paths, what)
    texts = [(p, read_text(p, encoding_errors, what)) for p in files]
    if not any(t.strip() for _, t in texts):
        raise DataError("%s is empty: %s (give a file with text in it)" % (what, ", ".join(files)))
    return texts


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
