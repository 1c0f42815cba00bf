"""tokenizer.py: byte-level BPE (MODEL.md §3): train from a corpus, encode, decode, stream, save.

Contract
- Ids: the special tokens first (default `[USER] [BOT] [EOS] [PAD] [UNK]` at 0-4), then one token
  per byte value (ids 5..260 for bytes 0..255), then one token per merge, in training order.
- Lossless: `decode(encode(s)) == s` for every string that has a UTF-8 form. Characters never
  seen in training fall back to their bytes, so no input ever yields `[UNK]`. A string holding
  a lone surrogate (U+D800..U+DFFF, which UTF-8 cannot represent) raises TokenizerError.
- Special tokens are recognised anywhere in the text (`hi[EOS]` is `hi` + `[EOS]`) when
  `allow_special=True`; with `allow_special=False` their text is ordinary text, so ids below
  `len(special_tokens)` never come from text (what chat input uses: a user cannot forge a turn).
- Deterministic: training depends only on the corpus, the vocabulary size and the specials.

Pre-tokenisation (merges never cross a pre-token boundary). Left to right, the first rule that
matches at the current position wins:
  1. a special token (longest first; only when specials are allowed);
  2. a word: an optional leading space, letters, and more letters after inner apostrophes
     (`' don't`, `we'll`, `o'er`); letters are `[^\\W\\d_]` (str.isalnum and not a digit);
  3. a digit run with an optional leading space (`\\d` is str.isdecimal);
  4. a punctuation run with an optional leading space: anything that is not a letter, a digit
     or whitespace (`_`, symbols, emoji and combining marks included); in special mode a run
     stops where a special token starts;
  5. whitespace: a run that is not followed by a non-space, else a run without its last
     character (so `"a   b"` is `a`, `"  "`, `" b"`: the last space goes with the next word).
Special tokens must therefore start with a punctuation character other than an apostrophe and
contain no whitespace (checked); then a piece never straddles a point where whitespace follows
a non-space character, which is where training and `encode_array` cut long texts into chunks.
`pretokenize_reference` spells these rules out character by character (the tests' slow twin).

Training counts every distinct pre-token once, streaming files in chunks (a UTF-8 character
or a pre-token split by a chunk boundary is carried over), then merges pairs with incremental
pair-count updates, so one merge costs time proportional to the distinct pre-tokens holding the
pair, not to the corpus. Pairs are counted at every position (in `aaa`, (a, a) counts twice).
Tie-break: the highest count first, then the lexicographically smallest pair of byte strings,
then the smallest pair of ids. Training stops early only when no adjacent pair is left.
"""
import codecs
import heapq
import json
import os
import re
import stat
import time
from collections import Counter
from itertools import chain

import numpy as np

from .dataset import CHUNK_BYTES, atomic_write_text, expand_paths, read_text_chunks
from .errors import TokenizerError
from .safeio import file_in_path, why_missing

SPECIALS = ("[USER]", "[BOT]", "[EOS]", "[PAD]", "[UNK]")
FORMAT = "shoestring-bpe"
VERSION = 1
PRETOKENIZER = "shoestring-2"        # names the rules above; a change of rules gets a new name
# shoestring-2 bounds every run of one class in a pre-token to MAX_RUN characters (and a word to
# MAX_APOS inner apostrophes), so a 2 MB line without spaces or a page of Chinese costs training
# and encoding linear time (#17); shoestring-1 (unbounded) tokenizers still load and encode as
# they were trained.
PRETOKENIZERS = ("shoestring-1", "shoestring-2")
MAX_RUN = 64
MAX_APOS = 4

_MAX_LOAD_BYTES = 2 * 1024 ** 3     # Tokenizer.load: no tokenizer or checkpoint is larger
_SNIFF_ABOVE = 16 << 20             # larger files must start like a JSON object to be read
_ENCODE_CHUNK_CHARS = 1 << 20        # encode_array pre-tokenises texts this long at a time
_CACHE_MAX = 1 << 18                 # pre-token cache entries before the cache is cleared

