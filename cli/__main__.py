"""`python -m cli` is `ledgerd` (localnet starts its nodes this way, with the same interpreter)."""

import sys

from cli.main import main

sys.exit(main())
