"""shoestring: train and chat with a tiny mixture-of-experts GRU language model, no PyTorch.

The hot paths are hand-written C (csrc/) compiled through cffi; this package is the thin Python
around them: tokenizer, training loop, checkpoints, inference, chat and command line.

    import shoestring
    result = shoestring.train(shoestring.TrainConfig(max_steps=200), model_data=["data.txt"])
    model = shoestring.load(result.best_checkpoint)
    print(model.generate("Once upon a time", max_tokens=50, seed=1))
"""
from .version import __version__  # noqa: F401,E402

from .config import TrainConfig  # noqa: F401,E402
from .errors import (  # noqa: F401,E402
    CheckpointError,
    DataError,
    KernelArgumentError,
    ShoestringError,
    TokenizerError,
    TrainingError,
    UsageError,
)
from .params import ModelConfig  # noqa: F401,E402


def load(path, int8=False):
    """Load a checkpoint into a ready-to-run Model (generate, chat); int8=True decodes with int8
    weights (an int8 export always does); see shoestring.inference."""
    from .inference import load as _load
    return _load(path, int8=int8)


def train(config=None, model_data=None, validation_data=None, out_dir=None, callbacks=(),
          checkpoint=None, bpe_data=None, quiet=False):
    """Train a model as `shoestring train` does (the command calls this); returns a TrainResult
    (best and last checkpoint paths, metrics rows, steps, tokens, seconds). Callbacks: objects
    with on_train_start / on_step_end / on_gradients / on_eval / on_checkpoint / on_train_end
    methods, or {event: function} dicts; see shoestring.trainer and the README."""
    from .trainer import train as _train
    return _train(config, model_data=model_data, validation_data=validation_data,
                  out_dir=out_dir, callbacks=callbacks, checkpoint=checkpoint, bpe_data=bpe_data,
                  quiet=quiet)