# ---- pre-tokenisation -------------------------------------------------------------------------
_L = r"[^\W\d_]"                     # a letter
_P = r"(?:[^\s\w]|_)"                # punctuation: not a letter, digit or whitespace
_APOS = "'\u2019"                    # apostrophes allowed inside words


def _rules(bounded):
    """(word, digits, punctuation run atom quantifier, space) of the pre-token regex."""
    q = "{1,%d}" % MAX_RUN if bounded else "+"
    word = r" ?%s%s(?:[%s]%s%s)%s" % (_L, q, _APOS, _L, q, "{0,%d}" % MAX_APOS if bounded else "*")
    return word, r" ?\d" + q, q, r"\s%s(?!\S)|\s%s" % (q, q)


def _plain(bounded):
    word, digits, q, space = _rules(bounded)
    return re.compile("|".join([word, digits, r" ?%s%s" % (_P, q), space]))


_PLAIN_RE = _plain(True)
_PLAIN_RE_1 = _plain(False)


def _special_alternation(specials):
    return "|".join(re.escape(s) for s in sorted(specials, key=lambda s: (-len(s), s)))


def _compile_pattern(specials, bounded=True):
    """The pre-token regex with special tokens recognised (rule 1, and rule 4 stops before one)."""
    if not specials:
        return _PLAIN_RE if bounded else _PLAIN_RE_1
    word, digits, q, space = _rules(bounded)
    alt = _special_alternation(specials)
    punct = r" ?(?:(?!%s)%s)%s" % (alt, _P, q)
    return re.compile("|".join(["(?:%s)" % alt, word, digits, punct, space]))


def _char_class(c):
    """'S' whitespace, 'D' digit, 'L' letter, 'P' anything else: the classes of the regex."""
    if c.isspace():
        return "S"
    if c.isdecimal():
        return "D"
    if c.isalnum():
        return "L"
    return "P"


def pretokenize_reference(text, specials=(), bounded=True):
    """The pre-tokenisation rules of the module docstring, one character at a time (slow twin);
    bounded: shoestring-2's caps (MAX_RUN characters per run, MAX_APOS apostrophes)."""
    cap = MAX_RUN if bounded else len(text) + 1
    apos = MAX_APOS if bounded else len(text) + 1
    specs = sorted(specials, key=lambda s: (-len(s), s))
    n = len(text)
    cls = [_char_class(c) for c in text]

    def special_at(j):
        for s in specs:
            if text.startswith(s, j):
                return s
        return None

    out, i = [], 0
    while i < n:
        s = special_at(i)
        if s is not None:
            out.append(s)
            i += len(s)
            continue
        j = i
        # An optional leading space joins a word, digit run or punctuation run that follows it.
        if text[i] == " " and i + 1 < n and cls[i + 1] != "S" and special_at(i + 1) is None:
            j = i + 1
        c = cls[j]
        k = j + 1
        if c == "L":
            seg, joins = j, 0
            while True:
                while k < n and cls[k] == "L" and k - seg < cap:
                    k += 1
                if joins < apos and k + 1 < n and text[k] in _APOS and cls[k + 1] == "L":
                    seg, joins = k + 1, joins + 1
                    k += 2
                    continue
                break
        elif c == "D":
            while k < n and cls[k] == "D" and k - j < cap:
                k += 1
        elif c == "P":
            while k < n and cls[k] == "P" and special_at(k) is None and k - j < cap:
                k += 1
        else:  # whitespace: leave the last one of a run for the word that follows
            while k < n and cls[k] == "S" and k - i < cap:
                k += 1
            if k < n and cls[k] != "S" and k - i > 1:
                k -= 1
        out.append(text[i:k])
        i = k
    return out


def _safe_cut(text):
    """An index 0 < p <= len(text) where text[:p] and text[p:] pre-tokenise independently, or 0.

    p follows a non-space character and precedes whitespace: no piece straddles it (specials
    hold no whitespace) and nothing before it looks ahead past it.
    """
    k = max(text.rfind("\n"), text.rfind(" "))
    if k < 0:
        k = -1
        for m in re.finditer(r"\s", text):
            k = m.start()
    if k <= 0:
        return 0
    return len(text[:k].rstrip())


