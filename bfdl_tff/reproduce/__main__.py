"""``python -m bfdl_tff.reproduce`` (what ``scripts/reproduce_all.sh`` runs)."""

import sys

from bfdl_tff.reproduce.orchestrator import main

sys.exit(main())
