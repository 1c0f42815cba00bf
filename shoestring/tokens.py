"""tokens.py: a corpus as a compact token array, encoded in a stream, cached beside the run.

    enc = encode_files(tok, ["big.txt"])          # Encoded(ids, chars, chat)
    enc.ids.dtype                                 # uint16 (vocabulary <= 65,535), else int32

- Streaming: each file is read in chunks (never splitting a UTF-8 character), re-cut at
  pre-token-safe points and encoded chunk by chunk straight into a growing array of the compact
  id type; no Python list of the whole corpus and no whole-file string ever exists. The ids are
  exactly those of encoding each file whole (`tok.encode_array(dataset.read_text(path))`),
  concatenated.
- Token cache (`tokens.bin` + `tokens.json` in the run's folder): the raw little-endian ids,
  and beside them the fingerprints they were made from (the tokenizer's merges and specials,
  every corpus file's path, size and SHA-256, the encoding_errors setting) and a CRC-32 of
  tokens.bin. A resume or a second run on the same data and tokenizer reads the cache instead of
  encoding; a stale cache (other data or tokenizer) is rebuilt; a damaged one (unreadable
  sidecar, wrong size, CRC mismatch, an id outside the vocabulary) is refused with one line
  naming the problem and rebuilt. Both files are written atomically, tokens.bin first, so a run
  killed between the two leaves a cache that is refused, never a wrong one that is used.
- Exact characters: `token_chars(tok)` counts the characters each id contributes (its UTF-8
  lead bytes), so the characters under any slice of ids are exact even where a token ends
  inside a character.
"""
import hashlib
import json
import os
import zlib
from collections import namedtuple

import numpy as np

from .dataset import (CHUNK_BYTES, atomic_write_bytes, atomic_write_text, expand_paths,
                      read_text_chunks)
from .errors import DataError
from .tokenizer import _pretoken_chunks

CACHE_FORMAT = "shoestring-tokens"
CACHE_VERSION = 1
CACHE_BIN, CACHE_META = "tokens.bin", "tokens.json"
_HASH_BLOCK = 1 << 20

Encoded = namedtuple("Encoded", "ids chars chat")
Encoded.__doc__ = """ids: the token array (id_dtype); chars: characters of the text encoded;
chat: whether the text holds a [USER] turn (the chat format of MODEL.md §4)."""


CHAT_MARKERS = ("[USER]", "[BOT]")


def is_chat_format(text):
    """Chat-format text (MODEL.md §4) holds a [USER] or [BOT] turn marker."""
    return any(m in text for m in CHAT_MARKERS)


def file_is_chat_format(path, encoding_errors="strict", what="data", chunk_bytes=CHUNK_BYTES):
    """is_chat_format of a whole file, read in chunks (a marker split between chunks counts)."""
    tail = ""
    for chunk in read_text_chunks(path, encoding_errors, what, DataError, chunk_bytes):
        text = tail + chunk
        if is_chat_format(text):
            return True
        tail = text[-(max(map(len, CHAT_MARKERS)) - 1):]
    return False


def id_dtype(vocab_size):
    """The compact id type: uint16 for a vocabulary of up to 65,535 ids, int32 above."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def check_texts(paths, encoding_errors="strict", what="model data"):
    """Read every file once in chunks (dataset.read_text_chunks): DataError for unreadable,
    binary or non-UTF-8 files, or when there is no text at all (only whitespace), before any
    work is spent on them. Holds no text. Returns the expanded file list."""
    files = expand_paths(paths, what)
    blank = True
    for p in files:
        for text in read_text_chunks(p, encoding_errors, what):
            blank = blank and text.isspace()
    if blank:
        raise DataError("%s is empty: %s (give a file with text in it)" % (what, ", ".join(files)))
    return files


class _Growing:
    """An id array that grows in place (realloc), so it never holds two copies of the corpus."""

    def __init__(self, dtype, capacity):
        self.a = np.empty(max(16, capacity), dtype)
        self.n = 0

    def extend(self, ids):
        k = len(ids)
        if self.n + k > self.a.shape[0]:
            self.a.resize(max(self.n + k, self.a.shape[0] * 3 // 2), refcheck=False)
        self.a[self.n:self.n + k] = ids
        self.n += k

    def take(self):
        self.a.resize(self.n, refcheck=False)
        return self.a


def encode_files(tok, paths, encoding_errors="strict", what="model data", limit=None,
                 chunk_bytes=CHUNK_BYTES, specials=True):
    """Encode text files (each a separate document) into one compact array.

    specials: True recognises special tokens everywhere (model data, as the model is trained);
    "chat" recognises them only in a file in the chat format and reads them as plain text
    elsewhere, the rule `shoestring eval` scores a file by (MODEL.md §7), used for validation
    data so that the two figures agree on the same file.
    limit: stop once at least `limit` ids exist (the array is cut to exactly `limit`, and chars
    counts the characters of the ids kept). Returns Encoded(ids, chars, chat).
    """
    files = expand_paths(paths, what)
    size = sum(os.path.getsize(p) for p in files)
    dtype = id_dtype(tok.vocab_size)
    # about 2.4 bytes per token at the default vocabulary; the array grows if that is too few
    out = _Growing(dtype, size // 2 + 1 if limit is None else min(size // 2 + 1, limit))
    user = tok.special_id("[USER]") if "[USER]" in tok.special_tokens else None
    chat = False
    for p in files:
        allow = specials is True or file_is_chat_format(p, encoding_errors, what, chunk_bytes)
        texts = read_text_chunks(p, encoding_errors, what, DataError, chunk_bytes)
        for chunk in _pretoken_chunks(texts):
            ids = tok.encode(chunk, allow_special=allow)
            chat = chat or (user is not None and user in ids)
            out.extend(ids)
            if limit is not None and out.n >= limit:
                break
        if limit is not None and out.n >= limit:
            break
    ids = out.take()
    if limit is not None and ids.shape[0] > limit:
        ids = ids[:limit].copy()
    return Encoded(ids, count_chars(tok, ids), chat)


def token_chars(tok):
    """(V,) int64: the characters each id contributes to a decoded text (its bytes that start a
    UTF-8 character; a special token counts its text). Summed over a slice of ids, the result is
    exactly the characters of that slice's text wherever the slice starts and ends."""
    cached = getattr(tok, "_token_chars", None)
    if cached is not None and cached.shape[0] == tok.vocab_size:
        return cached
    counts = np.zeros(tok.vocab_size, np.int64)
    for i in range(tok.vocab_size):
        counts[i] = sum(1 for b in tok.decode_bytes([i]) if b & 0xC0 != 0x80)
    tok._token_chars = counts
    return counts


