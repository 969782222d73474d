"""``python -m weights_tool ...``: see weights_tool.cli."""

import sys

from weights_tool.cli import main

sys.exit(main())
