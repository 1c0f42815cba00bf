"""inference.py: running a trained model from Python: load, Model.generate, ChatSession.

    import shoestring
    model = shoestring.load("ck.json")
    print(model.generate("Once upon a time", max_tokens=50, seed=1))
    chat = model.chat(temperature=0.8, seed=1)
    print(chat.send("hello"))                     # a string
    for piece in chat.send("and you?", stream=True):
        print(piece, end="", flush=True)          # text pieces, never half a UTF-8 character

The whole loop runs in C (ss_generate, csrc/decode.c): the prompt is fed, then every token is drawn
(ss_sample), fed back (ss_decode_step over weights packed once at load, with layer 0's input
products of every token tabled then too) and written into a buffer that Python reads chunk by chunk
to stream text; the state, the sampler and the random generator stay in C between chunks. When a
stream is stopped early (Ctrl-C, closing it), the state is put back to right after the last token
handed out, exactly as if the loop had stopped there. `int8=True` (or an int8 export) runs the step
on int8 weights with per-row scales (a quarter of the bytes read per token; kernels.DecodeWeights).
One loop (`_decode`) serves generate, chat and the server, and one check (`_check_sampling`) their
sampling arguments. Sampling never picks a special token other than [EOS] ([USER], [BOT], [PAD],
[UNK] are banned); [EOS] ends the reply and is never printed. The same seed gives the same text on
every run and machine (the generator is splitmix64 in C; the floating-point sums may differ in the
last bits between instruction sets, which can flip a near-tie, so "the same text" holds for one
build on one instruction set).

Chat feeds each turn in exactly the training format of MODEL.md §4, token for token as the
tokenizer cuts the corpus:

    [USER] <user text> [EOS]\\n[BOT] <reply> [EOS]\\n[USER] ...

The user turn is `[USER]`, then ` <text> ` encoded with allow_special=False (so typing `[EOS]`
cannot forge a turn), then `[EOS]`, `\\n`, `[BOT]`. The reply's first token carries its leading
space (` The`), as in training; the space before `[EOS]` is its own token. After the reply the
session feeds `[EOS]` and `\\n` (and the space first if the reply was cut off), so the recurrent
state sees the same stream as in training, and carries it to the next turn: an RNN's memory
costs the same for turn 1 and turn 100. Printed replies drop the leading space and any trailing
whitespace.
"""
import os

import numpy as np

from . import kernels
from .config import check_length, check_sampling
from .errors import ShoestringError
from .params import ModelConfig, ParamLayout, guard_state


def load(path, int8=False):
    """Load a checkpoint written by `shoestring train` (or exported) into a Model (raises
    CheckpointError). int8=True quantises the matrices to int8 for decoding; an int8 export
    (`shoestring export --int8`) always loads as int8."""
    from .checkpoint import Checkpoint, read_checkpoint
    from .errors import CheckpointError
    from .quant import is_int8_file, load_int8

    q8 = None
    if is_int8_file(path):
        raw, q8 = load_int8(path)
        ck = Checkpoint(raw, path)
    else:
        ck = read_checkpoint(path)        # validated there: config, tokenizer, parameters
    try:
        model = Model(ck.model, ck.params, ck.tokenizer, int8=int8, q8=q8)
        check_outputs(model, "checkpoint %s" % path)
        return model
    except ShoestringError as exc:
        msg = str(exc)
        raise CheckpointError(msg if msg.startswith("checkpoint ") else "%s: %s" % (path, msg)) \
            from None


def _check_sampling(temperature, top_k, top_p):
    """config.check_sampling, the one check the command line uses too (temperatures below 1e-6
    are greedy; see there)."""
    return check_sampling(temperature, top_k, top_p)[:3]


def _make_rng(seed):
    """A kernels.Rng from a seed in [0, 2**64) (never wrapped), or from the OS when seed is None."""
    seed = check_sampling(0.0, 0, 1.0, seed)[3]
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    return kernels.Rng(seed)


def check_outputs(model, where="the model"):
    """Run the model once on two tokens and refuse it if its state or logits are not finite
    (finite but huge parameters pass the checkpoint's checks, then chat printed nothing, #17)."""
    dec = model.decoder()
    tok = model.tokenizer
    ids = [model.eos if model.eos is not None else 0] + tok.encode("a", allow_special=False)
    for t in ids:
        dec.step(t)
        if not (np.isfinite(dec.logits).all() and np.isfinite(dec.state).all()):
            big = float(np.max(np.abs(model.params)))
            raise ShoestringError(
                "%s produces non-finite outputs (its largest parameter is %.3g, too large for "
                "float32 arithmetic) (the run diverged before this save; use an earlier "
                "checkpoint)" % (where, big))


