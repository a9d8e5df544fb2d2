"""The one error type for input that the ledger refuses.

`Rejected` carries a stable snake_case code (part of the external contract: clients branch on it)
and a human sentence. It is an expected outcome for outside input, never a bug.
"""

from __future__ import annotations


class Rejected(Exception):
    """Input refused by a ledger rule; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"Rejected({self.code!r}, {self.message!r})"
