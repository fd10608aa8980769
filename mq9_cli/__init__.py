"""``mq9``: a command line and a web console for a person watching and steering the agents'
mail on any mq9 server. A third face beside the LangChain tools and ``mq9-mcp``: every
operation is the catalog's (``langchain_mq9.operations``), every read the client's."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mq9`` entry point; without the ``cli`` extra, one line saying what to install."""
    try:
        from .app import run
    except ImportError as exc:  # Click (the cli extra) missing
        print(
            f"mq9 needs the cli extra ({exc.name} is missing): pip install 'langchain-mq9[cli]'",
            file=sys.stderr,
        )
        return 2
    return run(argv)
