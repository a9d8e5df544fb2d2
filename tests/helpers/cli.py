"""Running `ledgerd` in-process, as a test sees it: exit code, stdout and stderr."""

from __future__ import annotations

import pytest

from cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`ledgerd ARGV` in this process; usage errors (SystemExit) give their exit code too."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
