"""``python -m mcp_server``, 0.5's way: the ``mq9-mcp`` command, after one line saying so."""

import sys

print("python -m mcp_server is 0.5's path: run `mq9-mcp` (or `python -m mq9_mcp`)", file=sys.stderr)

from mq9_mcp.cli import main  # noqa: E402  (after the line, as the server loads)

sys.exit(main())
