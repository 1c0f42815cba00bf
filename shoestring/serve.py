"""serve.py: `shoestring serve`: an OpenAI-compatible HTTP server and a web chat page, O(1) per turn.

    shoestring serve ck.json                  # http://127.0.0.1:8000/ (the page), /v1/... (the API)
    shoestring serve ck.json --port 8080 --api-key SECRET

The standard library only (http.server.ThreadingHTTPServer, one thread per connection). One Model
is loaded once and shared read-only; every request decodes with its own kernels.Decoder (state,
logits, workspace), and the C calls release the GIL, so requests run in parallel on the cores.

Routes: GET / (the page, shoestring/web/index.html), GET /health, GET /v1/models,
GET /v1/models/<id>, POST /v1/chat/completions, POST /v1/completions. Parameters: model
(optional; only the loaded one), messages / prompt, max_tokens (or max_completion_tokens;
clamped to --max-tokens), temperature (0..2), top_p (0, 1], top_k (an extension, as in
llama.cpp), seed, stop (a string or up to 4), stream (server-sent events in OpenAI's chunk
format; stream_options.include_usage adds a usage chunk), n (1 only). Other fields are ignored.
finish_reason is "stop" ([EOS] or a stop string) or "length" (max_tokens reached).

How a conversation is fed (MODEL.md section 4, the training format, as shoestring.chat does):
a user message is `[USER]` ` <text> ` `[EOS]` `\\n`; an assistant message is `[BOT]` ` <text> `
`[EOS]` `\\n` (text stripped of surrounding whitespace; special-token text in a message is plain
text); the reply to a conversation starts with `[BOT]` and samples until [EOS] or max_tokens.
The model knows two roles only: a system (or developer) message is fed as a user message. The
last message must be the user's. After every assistant message (fed, or replied) the training
guard resets a state grown out of range, exactly as a chat session does after each turn.

O(1) turns. A conversation's whole memory is the recurrent state (L,X,H). After each reply the
server keeps that state in an LRU cache (--cache-mb) under a hash chain of the conversation's
messages as fed (role and stripped text, the reply included): key_i = sha256(key_{i-1} | role |
text_i). A request looks up the longest cached prefix of its messages and feeds only the
messages after it; a miss replays the whole history from the zero state. Answers never depend on
the cache because the cached state is, bit for bit, the state a replay computes:
  - the state is a function of the messages' text only: when the tokens sampled for a reply
    differ from how the tokenizer encodes the reply's returned text (a stop string cut it, the
    trim dropped whitespace, a token split differs), the server re-feeds the encoded text from
    the state before the reply, so the cached state is that of the reply as a client sends it
    back;
  - sampling randomness is not carried between turns: each reply draws from a fresh generator
    seeded with the request's `seed` (splitmix64, kernels.Rng(seed)), so the reply to a
    conversation with a given seed is the same whether its history came from the cache or was
    replayed, and the first reply equals Model.chat(seed=seed).send(text) and a completion
    equals Model.generate(prompt, seed=seed); without a seed the generator is seeded from the OS.
    Nothing cached depends on the seed, so the key does not include it (every seed shares the
    cached history). A multi-turn client that wants different randomness per turn varies seed.
usage.prompt_tokens counts the whole conversation as fed; prompt_tokens_details.cached_tokens
says how many of them came from the cache (not fed again).

Safety: binds 127.0.0.1 by default (another --host prints a warning); with --api-key every /v1/
route needs `Authorization: Bearer <key>` (the page asks for it); on a loopback address the Host
header must name a loopback host (a web page elsewhere cannot reach the server by DNS rebinding);
bodies are capped (--max-body-kb), max_tokens clamped, every field validated; a bad request gets
an OpenAI-style JSON error {"error": {"message", "type", "param", "code"}} with its 4xx status and
the server keeps serving. Ctrl-C or SIGTERM stop it cleanly: no new connections, replies in
progress end (finish_reason "length"), then exit 0.
"""
import hashlib
import hmac
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .version import __version__
from .errors import ShoestringError

