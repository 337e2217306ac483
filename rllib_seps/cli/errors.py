"""Mistakes in the command line or an experiment file, shown as one line; exit statuses."""

from __future__ import annotations

import difflib
from typing import Sequence

# Exit status of an interrupted command, as the shell reports Ctrl-C: 128 + SIGINT.
INTERRUPTED = 130


class UserError(Exception):
    """A mistake in the command line or an experiment file, shown as one line.

    Args:
        source: The file (or command-line option) at fault.
        key: Where in it, as a dotted path (``exp.config.seps.n_clusters``), or None.
        message: What is wrong and, where possible, the fix.
    """

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source, self.key, self.message = str(source), key, " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.key, self.message) if part)


def closest(key: str, known: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known``, or an empty string."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
