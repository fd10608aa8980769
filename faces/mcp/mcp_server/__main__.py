"""``python -m mcp_server``: the same as the ``mq9-mcp`` command."""

import sys

from .cli import main

sys.exit(main())
