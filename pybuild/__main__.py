"""``python -m pybuild``: see pybuild/__init__.py."""

import sys

from .cli import main

sys.exit(main())
