"""The errors the package raises on purpose, all under one base.

The command line turns a :class:`SpladeLuceneError` into a one-line message and exit status 2, and
lets anything else show its traceback, so that a bug never passes for bad input. Each class also
derives from the built-in exception it replaces (``ValueError``, ``FileNotFoundError`` ...), so
code that catches those keeps working.
"""

from __future__ import annotations


class SpladeLuceneError(Exception):
    """Base of every error splade-lucene raises on purpose."""


class SettingError(SpladeLuceneError, ValueError):
    """A setting or argument out of its range, or settings that do not go together."""


class SettingTypeError(SpladeLuceneError, TypeError):
    """An argument of the wrong type (a float where Lucene needs an int weight, say)."""


class NotFoundError(SpladeLuceneError, FileNotFoundError):
    """A file or folder the call needs does not exist."""


class OutputExistsError(SpladeLuceneError, FileExistsError):
    """The output is already there and was not to be replaced."""


class UnknownIdError(SpladeLuceneError, KeyError):
    """A document or query id that is not there."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class DiskFullError(SpladeLuceneError, OSError):
    """The file system ran out of space (or quota) while the package was writing."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]"
        return self.strerror or super().__str__()


class SetupError(SpladeLuceneError, RuntimeError):
    """The environment lacks something the package needs (Java 21, pyserini's jar)."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SetupError(f"{purpose} needs {module.split('.')[0]}, which is not installed: "
                         f"pip install 'splade-lucene[{extra}]' ({exc})") from None
