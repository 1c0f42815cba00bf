"""prepare.py: common chat data -> the [USER]/[BOT] corpus format (`shoestring prepare`).

The corpus format (MODEL.md §4; also in the README): one line per turn, a blank line between
dialogues, every dialogue starting with the user:

    [USER] question [EOS]
    [BOT] answer [EOS]

    [USER] a new dialogue [EOS]
    ...

Input forms (chosen by file extension, or for every input by `fmt`):
- "jsonl" (.jsonl, .ndjson, .json): one JSON object per line, in the OpenAI/HuggingFace form
  `{"messages": [{"role": "user"|"assistant"|"system", "content": "..."}, ...]}`. Also read:
  ShareGPT's `{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}` and single
  exchanges `{"prompt": ..., "completion"|"response": ...}`; content given as a list of parts
  (`[{"type": "text", "text": ...}]`) keeps its text parts.
- "csv" (.csv; .tsv with tabs): two columns, user then bot; each row is one exchange (a dialogue
  of its own). A first row whose cells are both column names (`prompt,response`, `user,bot`,
  `question,answer`, ...) is a header and skipped.
- "text" (anything else): dialogues are blocks separated by blank lines; inside a block the lines
  alternate user, bot, user, bot, ...

What is done to the text:
- System messages are dropped (counted). Roles: user/human -> [USER]; assistant/bot/gpt/model
  -> [BOT]; other roles (tool, function) are dropped with a report. Consecutive messages of the
  same role are joined with a space. A dialogue's leading bot turns and a trailing user turn
  without a reply are dropped (reported): every dialogue written is user, bot, user, bot.
- Text that the tokenizer would read as a special token (`[USER]`, `[BOT]`, `[EOS]`, `[PAD]`,
  `[UNK]`: it recognises them anywhere in training data) is neutralised to `(USER)`, `(BOT)`,
  ... so no message can forge a turn; counted.
- Every turn is one line: line breaks inside a message (and the spaces around them) become one
  space (chat reads one line per turn too); leading and trailing whitespace is removed.
- Undecodable bytes become U+FFFD (reported).

Every problem is reported as `file:line: what` and skipped; it is fatal only when nothing usable
is left (DataError).
"""
import csv
import json
import os
import re
from dataclasses import dataclass, field

from .errors import DataError
from .tokenizer import SPECIALS

FORMATS = ("jsonl", "csv", "text")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
              ".tsv": "csv"}
USER_ROLES = ("user", "human")
BOT_ROLES = ("assistant", "bot", "gpt", "model", "chatbot")
SYSTEM_ROLES = ("system", "developer")
HEADER_NAMES = {"user", "bot", "human", "assistant", "prompt", "response", "question", "answer",
                "input", "output", "instruction", "completion", "query", "reply", "q", "a",
                "context", "text", "message"}

_SPECIAL_RE = re.compile("|".join(re.escape(s) for s in SPECIALS))
_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]\s*")


@dataclass
class Result:
    """What prepare() found: dialogues (lists of (role, text), role "user" or "bot"), the
    problems as (file, line, message), and counters."""
    dialogues: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    files: list = field(default_factory=list)
    system_dropped: int = 0
    neutralised: int = 0
    turns_dropped: int = 0

    def problem(self, path, line, msg):
        self.problems.append((path, line, msg))

    @property
    def turns(self):
        return sum(len(d) for d in self.dialogues)


def neutralise(text):
    """(text with special-token text made harmless, how many were changed)."""
    n = 0

    def sub(m):
        nonlocal n
        n += 1
        return "(" + m.group()[1:-1] + ")"

    return _SPECIAL_RE.sub(sub, text), n


def _clean(text, res):
    text = _LINE_BREAKS.sub(" ", text.strip())
    text, n = neutralise(text)
    res.neutralised += n
    return text


def _add_dialogue(turns, res, path, line):
    """Append a dialogue given as [(role, text, line)] after merging and trimming it."""
    merged = []
    for role, text, ln in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + " " + text, merged[-1][2])
        else:
            merged.append((role, text, ln))
    while merged and merged[0][0] != "user":
        res.problem(path, merged[0][2], "the dialogue starts with a bot turn; dropped that turn")
        res.turns_dropped += 1
        merged.pop(0)
    if merged and merged[-1][0] == "user":
        res.problem(path, merged[-1][2], "the dialogue ends with a user turn that has no reply; "
                                         "dropped that turn")
        res.turns_dropped += 1
        merged.pop()
    if merged:
        res.dialogues.append([(r, t) for r, t, _ in merged])
    elif not turns:
        res.problem(path, line, "no user or bot message in this dialogue; skipped")