from .inference import ReplyTrim, decode_tokens
from .params import guard_state

DEFAULT_PORT = 8000
DEFAULT_CACHE_MB = 64          # ~14,000 conversations at the default size (4.6 KB each): a Pi
DEFAULT_MAX_TOKENS = 260       # the default and the most tokens of one reply (as `shoestring chat`)
DEFAULT_MAX_BODY_KB = 1024
MAX_MESSAGES = 10_000
MAX_STOP = 4
ENTRY_OVERHEAD = 200           # bytes a cache entry costs beyond its state (key, dict, tuple)
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web", "index.html")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
USER_ROLES = ("user", "system", "developer")


class ApiError(Exception):
    """A request the server refuses: its HTTP status and an OpenAI-style error body."""

    def __init__(self, status, message, param=None, code=None, etype="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.etype = status, message, param, code, etype

    def body(self):
        return {"error": {"message": self.message, "type": self.etype, "param": self.param,
                          "code": self.code}}


# ---- the recurrent-state cache -------------------------------------------------------------------
def chain_key(prev, role, text):
    """key_i = sha256(key_{i-1} | role | 0 | text): the conversation so far, as fed."""
    h = hashlib.sha256(prev)
    h.update(role.encode("ascii"))
    h.update(b"\0")
    h.update(text.encode("utf-8"))
    return h.digest()


ROOT_KEY = hashlib.sha256(b"shoestring serve: the empty conversation").digest()


class StateCache:
    """LRU map key -> (state (L,X,H) float32, tokens fed so far), bounded by bytes; thread-safe.
    Stored states are private copies and never change, so get() hands them out uncopied."""

    def __init__(self, max_bytes):
        self.max_bytes = max(0, int(max_bytes))
        self._d = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key, state, n_tokens):
        cost = state.nbytes + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        entry = (state.copy(), int(n_tokens))
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.bytes -= old[0].nbytes + ENTRY_OVERHEAD
            self._d[key] = entry
            self.bytes += cost
            while self.bytes > self.max_bytes:
                _, ev = self._d.popitem(last=False)
                self.bytes -= ev[0].nbytes + ENTRY_OVERHEAD
                self.evictions += 1

    def count(self, hit):
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def clear(self):
        with self._lock:
            self._d.clear()
            self.bytes = 0

    def stats(self):
        with self._lock:
            return {"entries": len(self._d), "bytes": self.bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


# ---- text filters for replies ------------------------------------------------------------------
class _StopCut:
    """Cuts the text before the first stop string; holds back a tail that may begin one."""

    def __init__(self, stops):
        self.stops = stops
        self.held = ""

    def feed(self, piece):
        """(text safe to emit, whether a stop string was found)."""
        if not self.stops:
            return piece, False
        text = self.held + piece
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return text[:min(found)], True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:k]):
                    keep = k
                    break
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    def flush(self):
        out, self.held = self.held, ""
        return out


