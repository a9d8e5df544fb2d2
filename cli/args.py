"""Argument types shared by the `ledgerd` commands: a bad value is a usage error (exit 2), caught
before anything is sent."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cli.client import normalize_url


def int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}, got {value}")
        return value
    return parse


def node_url(text: str) -> str:
    """A node's REST URL, normalised (scheme and host required)."""
    try:
        return normalize_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