def _check_specials(specials):
    if isinstance(specials, str) or not isinstance(specials, (list, tuple)):
        raise TokenizerError("special tokens must be a list of strings, got %r" % (specials,))
    specials = tuple(specials)
    for s in specials:
        if not isinstance(s, str) or not s:
            raise TokenizerError("special token %r is not a non-empty string" % (s,))
        if _char_class(s[0]) != "P" or s[0] in _APOS:
            raise TokenizerError("special token %r must start with punctuation other than an "
                                 "apostrophe (like [EOS])" % s)
        if any(c.isspace() for c in s):
            raise TokenizerError("special token %r must not contain whitespace" % s)
        if len(s) > 64:
            raise TokenizerError("special token %r is longer than 64 characters" % s)
    if len(set(specials)) != len(specials):
        raise TokenizerError("special tokens %r contain a duplicate" % (specials,))
    return specials


def _check_merges(merges, n_special):
    """merges as a list of (a, b) tuples; each id must be a byte or an earlier merge."""
    out, seen = [], set()
    nid = n_special + 256
    for k, m in enumerate(merges):
        if (not isinstance(m, (list, tuple, np.ndarray)) or len(m) != 2
                or any(isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer))
                       for x in m)):
            raise TokenizerError("merges[%d] is %r, not a pair of integer ids" % (k, m))
        a, b = int(m[0]), int(m[1])
        for x in (a, b):
            if not n_special <= x < nid:
                raise TokenizerError("merges[%d] = %r uses id %d; only ids %d..%d exist at that "
                                     "point (special tokens are never merged)"
                                     % (k, [a, b], x, n_special, nid - 1))
        if (a, b) in seen:
            raise TokenizerError("merges[%d] = %r repeats an earlier merge" % (k, [a, b]))
        seen.add((a, b))
        out.append((a, b))
        nid += 1
    return out


def _utf8(piece, text=None):
    """piece as UTF-8 bytes; a lone surrogate raises TokenizerError (naming its index in text)."""
    try:
        return piece.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = piece[e.start]
        where = "" if text is None else " at index %d" % text.find(ch)
        raise TokenizerError(
            "text holds a lone surrogate U+%04X%s, which has no UTF-8 form "
            "(remove it, or clean the text with .encode('utf-8', 'replace').decode())"
            % (ord(ch), where)) from None


# ---- reading a corpus -------------------------------------------------------------------------
def _utf8_cut(buf):
    """Length of the longest prefix of buf that does not end inside a UTF-8 character."""
    n = len(buf)
    for i in range(n - 1, max(n - 4, -1), -1):
        b = buf[i]
        if b < 0x80:
            return n
        if b >= 0xC0:  # a lead byte: keep its character whole if it is complete
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n if i + need <= n else i
    return n


def _check_errors(encoding_errors):
    if encoding_errors not in ("strict", "replace"):
        raise TokenizerError("encoding_errors must be 'strict' or 'replace', got %r"
                             % (encoding_errors,))


def _pretoken_chunks(texts):
    """Re-cut a stream of text pieces of one document at pre-token-safe points (see _safe_cut)."""
    carry = ""
    for t in texts:
        carry += t
        p = _safe_cut(carry)
        if p:
            yield carry[:p]
            carry = carry[p:]
    if carry:
        yield carry


