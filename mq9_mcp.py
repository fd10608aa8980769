"""``mq9-mcp``'s entry point. It checks that the MCP SDK mq9-mcp runs on is here before loading
the server (``mcp_server``, whose import needs it): without it the command says in one line what
to install, not an ImportError's traceback. The toolkit needs no MCP SDK, so the base install
leaves it out and ``langchain-mq9[mcp]`` brings it; a virtualenv holding langchain-mcp-adapters
has mcp 1.x (the adapters pin it), and mq9-mcp then runs from a virtualenv of its own.

It also ends quietly on a Ctrl-C while the server loads (a second or more), as it does once
serving. It lives outside ``mcp_server`` and ``langchain_mq9`` so that nothing is imported first.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

NEEDED = (2, 3)  # the mcp extra's lower bound, pyproject.toml
SOURCE = "git+https://github.com/mq9-agents/langchain-mq9"
INSTALL = f'pip install "langchain-mq9[mcp] @ {SOURCE}" (in a clone: pip install -e ".[mcp]")'
APART = f'uvx --from "langchain-mq9[mcp] @ {SOURCE}" mq9-mcp'


def sdk_problem() -> str | None:
    """Why the MCP SDK installed here cannot run mq9-mcp, with what to do; None when it can."""
    try:
        version = metadata.version("mcp")
    except metadata.PackageNotFoundError:
        return f"the MCP SDK is not installed: {INSTALL}"
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < NEEDED:
        return (
            f"mq9-mcp needs mcp>=2.3 and this environment has mcp {version} (langchain-mcp-"
            f"adapters pins mcp<2): run mq9-mcp from a virtualenv of its own, e.g. {APART}"
        )
    return None


def main() -> int:
    problem = sdk_problem()
    if problem is not None:
        print(f"mq9-mcp: error: {problem}", file=sys.stderr)
        return 1
    try:
        from mcp_server.cli import main as serve
    except KeyboardInterrupt:  # Ctrl-C while loading: stopped, as once serving (cli.main)
        return 0
    return serve()


if __name__ == "__main__":
    sys.exit(main())
