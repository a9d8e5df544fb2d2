"""The error every `ledgerd` command raises for a failure the user can act on."""

from __future__ import annotations


class CliError(Exception):
    """A runtime failure the user can act on; its text is the one line printed (exit status 1)."""