# ---- the tokenizer ----------------------------------------------------------------------------
class Tokenizer:
    """Byte-level BPE. Build with Tokenizer.train(...), Tokenizer.from_dict(d) or Tokenizer.load."""

    SPECIALS = SPECIALS

    def __init__(self, merges=(), special_tokens=SPECIALS, pretokenizer=PRETOKENIZER):
        specials = _check_specials(special_tokens)
        off = len(specials)
        merges = _check_merges(merges, off)
        pieces = [s.encode("utf-8") for s in specials] + [bytes([b]) for b in range(256)]
        ranks = {}
        for a, b in merges:
            ranks[(a, b)] = len(pieces)
            pieces.append(pieces[a] + pieces[b])
        self.special_tokens = specials
        self.merges = merges                  # [(a, b)]: merge i makes id off + 256 + i
        self._off = off                       # id of byte 0
        self._bytes = pieces                  # (V,) the bytes of every id
        self._ranks = ranks                   # (a, b) -> merged id (rank order == id order)
        self._special_ids = {s: i for i, s in enumerate(specials)}
        if pretokenizer not in PRETOKENIZERS:
            raise TokenizerError("pre-tokenizer %r is unknown (this shoestring knows %s)"
                                 % (pretokenizer, ", ".join(PRETOKENIZERS)))
        self.pretokenizer = pretokenizer
        bounded = pretokenizer != "shoestring-1"
        self._pat_special = _compile_pattern(specials, bounded)
        self._pat_plain = _PLAIN_RE if bounded else _PLAIN_RE_1
        self._seed_caches()
        self.stats = None                     # training figures, set by train()

    def _seed_caches(self):
        self._cache_plain = {}
        self._cache_special = {s: (i,) for s, i in self._special_ids.items()}

    # -- properties -------------------------------------------------------------------------
    @property
    def vocab_size(self):
        return len(self._bytes)

    def special_id(self, name):
        """Id of a special token, by its text (`[EOS]`) or its bare name (`EOS`)."""
        i = self._special_ids.get(name)
        if i is None:
            i = self._special_ids.get("[%s]" % name)
        if i is None:
            raise TokenizerError("unknown special token %r (this tokenizer has %s)"
                                 % (name, ", ".join(self.special_tokens) or "none"))
        return i

    def is_special(self, token_id):
        return 0 <= token_id < self._off

    def id_to_bytes(self, token_id):
        """The bytes of one token (export writes them as the HF tokenizer's vocabulary)."""
        self._check_id(token_id)
        return self._bytes[token_id]

    def id_to_piece(self, token_id):
        """A readable form of one token: its text, with control characters and backslash escaped
        (`\\n`, `\\t`, `\\x1b`, `\\\\`) and bytes that are not whole UTF-8 characters as `<0xE2>`."""
        self._check_id(token_id)
        if token_id < self._off:
            return self.special_tokens[token_id]
        out = []
        for ch in self._bytes[token_id].decode("utf-8", "surrogateescape"):
            o = ord(ch)
            if 0xDC80 <= o <= 0xDCFF:
                out.append("<0x%02X>" % (o - 0xDC00))
            elif ch == "\\":
                out.append("\\\\")
            elif ch.isprintable() or ch == " ":
                out.append(ch)
            else:
                out.append(repr(ch)[1:-1])
        return "".join(out)

    def _check_id(self, token_id):
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise TokenizerError("token id must be an integer, got %r" % (token_id,))
        if not 0 <= token_id < len(self._bytes):
            raise TokenizerError("token id %d is outside the vocabulary [0, %d)"
                                 % (token_id, len(self._bytes)))

    # -- encoding ---------------------------------------------------------------------------
    def pretokenize(self, text, allow_special=True):
        """The pre-tokens of text (see the module docstring); they concatenate back to text."""
        pat = self._pat_special if allow_special else self._pat_plain
        return pat.findall(text)

    def _bpe(self, data):
        """Token ids of one pre-token's bytes: apply the lowest-ranked merge until none applies."""
        off, ranks = self._off, self._ranks
        ids = [off + b for b in data]
        while len(ids) > 1:
            best = None
            for p in zip(ids, ids[1:]):
                r = ranks.get(p)
                if r is not None and (best is None or r < best):
                    best, pair = r, p
            if best is None:
                break
            a, b = pair
            out, i, n = [], 0, len(ids)
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(best)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return tuple(ids)

    def _fill(self, pieces, cache, text):
        """Add every piece missing from cache; clear the cache first when it has grown too big."""
        if len(cache) > _CACHE_MAX:
            cache.clear()
            cache.update({s: (i,) for s, i in self._special_ids.items()}
                         if cache is self._cache_special else {})
        for p in set(pieces).difference(cache):
            cache[p] = self._bpe(_utf8(p, text))

    def _encode_iter(self, text, allow_special):
        if not isinstance(text, str):
            raise TokenizerError("can only encode str, got %s" % type(text).__name__)
        if allow_special:
            pat, cache = self._pat_special, self._cache_special
        else:
            pat, cache = self._pat_plain, self._cache_plain
        pieces = pat.findall(text)
        get = cache.__getitem__
        try:
            return list(chain.from_iterable(map(get, pieces)))
        except KeyError:
            self._fill(pieces, cache, text)
            return list(chain.from_iterable(map(cache.__getitem__, pieces)))

    def encode(self, text, allow_special=True):
        """Token ids of text (list of int). allow_special=False: special-token text is plain text."""
        return self._encode_iter(text, allow_special)

    def encode_array(self, text, allow_special=True):
        """Token ids of text as an int32 array; long texts are processed 1 M characters at a time."""
        if not isinstance(text, str):
            raise TokenizerError("can only encode str, got %s" % type(text).__name__)
        if len(text) <= _ENCODE_CHUNK_CHARS:
            return np.array(self._encode_iter(text, allow_special), dtype=np.int32)
        parts = [np.array(self._encode_iter(t, allow_special), dtype=np.int32)
                 for t in _pretoken_chunks(text[i:i + _ENCODE_CHUNK_CHARS]
                                           for i in range(0, len(text), _ENCODE_CHUNK_CHARS))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def encode_slow(self, text, allow_special=True):
        """Slow twin of encode: reference pre-tokeniser, every merge applied in order, no cache."""
        out = []
        specials = self.special_tokens if allow_special else ()
        for piece in pretokenize_reference(text, specials, self.pretokenizer != "shoestring-1"):
            if piece in specials:
                out.append(self._special_ids[piece])
                continue
            ids = [self._off + b for b in _utf8(piece, text)]
            for k, (a, b) in enumerate(self.merges):
                new, i, merged = self._off + 256 + k, 0, []
                while i < len(ids):
                    if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                        merged.append(new)
                        i += 2
                    else:
                        merged.append(ids[i])
                        i += 1
                ids = merged
            out.extend(ids)
        return out

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, ids):
        """Text of token ids; bytes that do not form whole UTF-8 characters become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", "replace")

    def decode_bytes(self, ids):
        """The raw bytes of token ids (specials as their text)."""
        V = len(self._bytes)
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or ids.dtype.kind not in "iu":
                raise TokenizerError("token ids must be a 1-D integer array, got %s %s"
                                     % (ids.dtype, ids.shape))
            if ids.size and (ids.min() < 0 or ids.max() >= V):
                bad = ids[(ids < 0) | (ids >= V)][0]
                raise TokenizerError("token id %d is outside the vocabulary [0, %d)" % (bad, V))
            ids = ids.tolist()
        else:
            ids = list(ids)
            bad = next((i for i in ids if not isinstance(i, (int, np.integer))), None)
            if bad is not None:     # e.g. a float: -inf cannot even be formatted with %d
                raise TokenizerError("token ids must be integers, got %r" % (bad,))
            if ids and min(ids) < 0:
                raise TokenizerError("token id %d is outside the vocabulary [0, %d)"
                                     % (min(ids), V))
        try:
            return b"".join(map(self._bytes.__getitem__, ids))
        except IndexError:
            bad = next((i for i in ids if isinstance(i, (int, np.integer)) and not 0 <= i < V), "?")
            raise TokenizerError("token id %s is outside the vocabulary [0, %d)" % (bad, V)) from None
        except TypeError:
            bad = next(i for i in ids if not isinstance(i, (int, np.integer)))
            raise TokenizerError("token ids must be integers, got %r" % (bad,)) from None

    def stream_decoder(self):
        """A StreamDecoder: feed ids one at a time, get text only in whole characters."""
        return StreamDecoder(self)

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def train(cls, paths=None, texts=None, vocab_size=850, special_tokens=SPECIALS,
              encoding_errors="strict", chunk_bytes=CHUNK_BYTES):
        """Train on text files (paths) and/or strings (texts), each one a separate document.

        Files are read chunk_bytes at a time, so the corpus never has to fit in memory; only the
        distinct pre-tokens and their counts do. Special tokens in the data are recognised and
        never merged. Returns a Tokenizer of vocab_size tokens (fewer if the corpus runs out of
        pairs); its .stats holds the training figures.
        """
        t0 = time.perf_counter()
        specials = _check_specials(special_tokens)
        n_base = len(specials) + 256
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
            raise TokenizerError("vocabulary size must be a whole number, got %r" % (vocab_size,))
        if vocab_size < n_base:
            raise TokenizerError(
                "vocabulary size %d is too small: the %d special tokens and 256 byte tokens need "
                "%d (use a vocabulary of %d or more)" % (vocab_size, len(specials), n_base, n_base))
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        if isinstance(texts, str):
            texts = [texts]
        if paths is None and texts is None:
            raise TokenizerError("no tokenizer training data given (pass text files as paths)")
        paths = [] if paths is None else list(paths)
        _check_errors(encoding_errors)
        names = expand_paths(paths, "tokenizer data", TokenizerError)   # fail before reading

        pat = _compile_pattern(specials)
        counts = Counter()
        for name in names:
            chunks = read_text_chunks(name, encoding_errors, "tokenizer data", TokenizerError,
                                      chunk_bytes)
            for chunk in _pretoken_chunks(chunks):
                counts.update(pat.findall(chunk))
        for t in texts or ():
            if not isinstance(t, str):
                raise TokenizerError("training texts must be str, got %s" % type(t).__name__)
            counts.update(pat.findall(t))
        special_counts = [counts.pop(s, 0) for s in specials]
        n_special = sum(special_counts)
        n_bytes = sum(len(s.encode("utf-8")) * c for s, c in zip(specials, special_counts))

        # Distinct pre-tokens as byte-id lists with their counts.
        off = len(specials)
        words, wcounts = [], []
        for piece, c in counts.items():
            data = _utf8(piece)
            n_bytes += len(data) * c
            words.append([off + b for b in data])
            wcounts.append(c)
        if not words:
            where = ", ".join(names) if names else "the given texts"
            raise TokenizerError("no text to train the tokenizer on: %s %s empty (give a file "
                                 "with text in it)" % (where, "is" if len(names) == 1 else "are"))
        merges = _learn_merges(words, wcounts, specials, vocab_size - n_base)
        tok = cls(merges, specials)
        n_tokens = n_special + sum(len(w) * c for w, c in zip(words, wcounts))
        tok.stats = {
            "files": names, "bytes": n_bytes,
            "pretokens": sum(wcounts) + n_special, "distinct_pretokens": len(words),
            "tokens": n_tokens, "seconds": time.perf_counter() - t0,
        }
        return tok

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self):
        """A JSON-able description (what checkpoints embed under "tokenizer")."""
        return {
            "format": FORMAT, "version": VERSION, "pretokenizer": self.pretokenizer,
            "special_tokens": list(self.special_tokens), "vocab_size": self.vocab_size,
            "merges": [[a, b] for a, b in self.merges],
        }

    @classmethod
    def from_dict(cls, d):
        """Rebuild from to_dict()'s output; malformed data raises TokenizerError saying what."""
        def bad(msg):
            return TokenizerError("tokenizer data is malformed: %s" % msg)

        if not isinstance(d, dict):
            raise bad("expected a JSON object, got %s" % type(d).__name__)
        for key in ("format", "version", "pretokenizer", "special_tokens", "merges"):
            if key not in d:
                raise bad("missing key %r" % key)
        if d["format"] != FORMAT:
            raise bad("format is %r, expected %r" % (d["format"], FORMAT))
        if d["version"] != VERSION:
            raise bad("version %r is not supported (this shoestring reads version %d)"
                      % (d["version"], VERSION))
        if d["pretokenizer"] not in PRETOKENIZERS:
            raise bad("pre-tokenizer %r is unknown (expected %r)" % (d["pretokenizer"], PRETOKENIZER))
        try:
            specials = _check_specials(d["special_tokens"])
        except TokenizerError as e:
            raise bad(str(e)) from None
        merges = d["merges"]
        if not isinstance(merges, list):
            raise bad("merges must be a list of [a, b] id pairs")
        try:
            tok = cls(merges, specials, d["pretokenizer"])
        except TokenizerError as e:
            raise bad(str(e)) from None
        if "vocab_size" in d and d["vocab_size"] != tok.vocab_size:
            raise bad("vocab_size is %r but the merges give %d tokens"
                      % (d["vocab_size"], tok.vocab_size))
        return tok

    def save(self, path):
        """Write standalone JSON atomically (temporary file in the same folder, then rename)."""
        d = self.to_dict()
        head = {k: v for k, v in d.items() if k != "merges"}
        body = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
        text = (body + ',\n  "merges": [' +
                ",".join("\n    [%d, %d]" % (a, b) for a, b in self.merges) + "\n  ]\n}\n")
        atomic_write_text(path, text, "tokenizer", TokenizerError)

    @classmethod
    def load(cls, path):
        """Load a tokenizer JSON file, or the tokenizer inside a shoestring checkpoint."""
        name = os.fspath(path)
        if not os.path.exists(name):
            why, part = why_missing(name), file_in_path(name)
            raise TokenizerError("tokenizer file not found: %s%s" % (
                name, " (%s is a file, not a folder)" % part if part else "")
                if why == "not found" else "%s is %s (fix the link or give the file itself)"
                % (name, why))
        if os.path.isdir(name):
            raise TokenizerError("%s is a folder, not a tokenizer file" % name)
        # sizes and file types before reading: /dev/zero or a huge junk file is never read whole
        try:
            st = os.stat(name)
        except OSError as e:
            raise TokenizerError("cannot read %s: %s" % (name, e.strerror or e)) from None
        if not stat.S_ISREG(st.st_mode):
            raise TokenizerError("%s is not a regular file (give a tokenizer .json file or a "
                                 "checkpoint)" % name)
        if st.st_size > _MAX_LOAD_BYTES:
            raise TokenizerError("%s is %.1f GB, larger than any tokenizer or checkpoint (give a "
                                 "tokenizer .json file or a checkpoint)" % (name, st.st_size / 1e9))
        try:
            with open(name, "rb") as f:
                head = f.read(4096)
                if st.st_size > _SNIFF_ABOVE and not _looks_like_json_object(head):
                    raise TokenizerError("%s is not a tokenizer file (it does not start with a "
                                         "JSON object)" % name)
                data = head + f.read(st.st_size + 1 - len(head))
            d = json.loads(data.decode("utf-8"))
        except OSError as e:
            raise TokenizerError("cannot read %s: %s" % (name, e.strerror or e)) from None
        except UnicodeDecodeError as e:
            raise TokenizerError("%s is not a tokenizer file (not UTF-8 text at byte %d)"
                                 % (name, e.start)) from None
        except json.JSONDecodeError as e:
            raise TokenizerError("%s is not valid JSON (line %d column %d: %s)"
                                 % (name, e.lineno, e.colno, e.msg)) from None
        except RecursionError:
            raise TokenizerError("%s is not a tokenizer file (its JSON is nested too deeply)"
                                 % name) from None
        except ValueError as e:     # e.g. an integer of more than 4300 digits
            why = ("it holds a number of more than 4,300 digits" if "digits" in str(e)
                   else str(e)[:120])
            raise TokenizerError("%s is not a tokenizer file (%s)" % (name, why)) from None
        if isinstance(d, dict) and "tokenizer" in d:
            d = d["tokenizer"]  # a checkpoint
        try:
            return cls.from_dict(d)
        except TokenizerError as e:
            raise TokenizerError("%s: %s" % (name, e)) from None

    def __eq__(self, other):
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return self.special_tokens == other.special_tokens and self.merges == other.merges

    __hash__ = None

    def __repr__(self):
        return "Tokenizer(vocab_size=%d, specials=%d, merges=%d)" % (
            self.vocab_size, len(self.special_tokens), len(self.merges))


