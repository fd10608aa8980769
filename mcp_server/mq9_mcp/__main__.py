"""``python -m mq9_mcp``: the same as the ``mq9-mcp`` command."""

import sys

from .cli import main

sys.exit(main())
