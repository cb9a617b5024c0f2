"""User-facing errors.

Anything derived from :class:`CnnlabError` is a mistake the user can fix (a
missing file, a bad value). The CLI prints its message on one line, without a
traceback, and exits with ``exit_code``.

The library speaks no front door's language: a message names files, values and settings as the
library knows them (``data.data_dir``, ``overwrite``), never a command-line flag. What the user
can do about it is data on the error (:attr:`CnnlabError.option`, and the fields of the
subclasses below), and each front door writes its own hint from it: the CLI names ``--overwrite``,
the notebook API ``overwrite=True``, the server a JSON field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): the reason, in one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CnnlabError(Exception):
    """A problem the user can fix; the message says what went wrong.

    ``option``: the setting the error concerns, named as the library names it: a config key
    (``"data.data_dir"``, ``"train.device"``) or a keyword (``"overwrite"``, ``"run_dir"``,
    ``"index"``). Front doors turn it into their own hint.
    """

    exit_code = 2
    option: str | None = None
    #: The way out, in the words of the front door that caught the error (set there, never below).
    hint: str | None = None

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        if option is not None:
            self.option = option

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}; {self.hint}" if self.hint else text


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
    """A run directory that is missing pieces or would be overwritten.

    ``option = "run_dir"`` when choosing another run folder is the way out.
    """


class RunConfigMismatch(RunDirError):
    """The run folder holds a run of another config: ``differences`` lists the dotted keys that differ."""

    option = "run_dir"

    def __init__(self, path: Path, differences: Sequence[str], *, message: str | None = None) -> None:
        # ``message``: the same sentence in the user's language, written by the raiser (this module
        # sits below core.i18n and cannot translate).
        self.path, self.differences = Path(path), list(differences)
        super().__init__(message or f"{path} holds a run with a different config ({', '.join(self.differences)} differ)")


class ResumeChangeError(RunDirError):
    """A resume that would change settings fixed when the run started (``fixed``); ``allowed`` may change."""

    option = "resume"

    def __init__(self, path: Path, fixed: Sequence[str], allowed: Sequence[str], *,
                 message: str | None = None) -> None:
        self.path, self.fixed, self.allowed = Path(path), list(fixed), list(allowed)
        super().__init__(message or f"{path} continues as it was configured; {', '.join(self.fixed)} cannot be changed "
                         f"when resuming (only {', '.join(self.allowed)} can)")


class SaveError(CnnlabError):
    """A file could not be written (disk full, permissions); the old file is intact."""

    exit_code = 4


class OutputExistsError(SaveError):
    """A file (or a non-empty folder) the user named already exists and replacing it was not asked for."""

    option = "overwrite"

    def __init__(self, path: Path, what: str = "output file", *, folder: bool = False,
                 message: str | None = None) -> None:
        self.path, self.what, self.folder = Path(path), what, folder
        state = "is not empty" if folder else "already exists"
        super().__init__(message or f"{what} {path} {state}")


class ImageError(CnnlabError):
    """An input image that cannot be used: unreadable, truncated, not an image, too large, blank."""


class ExportError(CnnlabError):
    """A model that cannot be exported, or whose export does not reproduce PyTorch's outputs."""


class NonFiniteLossError(CnnlabError):
    """Training produced a NaN or infinite loss."""

    exit_code = 3
