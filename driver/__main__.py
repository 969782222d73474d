"""``python -m driver``: see driver/cli.py."""

import sys

from .cli import main

sys.exit(main())