def count_chars(tok, ids, block=1 << 20):
    """Exact characters of the text under ids (see token_chars), a block at a time."""
    table = token_chars(tok)
    return sum(int(table[ids[i:i + block]].sum()) for i in range(0, len(ids), block))


# ---- the token cache ------------------------------------------------------------------------------
def tokenizer_fingerprint(tok):
    d = tok.to_dict()
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode("utf-8")).hexdigest()


def file_fingerprints(files):
    """[{path, size, sha256}] of the corpus files (read in blocks)."""
    out = []
    for p in files:
        h = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(_HASH_BLOCK), b""):
                    h.update(block)
        except OSError as exc:
            raise DataError("cannot read %s: %s" % (p, exc.strerror or exc)) from None
        out.append({"path": os.path.abspath(p), "size": os.path.getsize(p), "sha256": h.hexdigest()})
    return out


def _crc(ids):
    return zlib.crc32(memoryview(np.ascontiguousarray(ids)).cast("B")) & 0xFFFFFFFF


def _read_cache(folder, tok, key):
    """The cached Encoded, None if absent or stale, or a string saying why it is damaged."""
    meta_path, bin_path = os.path.join(folder, CACHE_META), os.path.join(folder, CACHE_BIN)
    if not (os.path.exists(meta_path) or os.path.exists(bin_path)):
        return None
    try:
        with open(meta_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            return "%s is not a token cache description" % CACHE_META
        if meta.get("version") != CACHE_VERSION:
            return None                       # another version's cache: rebuilt like a stale one
        if any(meta.get(k) != v for k, v in key.items()):
            return None                       # stale: other data, tokenizer or settings
        dtype = np.dtype(meta["dtype"])
        count, chars, crc = meta["count"], meta["chars"], meta["crc32"]
        if dtype != id_dtype(tok.vocab_size) or not isinstance(count, int) or count < 0:
            return "%s describes %r ids of type %s" % (CACHE_META, count, dtype)
        size = os.path.getsize(bin_path)
        if size != count * dtype.itemsize:
            return "%s has %d bytes, expected %d" % (CACHE_BIN, size, count * dtype.itemsize)
        ids = np.fromfile(bin_path, dtype=dtype.newbyteorder("<"), count=count)
    except FileNotFoundError as exc:
        return "%s is missing" % os.path.basename(exc.filename or "")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return "%s (%s)" % (type(exc).__name__, str(exc)[:80])
    ids = ids.astype(dtype, copy=False)
    if _crc(ids) != crc:
        return "%s does not match its CRC-32" % CACHE_BIN
    if count and int(ids.max()) >= tok.vocab_size:
        return "%s holds id %d, outside the vocabulary of %d" % (CACHE_BIN, int(ids.max()),
                                                                tok.vocab_size)
    return Encoded(ids, int(chars), bool(meta.get("chat", False)))


def _write_cache(folder, key, enc):
    ids = enc.ids.astype(enc.ids.dtype.newbyteorder("<"), copy=False)
    atomic_write_bytes(os.path.join(folder, CACHE_BIN), memoryview(ids).cast("B"), "token cache")
    meta = dict(key, format=CACHE_FORMAT, version=CACHE_VERSION, dtype=enc.ids.dtype.name,
                count=int(enc.ids.shape[0]), chars=enc.chars, chat=enc.chat, crc32=_crc(ids))
    atomic_write_text(os.path.join(folder, CACHE_META),
                      json.dumps(meta, indent=1, sort_keys=True) + "\n", "token cache")


def cached_encode(tok, paths, encoding_errors="strict", folder=None, message=print,
                  what="model data"):
    """encode_files, through the token cache in `folder` (None: no cache).

    Returns (Encoded, how) with how "cache" (read from the cache) or "encoded"; `message` gets
    one line when a cache is rebuilt because it is damaged.
    """
    files = expand_paths(paths, what)
    if folder is None:
        return encode_files(tok, files, encoding_errors, what), "encoded"
    key = {"tokenizer": tokenizer_fingerprint(tok), "encoding_errors": encoding_errors,
           "files": file_fingerprints(files)}
    got = _read_cache(folder, tok, key)
    if isinstance(got, Encoded):
        return got, "cache"
    if isinstance(got, str):
        message("token cache in %s is damaged: %s; encoding the data again" % (folder, got))
    enc = encode_files(tok, files, encoding_errors, what)
    _write_cache(folder, key, enc)
    return enc, "encoded"
