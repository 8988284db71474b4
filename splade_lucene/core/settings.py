"""Settings records: each option of a record carries its help and, where the command line names it
otherwise, its flag, so that the CLI's flags are derived from the record in one place
(``cli.add_settings``) and a new option is a field, its use, and nothing else."""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, help: str, *, flag: str | None = None, choices: tuple | None = None,
            default_help: str | None = None, words: dict[str, Any] | None = None) -> Any:
    """A record field with its ``help`` text; ``flag``: the command line's name for it (default:
    ``--name-with-dashes``); ``choices``: the values it takes; ``default_help``: how the help states
    the default (default: the value itself); ``words``: the command line's words for its values
    (e.g. ``{"auto": None, "on": True, "off": False}``)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                                        "default_help": default_help, "words": words})
