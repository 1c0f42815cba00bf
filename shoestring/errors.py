"""The exceptions shoestring raises; every one derives from ShoestringError.

Messages name settings as the Python API spells them (`batch_size`); an error about settings
carries their names in `.settings`, so the command line can name its flags instead
(`--batch-size`). The CLI turns a ShoestringError into one line, `shoestring: error: <what>
(<hint>)`, exit 1 (a UsageError: exit 2).
"""


class ShoestringError(Exception):
    """Base of every error shoestring raises on purpose; `.settings` names the settings its
    message mentions (a name or a tuple of names given as `setting=`)."""

    def __init__(self, *args, setting=()):
        super().__init__(*args)
        self.settings = (setting,) if isinstance(setting, str) else tuple(setting)


class UsageError(ShoestringError, ValueError):
    """A setting whose value makes no sense (the command line exits 2)."""


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
