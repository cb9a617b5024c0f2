"""User-facing errors.

Anything derived from :class:`CnnlabError` is a mistake the user can fix (a
missing file, a bad value). The CLI prints its message on one line, without a
traceback, and exits with ``exit_code``.
"""
from __future__ import annotations


class CnnlabError(Exception):
    """A problem the user can fix; the message says what to do."""

    exit_code = 2


class ConfigError(CnnlabError):
    """An invalid option, value or config file."""


class DataError(CnnlabError):
    """Missing, unreadable or corrupted dataset files."""


class ModelError(CnnlabError):
    """A model that cannot train on the data: wrong output shape, parameters on the meta device, a dtype
    the batches do not have."""


class CheckpointError(CnnlabError):
    """A checkpoint that cannot or must not be loaded."""


class RunDirError(CnnlabError):
    """A run directory that is missing pieces or would be overwritten."""


class SaveError(CnnlabError):
    """A file could not be written (disk full, permissions); the old file is intact."""

    exit_code = 4


class ImageError(CnnlabError):
    """An input image that cannot be used: unreadable, truncated, not an image, too large, blank."""


class ExportError(CnnlabError):
    """A model that cannot be exported, or whose export does not reproduce PyTorch's outputs."""


class NonFiniteLossError(CnnlabError):
    """Training produced a NaN or infinite loss."""

    exit_code = 3
