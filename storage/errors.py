"""The two errors of the storage package: one for the node, one between `Store` and its backend."""

from __future__ import annotations


class StorageError(Exception):
    """The database cannot be opened, read or written. The message is one line, fit for an operator.

    The node halts on it: a store that cannot keep its contract must not keep running."""


class DiskError(Exception):
    """A backend could not read or write (an I/O error, a failed sync, a closed handle).

    Backends raise only this for a failed operation, whatever their engine raised, so that `Store`
    turns every one of them into a `StorageError` that says what it was doing."""
