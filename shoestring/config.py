"""config.py: TrainConfig, every setting of a training run, typed, with its default and its check.

    from shoestring import TrainConfig, ModelConfig
    cfg = TrainConfig(model=ModelConfig(H=128), lr=3e-3, max_steps=500)

One source for the Python API and the command line: each field's metadata says its kind and
range; `TrainConfig(...)` checks every field once (UsageError naming the setting), and the
`shoestring train` flags are parsed by `parse_setting`, which applies the same check. Adding a
training setting is one field here plus one add_setting line in cli.add_train_args.

`resume_config` merges a checkpoint's config with the settings given again (the only place
resuming decides what comes from where): architecture and the settings that define the data
position (seq_length, batch_size, accumulate) must agree with the checkpoint; the run's plan
(epochs, lr, ...) is the checkpoint's unless given; session settings (threads, max_minutes,
encoding_errors) are never taken from the checkpoint.
"""
import dataclasses
import math
import struct
from dataclasses import dataclass, field
from typing import Optional

from .errors import CheckpointError, ShoestringError, UsageError
from .params import ModelConfig

# Upper bounds far beyond any model this tool can train on a small device, low enough that a
# typo (an extra zero run) fails at once instead of allocating terabytes or looping for ever.
MAX_VOCAB = 1_000_000
MAX_WIDTH = 65_536          # C, H
MAX_LAYERS = 64
MAX_EXPERTS = 1024
MAX_SIZE = 1_000_000        # T, B, accumulate, tokens per reply
MAX_THREADS = 1024
MAX_COUNT = 10 ** 12        # steps, epochs, intervals
MAX_SEED = 2 ** 64 - 1

# Without epochs, max_steps or minutes a run gets a time budget (issue #11: the loop plans its
# schedule to end with the budget and keeps the best validation in best.json).
DEFAULT_MINUTES = 5.0       # user data
BUNDLED_MINUTES = 2.0       # the bundled chat corpus

NEW_RUN_CAP = 4.0           # the candidate's soft cap of new models (ModelConfig.cap; issue #11)

# Dropout and weight drop of a run that names neither (issue #11; BENCHMARKS.md, "Session 7").
# The right amount follows how many times the run sees its data. Measured on the 2-core Zen 4:
# 0.3 is best where a run sees its text about 300 times (nano-shakespeare in 5 minutes; 0.2
# memorises there), 0.2 where it sees it about 130 times (the bundled corpus in 2 minutes, 1 MB
# in 10 minutes). The passes are known only once the speed is, after the first steps, so the
# rule reads what fixes them before the first step: training characters per budget minute (or
# the epochs asked for).
DROPOUT_MANY_PASSES = 0.3
DROPOUT_FEW_PASSES = 0.2
FEW_PASSES_CHARS_PER_MINUTE = 60_000    # a time budget with this much text per minute or more
FEW_PASSES_EPOCHS = 200                 # an epochs plan with fewer epochs than this

# The vocabulary of a new run that names none (ModelConfig V=None; issue #11; BENCHMARKS.md,
# "Session 8"). A larger vocabulary spans more text per token, so the recurrence covers more of
# it per step and a step costs less per character, but each entry of the embedding and the head
# learns from fewer examples. Measured on a 1 MB corpus in 10 minutes (2 threads): 2,000 entries
# beat 850 by 0.03 bits/char on the Zen 4 and 0.06 on a Zen 2; the 235 KB corpora keep 850. The
# rule: one entry per VOCAB_CHARS_PER_ENTRY bytes of training text, between the two.
VOCAB_MIN = 850                     # MODEL.md's default; the small corpora were tuned with it
VOCAB_MAX = 2000
VOCAB_CHARS_PER_ENTRY = 450         # 900 KB of training text (1 MB held out 90/10): 2,000

# what resuming does with a setting (see resume_config)
FIXED, PLAN, SESSION = "fixed", "plan", "session"


def setting(default, kind, lo=None, hi=None, lo_open=False, choices=None, resume=PLAN):
    """A TrainConfig field: default, kind (int, float or str), range or choices, resume rule.
    A default of None means "chosen by the trainer" (documented on the field)."""
    return field(default=default, metadata={"kind": kind, "lo": lo, "hi": hi, "lo_open": lo_open,
                                            "choices": choices, "resume": resume})


