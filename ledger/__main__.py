"""``python -m ledger node|bench|verify`` (see :mod:`ledger.cli`)."""

import sys

from ledger.cli import main

if __name__ == "__main__":
    sys.exit(main())
