"""User-facing errors: each carries one line that says what is wrong and where."""


class FambenchError(Exception):
    """Base of every error the CLI reports as a single line (exit code 2)."""


class DataError(FambenchError):
    """A corpus, manifest, audio file or transcript is missing or malformed."""


class ConfigError(FambenchError):
    """A preset, option or hyperparameter is invalid."""


class ResultsError(FambenchError):
    """A results directory is missing, empty, unwritable or in an unknown format."""


class FileWriteError(FambenchError):
    """A file could not be written (full disk, no permission, ...); names the path."""