def check_setting(name, value, spec):
    """`value` if it is valid for the setting `name` (ints become floats where floats are
    expected); UsageError naming the setting otherwise."""
    if value is None and spec["default"] is None:
        return None
    kind, lo, hi = spec["kind"], spec["lo"], spec["hi"]
    if kind is str:
        if value not in spec["choices"]:
            raise UsageError("%s must be one of %s, got %r"
                             % (name, ", ".join(spec["choices"]), value), setting=name)
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError("%s must be a whole number, got %r" % (name, value), setting=name)
    else:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise UsageError("%s must be a finite number, got %r" % (name, value), setting=name)
        value = float(value)
        _check_float32(name, value)
    if lo is not None and (value < lo or (spec["lo_open"] and value == lo)):
        raise UsageError("%s must be %s %s, got %r" % (name, ">" if spec["lo_open"] else "at least",
                                                     lo, value), setting=name)
    if hi is not None and value > hi:
        raise UsageError("%s must be at most %s, got %r" % (name, format(hi, ","), value),
                         setting=name)
    return value


def float32_of(value):
    """value as the C kernels see it (float32): 0.0 when it underflows, inf when it overflows."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _check_float32(name, value):
    """Refuse a float whose float32 meaning differs from what was asked: 1e-46 is 0, 1e39 is
    infinite in float32 (#17: eps_adamw 1e-46 made NaN weights)."""
    f = float32_of(value)
    if math.isinf(f):
        raise UsageError("%s %r is too large for float32 (at most 3.4e38)" % (name, value),
                         setting=name)
    if value != 0 and f == 0:
        raise UsageError("%s %r is 0 in float32, the precision training uses (use 1e-38 or more)"
                         % (name, value), setting=name)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (MODEL.md §2, §6). None means "the trainer chooses"."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(V=None, cap=NEW_RUN_CAP))
                                                              # architecture; model.V is the
                                                              # vocabulary asked of the tokenizer
                                                              # (None: planned_vocab)
    seq_length: int = setting(80, int, 1, MAX_SIZE, resume=FIXED)        # T, steps per window
    batch_size: int = setting(16, int, 1, MAX_SIZE, resume=FIXED)        # B, parallel streams
    accumulate: int = setting(1, int, 1, MAX_SIZE, resume=FIXED)         # windows per step
    epochs: Optional[int] = setting(None, int, 1, MAX_COUNT)   # None: the time budget decides
    max_steps: Optional[int] = setting(None, int, 1, MAX_COUNT)          # None: no limit
    max_minutes: Optional[float] = setting(None, float, 0.0, 10 ** 6, lo_open=True,
                                           resume=SESSION)     # per session; None: no limit
    lr: float = setting(0.003, float, 0.0, None, lo_open=True)           # peak learning rate
    wd: float = setting(0.01, float, 0.0)                      # AdamW decay, matrices only
    grad_clip: float = setting(1.0, float, 0.0)                # global-norm clip; 0 disables
    lr_schedule: str = setting("cosine", str, choices=("cosine", "constant"))
    warmup_steps: Optional[int] = setting(None, int, 0, MAX_COUNT)   # None: 2% of the run, <= 200
    eps_adamw: float = setting(1e-8, float, 0.0, 1.0, lo_open=True)
    # seed and val_fraction are FIXED on resume: the RNG state and the data split come from the
    # checkpoint, so a different value could not apply (#17: refused, not silently ignored)
    seed: int = setting(1337, int, 0, MAX_SEED, resume=FIXED)  # weights, stream offsets
    val_fraction: float = setting(0.1, float, 0.0, 0.5, resume=FIXED)  # held out without validation data
    val_tokens: int = setting(250_000, int, 0, MAX_COUNT)     # scored per validation; 0: all
    eval_every: Optional[int] = setting(None, int, 1, MAX_COUNT)     # None: once per epoch
    threads: Optional[int] = setting(None, int, 1, MAX_THREADS, resume=SESSION)  # None: all cores
    encoding_errors: str = setting("strict", str, choices=("strict", "replace"), resume=SESSION)
    # issue #11: regularisers (training only; masks from the seeded generator), weight averaging
    # and a time budget
    # defaults from tools/bench_quality.py (BENCHMARKS.md, "Quality per CPU-minute")
    dropout: Optional[float] = setting(None, float, 0.0, 0.95)  # locked dropout, layer/head
                                                                # inputs; None: planned_dropout
    embedding_dropout: float = setting(0.1, float, 0.0, 0.95)  # whole vocabulary rows per window
    weight_drop: Optional[float] = setting(None, float, 0.0, 0.95)  # DropConnect on Wch per step;
                                                                    # None: planned_dropout
    ema: float = setting(0.0, float, 0.0, 0.99999)             # moving-average decay; 0: off
    minutes: Optional[float] = setting(None, float, 0.0, 10 ** 6, lo_open=True)  # time budget
    patience: Optional[int] = setting(None, int, 1, MAX_COUNT)  # validations without a new best
                                                                # before stopping; None: never

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig):
            raise UsageError("TrainConfig.model must be a ModelConfig, got %s"
                             % type(self.model).__name__, setting="model")
        for name, spec in SETTINGS.items():
            object.__setattr__(self, name, check_setting(name, getattr(self, name), spec))

    def replace(self, **changes):
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The settings without the model (the checkpoint stores that on its own)."""
        return {name: getattr(self, name) for name in SETTINGS}


def planned_dropout(config, train_chars=None):
    """config with dropout and weight_drop chosen where they are None: DROPOUT_FEW_PASSES when
    the plan will show the model its training text fewer times (a time budget with at least
    FEW_PASSES_CHARS_PER_MINUTE characters per minute, or fewer than FEW_PASSES_EPOCHS epochs),
    else DROPOUT_MANY_PASSES (also when train_chars is unknown or the plan is max_steps alone)."""
    unset = [k for k in ("dropout", "weight_drop") if getattr(config, k) is None]
    if not unset:
        return config
    if config.minutes is not None:
        few = train_chars is not None and train_chars >= FEW_PASSES_CHARS_PER_MINUTE * config.minutes
    else:
        few = config.epochs is not None and config.epochs < FEW_PASSES_EPOCHS
    return config.replace(**{k: DROPOUT_FEW_PASSES if few else DROPOUT_MANY_PASSES for k in unset})


def planned_vocab(config, train_bytes):
    """config with model.V chosen where it is None: one entry per VOCAB_CHARS_PER_ENTRY bytes of
    training text, at least VOCAB_MIN and at most VOCAB_MAX, rounded to 50."""
    if config.model.V is not None:
        return config
    V = int(round(train_bytes / VOCAB_CHARS_PER_ENTRY / 50)) * 50
    return config.replace(model=dataclasses.replace(config.model,
                                                    V=min(VOCAB_MAX, max(VOCAB_MIN, V))))


def _spec(f):
    return dict(f.metadata, default=f.default)


SETTINGS = {f.name: _spec(f) for f in dataclasses.fields(TrainConfig) if f.name != "model"}


def parse_setting(name, text):
    """The value of setting `name` from command-line text; UsageError if it is not valid."""
    spec = SETTINGS[name]
    if spec["kind"] is int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError("expected a whole number, got %r" % text, setting=name) from None
    elif spec["kind"] is float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError("expected a number, got %r" % text, setting=name) from None
    else:
        value = text
    return check_setting(name, value, spec)


def from_saved(saved):
    """The TrainConfig a checkpoint's `config` section describes ({"model": ..., "train": ...}).
    Unknown keys (older versions kept sampling settings there) are ignored; missing ones take
    their defaults. CheckpointError if a stored value is not valid."""
    train = saved.get("train") or {}
    if not isinstance(train, dict):
        raise CheckpointError("the checkpoint's config.train is not an object (the file was "
                              "edited or damaged; use another checkpoint)")
    model = ModelConfig(**saved["model"])
    asked = train.get("bpe_vocab_size")
    if asked is not None:
        if not isinstance(asked, int) or isinstance(asked, bool) or not 1 <= asked <= MAX_VOCAB:
            raise CheckpointError("the checkpoint's config.train.bpe_vocab_size is %r, not a whole "
                                  "number in [1, %d] (the file was edited or damaged; use another "
                                  "checkpoint)" % (asked, MAX_VOCAB))
    values = {}
    for name, spec in SETTINGS.items():
        if name in train and spec["resume"] != SESSION:
            try:
                values[name] = check_setting(name, train[name], spec)
            except UsageError as exc:
                raise CheckpointError("the checkpoint's config.train.%s is %r, which is not valid "
                                      "(%s) (the file was edited or damaged; use another "
                                      "checkpoint)" % (name, train[name], exc)) from None
    return TrainConfig(model=model, **values), asked


def resume_config(saved, given=None, given_model=None):
    """The TrainConfig of a resumed run: the checkpoint's `config` section merged with the
    settings given again. `given`: {setting: value} actually given (the command line's flags, or
    every field of a Python caller's TrainConfig); `given_model`: {ModelConfig field: value}
    actually given. Architecture and FIXED settings may only agree with the checkpoint (the
    vocabulary may also equal the one asked for); PLAN settings given replace the checkpoint's;
    SESSION settings are never taken from the checkpoint."""
    if not isinstance(saved.get("train"), dict) or not saved["train"]:
        # without it every setting would silently take its default, and the first one that
        # differs (seq_length 80) would show up as a contradiction or a shape error (#17)
        raise CheckpointError("the checkpoint has no training configuration (config.train): it "
                              "cannot be resumed (resume from last.json or best.json of a "
                              "`shoestring train` run, or start a new run)")
    cfg, asked = from_saved(saved)
    given, given_model = dict(given or {}), dict(given_model or {})
    for key, value in given_model.items():
        have = getattr(cfg.model, key)
        agree = (have, asked) if key == "V" else (have,)
        if value not in agree:
            raise ShoestringError("%s %s contradicts the checkpoint, which has %s (leave it out "
                                  "to resume, or start a new run)" % (key, value, have),
                                  setting=key)
    for name, value in given.items():
        if SETTINGS[name]["resume"] == FIXED and value != getattr(cfg, name):
            raise ShoestringError("%s %s contradicts the checkpoint, which has %s (leave it out "
                                  "to resume)" % (name, value, getattr(cfg, name)), setting=name)
    return cfg.replace(**given)


# ---- sampling settings (generate, chat): one check for the command line and the Python API ------
MAX_TEMPERATURE = 1000.0    # beyond this the choice is uniform noise already
GREEDY_BELOW = 1e-6         # 0 < temperature < this samples greedily (see check_sampling)


def check_sampling(temperature, top_k, top_p, seed=None):
    """(temperature, top_k, top_p, seed) checked and normalised; UsageError naming the setting.

    temperature: a finite number in [0, 1000]; 0 is greedy, and so is any temperature below
    1e-6: softmax(logits / T) is then one-hot at float32 resolution, and 1/T overflows float32
    below about 3e-39 (which made the C sampler print banned tokens, #17). top_k: a whole number
    >= 0 (0, or >= the vocabulary, keeps every token). top_p: in (0, 1]. seed: None (random) or a
    whole number in [0, 2**64) -- never wrapped, so seed=-1 is an error, not another seed."""
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature) or not 0 <= temperature <= MAX_TEMPERATURE):
        raise UsageError("temperature must be a number in [0, %g] (0 is greedy), got %r"
                         % (MAX_TEMPERATURE, temperature), setting="temperature")
    temperature = float(temperature)
    if temperature < GREEDY_BELOW:
        temperature = 0.0
    if not _is_whole(top_k) or top_k < 0:
        raise UsageError("top_k must be a whole number >= 0 (0 disables it), got %r" % (top_k,),
                         setting="top_k")
    if (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not math.isfinite(top_p)
            or not 0 < top_p <= 1):
        raise UsageError("top_p must be a number in (0, 1] (1 disables it), got %r" % (top_p,),
                         setting="top_p")
    if seed is not None and (not _is_whole(seed) or not 0 <= seed <= MAX_SEED):
        raise UsageError("seed must be None or a whole number in [0, 2**64), got %r" % (seed,),
                         setting="seed")
    return temperature, int(top_k), float(top_p), None if seed is None else int(seed)


def check_length(n, name, lo=1):
    """A token count (max_tokens, max_response) as the command line takes it: a whole number
    (not a bool) in [lo, MAX_SIZE]; UsageError naming the setting."""
    if not _is_whole(n) or not lo <= n <= MAX_SIZE:
        raise UsageError("%s must be a whole number in [%d, %s], got %r"
                         % (name, lo, format(MAX_SIZE, ","), n), setting=name)
    return int(n)


def _is_whole(v):
    return isinstance(v, int) and not isinstance(v, bool) or (
        type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iu"
        and getattr(v, "ndim", 0) == 0)