# ---- reading files --------------------------------------------------------------------------
def _lines(path, res):
    """[(line number, text)] of a file read as UTF-8 (a BOM is dropped; bad bytes -> U+FFFD)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError("%s does not exist (check the path)" % path) from None
    except IsADirectoryError:
        raise DataError("%s is a folder (give the files inside it)" % path) from None
    except OSError as e:
        raise DataError("cannot read %s: %s" % (path, e.strerror or e)) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for i, raw in enumerate(data.splitlines(keepends=True), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            res.problem(path, i, "byte 0x%02x is not UTF-8; read as U+FFFD" % raw[e.start])
            text = raw.decode("utf-8", "replace")
        out.append((i, text))
    return out


def _content(value, path, ln, res):
    """The text of a message's content (a string, or a list of parts), or None."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                res.problem(path, ln, "a content part of type %r is not text; skipped it" % (kind,))
        return "\n".join(texts)
    if value is None:
        return None
    res.problem(path, ln, "a message's content is %s, not text; skipped the message"
                % type(value).__name__)
    return None


def _role(raw):
    r = raw.strip().lower() if isinstance(raw, str) else None
    if r in USER_ROLES:
        return "user"
    if r in BOT_ROLES:
        return "bot"
    if r in SYSTEM_ROLES:
        return "system"
    return None


def read_jsonl(path, res):
    lines = _lines(path, res)
    first = next((t for _, t in lines if t.strip()), "")
    if first.lstrip().startswith("["):
        res.problem(path, 1, "the file is a JSON array, not JSON Lines (one object per line; "
                             "convert it with: jq -c '.[]' FILE > FILE.jsonl)")
        return
    for ln, text in lines:
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            res.problem(path, ln, "not valid JSON (%s); skipped the line" % str(e).split(":")[0])
            continue
        if not isinstance(obj, dict):
            res.problem(path, ln, "expected a JSON object, got %s; skipped the line"
                        % type(obj).__name__)
            continue
        if "messages" in obj or "conversations" in obj:
            key = "messages" if "messages" in obj else "conversations"
            msgs = obj[key]
            if not isinstance(msgs, list):
                res.problem(path, ln, "%r is not a list; skipped the line" % key)
                continue
            turns = []
            for k, m in enumerate(msgs):
                if not isinstance(m, dict):
                    res.problem(path, ln, "%s[%d] is not an object; skipped it" % (key, k))
                    continue
                raw_role = m.get("role", m.get("from"))
                role = _role(raw_role)
                if role is None:
                    res.problem(path, ln, "%s[%d] has role %r (expected user, assistant or "
                                          "system); skipped it" % (key, k, raw_role))
                    continue
                if role == "system":
                    res.system_dropped += 1
                    continue
                text = _content(m.get("content", m.get("value")), path, ln, res)
                if text is None:
                    res.problem(path, ln, "%s[%d] has no content; skipped it" % (key, k))
                    continue
                text = _clean(text, res)
                if not text:
                    res.problem(path, ln, "%s[%d] is empty; skipped it" % (key, k))
                    continue
                turns.append((role, text, ln))
            _add_dialogue(turns, res, path, ln)
        elif "prompt" in obj and ("completion" in obj or "response" in obj):
            pair = (obj["prompt"], obj.get("completion", obj.get("response")))
            if not all(isinstance(x, str) for x in pair):
                res.problem(path, ln, "prompt and completion must be strings; skipped the line")
                continue
            u, b = (_clean(x, res) for x in pair)
            if not u or not b:
                res.problem(path, ln, "an empty prompt or completion; skipped the line")
                continue
            res.dialogues.append([("user", u), ("bot", b)])
        else:
            keys = ", ".join(sorted(obj)[:5]) or "none"
            res.problem(path, ln, "no \"messages\" list (keys: %s); skipped the line" % keys)


