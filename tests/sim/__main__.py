"""`python -m tests.sim`: see `tests.sim.runner.main` (and `scripts/simulate`)."""

import os
import sys

from tests.sim.runner import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:  # the trace was piped into `head` or `less` and the reader quit
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 0
sys.exit(code)
