"""The exceptions shoestring raises; every one derives from ShoestringError.

The CLI turns a ShoestringError into one line, `shoestring: error: <what> (<hint>)`, exit 1.
"""


class ShoestringError(Exception):
    """Base of every error shoestring raises on purpose."""


class KernelArgumentError(ShoestringError, ValueError):
    """A kernel wrapper was given an array of the wrong dtype, layout or shape."""


class TokenizerError(ShoestringError):
    """A tokenizer could not be trained, loaded or used."""


class CheckpointError(ShoestringError):
    """A checkpoint file is missing, truncated, corrupted, of another version or mismatched."""


class DataError(ShoestringError):
    """Training or validation data is missing, empty, unreadable or too short."""


class TrainingError(ShoestringError):
    """Training cannot go on (for example, the loss became NaN or infinite)."""
