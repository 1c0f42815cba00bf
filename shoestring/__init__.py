"""shoestring: train and chat with a tiny mixture-of-experts GRU language model, no PyTorch.

The hot paths are hand-written C (csrc/) compiled through cffi; this package is the thin Python
around them: tokenizer, training loop, checkpoints, chat and command line.
"""
__version__ = "0.1.0"

from .errors import (  # noqa: F401
    CheckpointError,
    DataError,
    KernelArgumentError,
    ShoestringError,
    TokenizerError,
    TrainingError,
)


def load(path):
    """Load a checkpoint into a ready-to-run Model (generate, chat); see shoestring.sample."""
    from .sample import load as _load
    return _load(path)
