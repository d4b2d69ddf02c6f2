"""What every validator of an option file reports: a :class:`Problem` (the key it concerns, what is wrong and the fix).

Run-time validators (training switches, network format, bad-image policy) raise :class:`ProblemsError`;
pre-flight collects its ``problems`` as they are, never parsing a message back into its key.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence


class Problem(NamedTuple):
    """One problem: ``key`` (dotted option key, or '' for the file as a whole) and ``text`` (what and the fix)."""

    key: str
    text: str

    def __str__(self) -> str:
        return f'{self.key}: {self.text}' if self.key else self.text


class ProblemsError(ValueError):
    """Problems found at run time, one line each; ``problems`` keeps them structured."""

    def __init__(self, problems: Sequence[Problem], message: Optional[str] = None) -> None:
        self.problems = list(problems)
        super().__init__(message or '; '.join(map(str, self.problems)))