def read_csv(path, res):
    lines = _lines(path, res)
    delim = "\t" if path.lower().endswith(".tsv") else ","
    numbered = iter(lines)
    starts = []

    def feed():
        for ln, text in numbered:
            starts.append(ln)
            yield text

    reader = csv.reader(feed(), delimiter=delim)
    first = True
    while True:
        n_before = len(starts)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            res.problem(path, starts[-1] if starts else 1, "malformed CSV (%s); skipped" % e)
            continue
        ln = starts[n_before] if len(starts) > n_before else (starts[-1] if starts else 1)
        if not row or all(not c.strip() for c in row):
            continue
        if first:
            first = False
            if len(row) == 2 and all(c.strip().lower() in HEADER_NAMES for c in row):
                continue
        if len(row) != 2:
            res.problem(path, ln, "expected 2 columns (user, bot), got %d; skipped the row"
                        % len(row))
            continue
        u, b = (_clean(c, res) for c in row)
        if not u or not b:
            res.problem(path, ln, "an empty %s cell; skipped the row" % ("user" if not u else "bot"))
            continue
        res.dialogues.append([("user", u), ("bot", b)])


def read_text(path, res):
    block = []

    def flush():
        if block:
            turns = [("user" if k % 2 == 0 else "bot", t, ln) for k, (ln, t) in enumerate(block)]
            _add_dialogue(turns, res, path, block[0][0])
            block.clear()

    for ln, text in _lines(path, res):
        if not text.strip():
            flush()
            continue
        t = _clean(text, res)
        block.append((ln, t))
    flush()


READERS = {"jsonl": read_jsonl, "csv": read_csv, "text": read_text}


def detect_format(path):
    return EXTENSIONS.get(os.path.splitext(path)[1].lower(), "text")


def prepare(paths, fmt=None):
    """Read every input file; returns a Result (raises DataError only for unreadable files or
    an unknown format; call check_usable() to refuse a result with nothing in it)."""
    if fmt is not None and fmt not in FORMATS:
        raise DataError("unknown input format %r (use one of: %s)" % (fmt, ", ".join(FORMATS)))
    res = Result()
    for p in paths:
        p = os.fspath(p)
        form = fmt or detect_format(p)
        res.files.append((p, form))
        READERS[form](p, res)
    return res


def check_usable(res):
    if not res.dialogues:
        names = ", ".join(p for p, _ in res.files)
        raise DataError("no usable dialogue in %s (%d problem%s reported above; see `shoestring "
                        "prepare -h` for the input forms)"
                        % (names, len(res.problems), "" if len(res.problems) == 1 else "s"))


def format_corpus(dialogues):
    """The corpus text: each turn on its own line, a blank line between dialogues."""
    out = []
    for d in dialogues:
        for role, text in d:
            out.append("[%s] %s [EOS]\n" % ("USER" if role == "user" else "BOT", text))
        out.append("\n")
    return "".join(out)


def summary(res, out_path, n_chars):
    """The lines printed after writing: what was written and what was left out."""
    s = ("wrote %s dialogues (%s turns, %s characters) to %s from %d file%s"
         % (format(len(res.dialogues), ","), format(res.turns, ","), format(n_chars, ","), out_path,
            len(res.files), "" if len(res.files) == 1 else "s"))
    extra = []
    if res.system_dropped:
        extra.append("%s system message%s dropped" % (format(res.system_dropped, ","),
                                                      "" if res.system_dropped == 1 else "s"))
    if res.turns_dropped:
        extra.append("%s unpaired turn%s dropped" % (format(res.turns_dropped, ","),
                                                     "" if res.turns_dropped == 1 else "s"))
    if res.neutralised:
        extra.append("%s special-token text%s neutralised (like [EOS] -> (EOS))"
                     % (format(res.neutralised, ","), "" if res.neutralised == 1 else "s"))
    if res.problems:
        extra.append("%s problem%s reported" % (format(len(res.problems), ","),
                                                "" if len(res.problems) == 1 else "s"))
    return [s] + (["; ".join(extra)] if extra else [])


def format_problems(res, limit=20):
    """`file:line: message` lines, at most `limit` per file (0: all), then a count of the rest."""
    out, per_file, hidden = [], {}, {}
    order = {p: i for i, (p, _) in enumerate(res.files)}
    for path, ln, msg in sorted(res.problems, key=lambda x: (order.get(x[0], 0), x[1])):
        k = per_file.get(path, 0)
        per_file[path] = k + 1
        if limit and k >= limit:
            hidden[path] = hidden.get(path, 0) + 1
            continue
        out.append("%s:%d: %s" % (path, ln, msg))
    for path, n in hidden.items():
        out.append("%s: %d more problem%s not shown (--max-problems 0 shows all)"
                   % (path, n, "" if n == 1 else "s"))
    return out