# ---- the engine: a shared model, one decoder per request -------------------------------------------
class Reply:
    """One reply being generated: iterate for the text pieces; afterwards text, finish_reason,
    prompt_tokens, cached_tokens and completion_tokens are set. close() stops it early."""

    def __init__(self):
        self._gen = None
        self.text = ""
        self.finish_reason = None
        self.prompt_tokens = self.cached_tokens = self.completion_tokens = 0

    def __iter__(self):
        return self._gen

    def close(self):
        self._gen.close()

    def usage(self):
        u = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
             "total_tokens": self.prompt_tokens + self.completion_tokens}
        if self.cached_tokens:
            u["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return u


class Engine:
    """The model, the state cache and the generation loop (no HTTP here).

    Adapter over the public Model API: Model.decoder() gives a fresh decoder on the shared
    weights; the server also restores cached states, feeds assistant messages without replying,
    counts tokens and reports why a reply ended, which ChatSession.send does not expose, so it
    drives the decoder itself with ChatSession's steps (tests/test_serve.py checks that a first
    reply equals Model.chat(...).send and a completion Model.generate for the same seed)."""

    def __init__(self, model, cache_bytes=DEFAULT_CACHE_MB << 20, max_tokens=DEFAULT_MAX_TOKENS,
                 temperature=0.8, top_k=40, top_p=0.95, model_id="shoestring", seed=None):
        tok = model.tokenizer
        for name in ("[USER]", "[BOT]", "[EOS]"):
            if name not in tok.special_tokens:
                raise ShoestringError("serving chat needs the special token %s, which this "
                                      "tokenizer lacks (train with the default special tokens)" % name)
        self.model = model
        self.tok = tok
        self.cache = StateCache(cache_bytes)
        self.max_tokens = int(max_tokens)
        self.defaults = {"temperature": float(temperature), "top_k": int(top_k),
                         "top_p": float(top_p), "seed": seed}   # for requests without them
        self.model_id = model_id
        self.created = int(time.time())
        self._tok_lock = threading.Lock()     # the tokenizer's encode caches are not thread-safe
        self._user = tok.special_id("[USER]")
        self._bot = tok.special_id("[BOT]")
        self._eos = tok.special_id("[EOS]")
        self._nl = self.encode("\n")
        self.stopping = threading.Event()     # set at shutdown: replies in progress end
        self.active = 0
        self._active_lock = threading.Lock()

    def encode(self, text):
        with self._tok_lock:
            return self.tok.encode(text, allow_special=False)

    def body_ids(self, text):
        """` <text> ` as fed inside a turn (text already stripped)."""
        return self.encode(" " + text + " ")

    def message_ids(self, role, text):
        """The ids fed for one message (text already stripped): [USER]|[BOT] ` text ` [EOS] \\n."""
        head = self._bot if role == "assistant" else self._user
        return [head] + self.body_ids(text) + [self._eos] + self._nl

    def _feed(self, dec, ids):
        for t in ids:
            dec.step(t, head=False)

    def _close_turn(self, dec):
        """After an assistant message: the training guard, as ChatSession applies after a turn."""
        guard_state(dec.state[:, None])

    # -- chat ----------------------------------------------------------------------------------
    def chat(self, messages, params):
        """A Reply to messages [(role, stripped text)] (validated; the last is a user's)."""
        keys, k = [], ROOT_KEY
        for role, text in messages:
            k = chain_key(k, "assistant" if role == "assistant" else "user", text)
            keys.append(k)
        start, hit = 0, None
        for i in range(len(messages) - 1, 0, -1):     # the longest cached prefix
            hit = self.cache.get(keys[i - 1])
            if hit is not None:
                start = i
                break
        self.cache.count(hit is not None)
        reply = Reply()
        reply._gen = self._chat(reply, messages, keys, start, hit, params)
        return reply

    def _chat(self, reply, messages, keys, start, hit, params):
        self._enter()
        try:
            dec = self.model.decoder()
            fed = 0
            if hit is not None:
                dec.state[...] = hit[0]
                fed = reply.cached_tokens = hit[1]
            for role, text in messages[start:]:
                ids = self.message_ids(role, text)
                self._feed(dec, ids)
                fed += len(ids)
                if role == "assistant":
                    self._close_turn(dec)
            reply.prompt_tokens = fed + 1                # + [BOT]
            before = dec.state.copy()                    # the state before [BOT]: to re-feed
            sampled = []
            yield from self._sample(reply, dec, [self._bot], params, sampled, ReplyTrim())
            text = reply.text.strip()                    # as a client sends it back (fed stripped)
            body = self.body_ids(text)
            if sampled == body:                          # the state already holds the text as fed
                self._feed(dec, [self._eos] + self._nl)
            else:                                        # it does not: feed the returned text
                dec.state[...] = before
                self._feed(dec, [self._bot] + body + [self._eos] + self._nl)
            self._close_turn(dec)
            n = fed + 1 + len(body) + 1 + len(self._nl)
            self.cache.put(chain_key(keys[-1], "assistant", text), dec.state, n)
        finally:
            self._leave()

    # -- completion ------------------------------------------------------------------------------
    def complete(self, prompt, params):
        """A Reply continuing prompt (raw text, no chat format), as Model.generate."""
        ids = self.encode(prompt)
        if not ids:
            raise ApiError(400, "prompt is empty (give some text to continue)", "prompt")
        reply = Reply()
        reply._gen = self._complete(reply, ids, params)
        return reply

    def _complete(self, reply, ids, params):
        self._enter()
        try:
            dec = self.model.decoder()
            reply.prompt_tokens = len(ids)
            yield from self._sample(reply, dec, ids, params, [], None)
        finally:
            self._leave()

    # -- the sampling loop: inference.decode_tokens, the loop of generate and ChatSession.send --
    def _sample(self, reply, dec, ids, params, sampled, trim):
        """Feed ids, then sample until [EOS], max_tokens or a stop string (each token fed back);
        yields text pieces (whole characters; stripped as a chat reply when trim is given) and
        sets reply.text, finish_reason and completion_tokens; sampled gets the ids fed."""
        from .kernels import Rng
        p = dict(self.defaults, **params)
        seed = p.get("seed")
        rng = Rng(int.from_bytes(os.urandom(8), "little") if seed is None else seed)
        sampling = (p["temperature"], min(p["top_k"], self.tok.vocab_size), p["top_p"])
        n = min(p.get("max_tokens") or self.max_tokens, self.max_tokens)
        sd = self.tok.stream_decoder()
        cut = _StopCut(p.get("stop") or ())
        out, ended = [], []
        finish, hit = "length", False
        stopping = self.stopping
        tokens = decode_tokens(dec, ids, rng, sampling, n, self._eos, ended)
        try:
            for t in tokens:
                sampled.append(t)
                piece = sd.feed(t)
                if trim is not None:
                    piece = trim.feed(piece)
                piece, hit = cut.feed(piece)
                if piece:
                    out.append(piece)
                    yield piece
                if hit or stopping.is_set():
                    break
        finally:
            tokens.close()
        if ended or hit:
            finish = "stop"
        if not hit:
            tail = sd.flush()
            if trim is not None:
                tail = trim.feed(tail)
            tail, hit = cut.feed(tail)
            if hit:
                finish = "stop"
            else:
                tail += cut.flush()
            if tail:
                out.append(tail)
                yield tail
        reply.text = "".join(out)
        reply.finish_reason = finish
        reply.completion_tokens = len(sampled)

    def _enter(self):
        with self._active_lock:
            self.active += 1

    def _leave(self):
        with self._active_lock:
            self.active -= 1


# ---- request validation --------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v, param):
    """A message's content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(v, list):
        parts = []
        for i, part in enumerate(v):
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                raise ApiError(400, "%s[%d]: only text parts ({\"type\": \"text\", \"text\": "
                               "\"...\"}) are supported" % (param, i), param)
            parts.append(part["text"])
        v = "".join(parts)
    if not isinstance(v, str):
        raise ApiError(400, "%s must be a string, got %s" % (param, type(v).__name__), param)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "%s is not valid Unicode (a lone surrogate)" % param, param) from None
    return v


def parse_params(body, engine):
    """The sampling fields shared by both endpoints, checked; absent ones are left out."""
    p = {}
    model = body.get("model")
    if model is not None and model != engine.model_id:
        raise ApiError(404, "the model %r does not exist; this server has %r (GET /v1/models)"
                       % (model, engine.model_id), "model", "model_not_found")
    for name in ("max_tokens", "max_completion_tokens"):
        v = body.get(name)
        if v is not None:
            if not _is_int(v) or v < 1:
                raise ApiError(400, "%s must be a whole number >= 1, got %r" % (name, v), name)
            p["max_tokens"] = min(v, engine.max_tokens)       # clamped to --max-tokens
    v = body.get("temperature")
    if v is not None:
        if not _is_num(v) or not 0 <= v <= 2:
            raise ApiError(400, "temperature must be a number in [0, 2], got %r" % (v,), "temperature")
        p["temperature"] = float(v)
    v = body.get("top_p")
    if v is not None:
        if not _is_num(v) or not 0 < v <= 1:
            raise ApiError(400, "top_p must be a number in (0, 1], got %r" % (v,), "top_p")
        p["top_p"] = float(v)
    v = body.get("top_k")
    if v is not None:
        if not _is_int(v) or v < 0:
            raise ApiError(400, "top_k must be a whole number >= 0 (0: off), got %r" % (v,), "top_k")
        p["top_k"] = v
    v = body.get("seed")
    if v is not None:
        if not _is_int(v) or not -2 ** 63 <= v < 2 ** 64:
            raise ApiError(400, "seed must be a whole number in [-2^63, 2^64), got %r" % (v,), "seed")
        p["seed"] = v
    v = body.get("stop")
    if v is not None:
        stops = [v] if isinstance(v, str) else v
        if (not isinstance(stops, list) or len(stops) > MAX_STOP
                or not all(isinstance(s, str) and s for s in stops)):
            raise ApiError(400, "stop must be a non-empty string or a list of up to %d of them"
                           % MAX_STOP, "stop")
        p["stop"] = tuple(stops)
    v = body.get("n")
    if v is not None and v != 1:
        raise ApiError(400, "n must be 1 (one reply per request)", "n")
    v = body.get("stream", False)
    if not isinstance(v, bool):
        raise ApiError(400, "stream must be true or false, got %r" % (v,), "stream")
    p["stream"] = v
    so = body.get("stream_options")
    if so is not None and not (isinstance(so, dict) and isinstance(so.get("include_usage", False), bool)):
        raise ApiError(400, "stream_options must be {\"include_usage\": true|false}", "stream_options")
    p["include_usage"] = bool(so and so.get("include_usage"))
    return p


def parse_chat(body, engine):
    """(messages [(role, stripped text)], params) of a chat request."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list of {\"role\", \"content\"}", "messages")
    if len(msgs) > MAX_MESSAGES:
        raise ApiError(400, "too many messages (%d; at most %d)" % (len(msgs), MAX_MESSAGES), "messages")
    out = []
    for i, m in enumerate(msgs):
        param = "messages[%d]" % i
        if not isinstance(m, dict):
            raise ApiError(400, "%s must be an object with role and content" % param, param)
        role = m.get("role")
        if role not in USER_ROLES + ("assistant",):
            raise ApiError(400, "%s.role must be user, assistant or system, got %r" % (param, role),
                           param + ".role")
        out.append((role, _text(m.get("content"), param + ".content").strip()))
    if out[-1][0] == "assistant":
        raise ApiError(400, "the last message must be the user's (the reply continues the "
                       "conversation after it)", "messages")
    return out, parse_params(body, engine)


