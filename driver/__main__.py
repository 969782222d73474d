"""``python -m driver``: the native command line (driver/native/cli.py)."""

import sys

from .native.cli import main

sys.exit(main())
