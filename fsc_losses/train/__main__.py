"""``python -m fsc_losses.train ARGS``: see ``fsc_losses.train``."""

import sys

from . import UsageError, main

try:
    result = main()
except UsageError as e:
    sys.exit(f"fsc_losses.train: error: {e}")
sys.exit(1 if result == -1 else 0)