def parse_completion(body, engine):
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string", "prompt")
    _text(prompt, "prompt")
    for name, fine in (("echo", (None, False)), ("logprobs", (None,)), ("suffix", (None, "")),
                       ("best_of", (None, 1))):
        v = body.get(name)
        if not any(v is f or (type(v) is type(f) and v == f) for f in fine):
            raise ApiError(400, "%s=%r is not supported by this server" % (name, v), name)
    return prompt, parse_params(body, engine)


# ---- HTTP --------------------------------------------------------------------------------------
class Server(ThreadingHTTPServer):
    daemon_threads = True          # a stuck client never blocks shutdown
    allow_reuse_address = True

    def __init__(self, addr, engine, api_key=None, max_body=DEFAULT_MAX_BODY_KB << 10, log=None):
        self.engine = engine
        self.api_key = api_key
        self.max_body = int(max_body)
        self.log = log
        with open(PAGE, "rb") as f:
            self.page = f.read()
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6      # --host ::1 or ::
        super().__init__(addr, Handler)
        self.loopback = _is_loopback(self.server_address[0])

    @property
    def url(self):
        host, port = self.server_address[:2]
        return "http://%s:%d/" % ("[%s]" % host if ":" in host else host, port)


def _is_loopback(host):
    import ipaddress
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shoestring/" + __version__
    timeout = 120                  # a silent connection is dropped after this many seconds
    disable_nagle_algorithm = True # streamed pieces go out at once (no 40 ms delayed-ACK stall)

    # -- plumbing ----------------------------------------------------------------------------------
    def log_message(self, fmt, *args):
        if self.server.log is not None:
            self.server.log.write("%s %s\n" % (self.address_string(), fmt % args))

    def _send(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in extra:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _error(self, err):
        if err.status == 401:
            extra = [("WWW-Authenticate", "Bearer")]
        else:
            extra = []
        self._send(err.status, json.dumps(err.body()).encode("utf-8"), "application/json", extra)

    def _handle(self, route):
        self._streaming = False
        try:
            self._check_host()
            route()
        except ApiError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:            # a bug: say so in JSON (500) and keep serving
            import traceback
            self.close_connection = True
            sys.stderr.write("shoestring serve: internal error on %s %s:\n%s"
                             % (self.command, self.path, traceback.format_exc()))
            if not self._streaming:
                self._error(ApiError(500, "internal error: %s: %s" % (type(exc).__name__, exc),
                                     etype="server_error"))

    def _check_host(self):
        if not self.server.loopback:
            return
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if name not in LOOPBACK_HOSTS and not name.startswith("127."):
            self.close_connection = True
            raise ApiError(403, "Host %r is not this machine (a server on a loopback address "
                           "answers to 127.0.0.1 or localhost only)" % host, code="bad_host",
                           etype="permission_error")

    def _auth(self):
        key = self.server.api_key
        if key is None:
            return
        got = self.headers.get("Authorization") or ""
        if not got.startswith("Bearer "):
            raise ApiError(401, "this server needs an API key: send Authorization: Bearer <key>",
                           code="invalid_api_key", etype="authentication_error")
        if not hmac.compare_digest(got[7:].strip().encode("utf-8"), key.encode("utf-8")):
            raise ApiError(401, "wrong API key", code="invalid_api_key", etype="authentication_error")

    def _body(self):
        """The request's JSON object (the body is read whole, within --max-body-kb)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length (chunked bodies are not accepted)")
        try:
            n = int(self.headers.get("Content-Length", ""))
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(411, "a Content-Length header is required") from None
        if n > self.server.max_body:
            self.close_connection = True          # the body is not read: the connection ends
            raise ApiError(413, "the request body is %d bytes; this server takes at most %d "
                           "(--max-body-kb)" % (n, self.server.max_body), code="body_too_large")
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, "the body is not valid JSON (%s)" % exc) from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    # -- methods -------------------------------------------------------------------------------------
    def do_GET(self):
        self._handle(self._get)

    def do_HEAD(self):
        self._handle(self._get)

    def do_POST(self):
        self._handle(self._post)

    def _other(self):
        self.close_connection = True
        raise ApiError(405, "method %s is not allowed here" % self.command)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = lambda self: self._handle(self._other)

    def _get(self):
        path = self.path.split("?", 1)[0]
        eng = self.server.engine
        if path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8", [
                ("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                 "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
                 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
                ("Cache-Control", "no-cache")])
        elif path == "/health":
            self._json(200, {"status": "ok", "model": eng.model_id, "active": eng.active,
                             "cache": eng.cache.stats()})
        elif path == "/v1/models":
            self._auth()
            self._json(200, {"object": "list", "data": [self._model_obj()]})
        elif path.startswith("/v1/models/"):
            self._auth()
            if path[len("/v1/models/"):] != eng.model_id:
                raise ApiError(404, "no model %r here (GET /v1/models)" % path[len("/v1/models/"):],
                               "model", "model_not_found")
            self._json(200, self._model_obj())
        elif path in ("/v1/chat/completions", "/v1/completions"):
            self._other()
        else:
            raise ApiError(404, "no route %s (try / or /v1/chat/completions)" % path,
                           code="not_found")

    def _model_obj(self):
        eng = self.server.engine
        return {"id": eng.model_id, "object": "model", "created": eng.created,
                "owned_by": "shoestring"}

    def _post(self):
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/chat/completions", "/v1/completions"):
            if path in ("/", "/health", "/v1/models"):
                self._other()
            self.close_connection = True
            raise ApiError(404, "no route %s (try /v1/chat/completions)" % path, code="not_found")
        self._auth()
        body = self._body()
        eng = self.server.engine
        chat = path == "/v1/chat/completions"
        if chat:
            messages, p = parse_chat(body, eng)
            reply = eng.chat(messages, p)
        else:
            prompt, p = parse_completion(body, eng)
            reply = eng.complete(prompt, p)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if p["stream"]:
            self._stream(reply, rid, chat, p["include_usage"])
            return
        try:
            text = "".join(reply)
        finally:
            reply.close()
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": reply.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None,
                      "finish_reason": reply.finish_reason}
        self._json(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                         "created": int(time.time()), "model": eng.model_id,
                         "choices": [choice], "usage": reply.usage()})

    def _stream(self, reply, rid, chat, include_usage):
        """Server-sent events in OpenAI's chunk format, sent with chunked transfer encoding."""
        eng = self.server.engine
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        def event(choices, usage=None):
            d = {"id": rid, "object": obj, "created": created, "model": eng.model_id,
                 "choices": choices}
            if usage is not None:
                d["usage"] = usage
            return "data: %s\n\n" % json.dumps(d)

        def choice(delta, finish=None):
            if chat:
                return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            return [{"index": 0, "text": delta.get("content", ""), "logprobs": None,
                     "finish_reason": finish}]

        def send(text):
            data = text.encode("utf-8")
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        self._streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        try:
            if chat:
                send(event(choice({"role": "assistant", "content": ""})))
            for piece in reply:
                send(event(choice({"content": piece})))
            send(event(choice({}, reply.finish_reason)))
            if include_usage:
                send(event([], reply.usage()))
            send("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True          # the client left: the reply stops here
        finally:
            reply.close()


# ---- running it (the `shoestring serve` command is commands.cmd_serve) -------------------------
def model_id_for(path):
    """The model's name in the API: the file's stem, or its run folder's for best/last.json."""
    name = os.path.splitext(os.path.basename(path))[0]
    if name in ("best", "last"):
        name = os.path.basename(os.path.dirname(os.path.abspath(path))) or name
    return name


def make_server(model, host="127.0.0.1", port=DEFAULT_PORT, api_key=None,
                cache_mb=DEFAULT_CACHE_MB, max_tokens=DEFAULT_MAX_TOKENS,
                max_body_kb=DEFAULT_MAX_BODY_KB, temperature=0.8, top_k=40, top_p=0.95,
                model_id="shoestring", log=None, seed=None):
    """A Server for a loaded Model, listening but not yet serving (call run or serve_forever)."""
    engine = Engine(model, int(cache_mb * (1 << 20)), max_tokens, temperature, top_k, top_p,
                    model_id, seed)
    try:
        return Server((host, port), engine, api_key or None, max_body_kb << 10, log)
    except OSError as exc:
        raise ShoestringError("cannot listen on %s port %d (%s) (choose another --port or --host)"
                              % (host, port, exc.strerror or exc)) from None


def run(srv):
    """serve_forever until Ctrl-C or SIGTERM, then stop cleanly: no new connections, replies in
    progress end within a few seconds, the socket closes; returns 0."""
    def on_term(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, on_term)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.engine.stopping.set()
        deadline = time.monotonic() + 5
        while srv.engine.active and time.monotonic() < deadline:
            time.sleep(0.02)
        srv.server_close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    print("shoestring serve: stopped", file=sys.stderr, flush=True)
    return 0