class Model:
    """A trained model ready to run: config, flat float32 parameters and tokenizer.

    The parameters are used in place (not copied); after changing them (training goes on), call
    refresh() so that decoding sees the new values. int8=True decodes with int8 copies of the
    matrices (quantised per row here, or given as q8 = {name: (q, scale)}, as an int8 export
    stores them).
    """

    def __init__(self, cfg, params, tokenizer, int8=False, q8=None):
        if not isinstance(cfg, ModelConfig):
            raise ShoestringError("Model: cfg must be a ModelConfig, got %s" % type(cfg).__name__)
        layout = ParamLayout(cfg)
        if (not isinstance(params, np.ndarray) or params.dtype != np.float32
                or params.shape != (layout.n,)):
            raise ShoestringError(
                "Model: params must be a float32 array of shape (%d,) for this configuration, got %s"
                % (layout.n, getattr(params, "shape", type(params).__name__)))
        if tokenizer.vocab_size != cfg.V:
            raise ShoestringError(
                "the tokenizer has %d tokens but the model's vocabulary V is %d (they must come "
                "from the same training run)" % (tokenizer.vocab_size, cfg.V))
        self.cfg = cfg
        self.params = np.ascontiguousarray(params)
        self.tokenizer = tokenizer
        self.views = layout.views(self.params)
        self.int8 = bool(int8 or q8 is not None)
        self._weights = kernels.DecodeWeights(cfg, self.views, int8=self.int8, q8=q8)
        self.n_params = layout.n
        specials = [i for i in range(cfg.V) if tokenizer.is_special(i)]
        self.eos = tokenizer.special_id("[EOS]") if "[EOS]" in tokenizer.special_tokens else None
        # sampling never produces a special token other than [EOS]
        self.allowed = np.ones(cfg.V, np.uint8)
        for i in specials:
            if i != self.eos:
                self.allowed[i] = 0

    def refresh(self):
        """Re-read the parameters after they changed in place."""
        self._weights.repack()

    def describe(self):
        """One line for banners: size, shape and the instruction set in use."""
        c = self.cfg
        routing = "dense" if c.K == c.X else "top-%d of %d experts" % (c.K, c.X)
        weights = ", int8 weights (%s)" % kernels.int8_kernel() if self.int8 else ""
        return ("%s parameters (V=%d, C=%d, H=%d, L=%d, X=%d, %s), %s kernels%s"
                % (format(self.n_params, ","), c.V, c.C, c.H, c.L, c.X, routing,
                   kernels.isa_active(), weights))

    def decoder(self):
        """A fresh kernels.Decoder (zero state) on this model's weights."""
        return kernels.Decoder(self._weights, self.allowed)

    # -- generation ---------------------------------------------------------------------------
    def generate(self, prompt, max_tokens=200, temperature=0.8, top_k=40, top_p=0.95, seed=None,
                 stream=False, allow_special=False):
        """Continue `prompt` by up to max_tokens tokens (stopping early at [EOS]); the text of the
        continuation as one string, or with stream=True an iterator of text pieces.
        allow_special=True lets the prompt contain special tokens such as [USER]."""
        temperature, top_k, top_p = _check_sampling(temperature, top_k, top_p)
        max_tokens = check_length(max_tokens, "max_tokens", 0)     # the CLI's bounds (#17)
        if not isinstance(prompt, str):
            raise ShoestringError("the prompt must be a string, got %s" % type(prompt).__name__)
        ids = self.tokenizer.encode(prompt, allow_special=allow_special)
        if not ids:
            raise ShoestringError("the prompt is empty (give some text to continue)")
        rng = _make_rng(seed)
        it = self._generate(ids, int(max_tokens), temperature, top_k, top_p, rng)
        return it if stream else "".join(it)

    def _generate(self, ids, max_tokens, temperature, top_k, top_p, rng):
        sd = self.tokenizer.stream_decoder()
        for chunk in _decode(self.decoder(), ids, rng, (temperature, top_k, top_p), max_tokens,
                             self.eos, chunks=True):
            piece = sd.feed_many(chunk)
            if piece:
                yield piece
        piece = sd.flush()
        if piece:
            yield piece

    # -- chat -----------------------------------------------------------------------------------
    def chat(self, max_response=260, temperature=0.8, top_k=40, top_p=0.95, seed=None):
        """A ChatSession: multi-turn, the recurrent state carried from turn to turn."""
        return ChatSession(self, max_response, temperature, top_k, top_p, seed)


