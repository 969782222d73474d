"""``python -m shaders check|bench ...``: see shaders/cli.py."""

import sys

from .cli import main

sys.exit(main())
