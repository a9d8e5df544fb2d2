"""`python -m node` is `ledgerd` (localnet starts its nodes this way, with the same interpreter)."""

import sys

from node.cli import main

sys.exit(main())