def _decode(dec, ids, rng, sampling, max_tokens, eos, ended=None, chunks=False):
    """The decode loop, in C (kernels.Generator over ss_generate): feed `ids` to the Decoder
    `dec`, then sample up to max_tokens tokens, each fed back before it is yielded. Stops at
    `eos` (neither yielded nor fed), and then appends True to the list `ended` if one is given.
    Closing it early leaves `dec` and `rng` exactly as after the last token yielded.
    chunks=True yields the C loop's chunks (lists of up to 64 ids) instead of single ids: one
    Python step per chunk, for a caller that handles a chunk at once (generate; 64 tokens take
    about a millisecond, so the text still streams)."""
    gen = kernels.Generator(dec, rng, *sampling, eos=eos, chunk=64 if chunks else 16)
    toks = gen.generate(ids, max_tokens) if chunks else gen.tokens(ids, max_tokens)
    try:
        yield from toks
    finally:
        toks.close()              # stopped early: back to right after the last token yielded
    if gen.status == "eos" and ended is not None:
        ended.append(True)


def decode_tokens(dec, ids, rng, sampling, max_tokens, eos, ended=None):
    """The decode loop for a caller that holds its own kernels.Decoder (shoestring.serve keeps
    one per request and restores cached states into it): the same steps as generate and
    ChatSession.send. sampling = (temperature, top_k, top_p), checked by the caller."""
    return _decode(dec, ids, rng, sampling, max_tokens, eos, ended)


class _ReplyTrim:
    """Drops a reply's leading whitespace and holds trailing whitespace back until more text
    follows, so streamed pieces join to exactly the stripped reply."""

    def __init__(self):
        self.started = False
        self.pending = ""

    def feed(self, piece):
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        text = self.pending + piece
        body = text.rstrip()
        self.pending = text[len(body):]
        return body


ReplyTrim = _ReplyTrim       # public: a server strips its replies exactly as a session does


class ChatSession:
    """One conversation. send(text) feeds a user turn in the training format and returns the
    reply (a string, or an iterator of pieces with stream=True); reset() starts afresh."""

    def __init__(self, model, max_response=260, temperature=0.8, top_k=40, top_p=0.95, seed=None):
        tok = model.tokenizer
        for name in ("[USER]", "[BOT]", "[EOS]"):
            if name not in tok.special_tokens:
                raise ShoestringError(
                    "chat needs the special token %s, which this tokenizer lacks (train the "
                    "tokenizer with the default special tokens)" % name)
        max_response = check_length(max_response, "max_response")
        self.model = model
        self.max_response = int(max_response)
        self.temperature, self.top_k, self.top_p = _check_sampling(temperature, top_k, top_p)
        self.rng = _make_rng(seed)
        self._dec = model.decoder()
        self._user = tok.special_id("[USER]")
        self._bot = tok.special_id("[BOT]")
        self._eos = tok.special_id("[EOS]")
        self._nl = tok.encode("\n", allow_special=False)
        self._space = tok.encode(" ", allow_special=False)
        self._busy = False
        self._decode = _decode    # the token loop (a test can script it)
        self.turns = 0
        self.state_resets = 0

    def reset(self):
        """Forget the conversation: zero recurrent state (the random stream goes on)."""
        if self._busy:
            raise ShoestringError("reset() during a streamed reply: finish or close the reply first")
        self._dec.reset()
        self.turns = 0

    def turn_ids(self, text):
        """The token ids fed for one user turn: [USER] ` <text> ` [EOS] `\\n` [BOT]."""
        body = self.model.tokenizer.encode(" " + text.strip() + " ", allow_special=False)
        return [self._user] + body + [self._eos] + self._nl + [self._bot]

    def send(self, text, stream=False):
        """Feed one user turn, generate the reply until [EOS] or max_response tokens."""
        if not isinstance(text, str):
            raise ShoestringError("send() needs a string, got %s" % type(text).__name__)
        if self._busy:
            raise ShoestringError("send() during a streamed reply: finish or close the reply first")
        it = self._reply(self.turn_ids(text))
        return it if stream else "".join(it)

    def _reply(self, ids):
        dec = self._dec
        self._busy = True
        ended = []                # [True] once [EOS] is sampled
        last = ""                 # text of the last token fed (does it end in whitespace?)
        toks = None
        try:
            sd = self.model.tokenizer.stream_decoder()
            trim = _ReplyTrim()
            toks = self._decode(dec, ids, self.rng, (self.temperature, self.top_k, self.top_p),
                                self.max_response, self._eos, ended)
            for tok in toks:
                piece = sd.feed(tok)
                last = piece or last
                piece = trim.feed(piece)
                if piece:
                    yield piece
            piece = trim.feed(sd.flush())
            if piece:
                yield piece
        finally:
            if toks is not None:
                toks.close()      # stopped early: the state right after the last token shown
            # close the turn as training data does: [space] [EOS] \n
            if not ended and last and not last[-1].isspace():
                for t in self._space:
                    dec.step(t, head=False)
            dec.step(self._eos, head=False)
            for t in self._nl:
                dec.step(t, head=False)
            # the training guard: a state grown past STATE_GUARD (or not finite) starts afresh
            self.state_resets += guard_state(dec.state[:, None])
            self.turns += 1
            self._busy = False