def _looks_like_json_object(head):
    """Whether bytes start (after whitespace and a BOM) with a JSON object's `{`."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


# ---- merge learning ---------------------------------------------------------------------------
def _learn_merges(words, wcounts, specials, n_merges, stats=None):
    """Up to n_merges merges over words (byte-id lists, modified in place) with counts wcounts.

    pair_count[(a, b)] is the weighted count of adjacent (a, b); where[(a, b)] the words that
    may hold it (a superset: stale entries are skipped). The heap holds (-count, bytes a,
    bytes b, a, b); counts of old pairs only fall, so a popped entry whose count is stale is
    pushed back with its true count, and the first entry that is current is the best pair.

    A merge rewrites each word that holds its pair in place, left to right, and updates only
    the pairs beside each merged position ((x, a) -> (x, new), (b, y) -> (new, y)): its cost is
    the number of positions merged plus a C-speed scan (list.index) of the words holding the
    pair, never a recount of a whole word. Every merged position shortens the corpus of
    distinct pre-tokens by one, so training costs time linear in that corpus, however long
    its pre-tokens (#17: a 64-character pre-token of random Chinese is 192 bytes). stats, a
    dict, receives "rewrites": the words changed in all.
    """
    off = len(specials)
    piece = [s.encode("utf-8") for s in specials] + [bytes([b]) for b in range(256)]
    pair_count, where = {}, {}
    for i, w in enumerate(words):
        c = wcounts[i]
        for p in zip(w, w[1:]):
            pair_count[p] = pair_count.get(p, 0) + c
            s = where.get(p)
            if s is None:
                where[p] = {i}
            else:
                s.add(i)
    heap = [(-c, piece[a], piece[b], a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    merges, rewrites, fresh = [], 0, set()
    get = pair_count.get

    def gain(p, i, c):        # word i gained c of pair p, which holds the new token
        pair_count[p] = get(p, 0) + c
        fresh.add(p)
        s = where.get(p)
        if s is None:
            where[p] = {i}
        else:
            s.add(i)

    while len(merges) < n_merges and heap:
        negc, pa, pb, a, b = heapq.heappop(heap)
        c = get((a, b), 0)
        if c <= 0:
            continue
        if c != -negc:
            heapq.heappush(heap, (-c, pa, pb, a, b))
            continue
        new = off + 256 + len(merges)
        merges.append((a, b))
        piece.append(pa + pb)
        fresh.clear()
        for i in where.pop((a, b)):
            w = words[i]
            try:
                j = w.index(a)
            except ValueError:
                continue  # stale: the pair is no longer in this word
            c = wcounts[i]
            n = len(w)
            hit = False
            while True:
                if j + 1 < n and w[j + 1] == b:
                    hit = True
                    if j:
                        x = w[j - 1]
                        pair_count[(x, a)] -= c
                        gain((x, new), i, c)
                    if j + 2 < n:
                        y = w[j + 2]
                        pair_count[(b, y)] -= c
                        gain((new, y), i, c)
                    w[j] = new
                    del w[j + 1]
                    n -= 1
                try:
                    j = w.index(a, j + 1)
                except ValueError:
                    break
            rewrites += hit
        del pair_count[(a, b)]
        for p in sorted(fresh):
            k = pair_count[p]
            if k > 0:
                heapq.heappush(heap, (-k, piece[p[0]], piece[p[1]], p[0], p[1]))
    if stats is not None:
        stats["rewrites"] = rewrites
    return merges


# ---- streaming decode -------------------------------------------------------------------------
class StreamDecoder:
    """Decode ids one at a time, emitting only whole characters (a token may end mid-character).

    The concatenation of every feed() and the final flush() equals Tokenizer.decode of all ids.
    """

    def __init__(self, tok):
        self._tok = tok
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, token_id):
        """Text completed by this token ('' while a character is still incomplete)."""
        self._tok._check_id(token_id)
        return self._dec.decode(self._tok._bytes[token_id])

    def feed_many(self, ids):
        """Text completed by these ids: the same as feeding them one at a time, in one call (a
        chunk of the C generation loop)."""
        return self._dec.decode(self._tok.decode_bytes(ids))

    def flush(self):
        """Whatever is pending (an incomplete character becomes U+FFFD); then start afresh."""
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out
