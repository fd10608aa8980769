"""``mq9``: a command line and a web console for a person watching and steering the agents'
mail on any mq9 server. A third face beside the LangChain tools and ``mq9-mcp``: every
operation is the catalog's (``mq9_platform.operations``), every read the client's."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mq9`` entry point; without Click (an install that lost it), one line saying what
    to install."""
    try:
        from .app import run
    except ImportError as exc:  # Click missing
        print(
            f"mq9 needs Click ({exc.name} is missing): in a clone, pip install ./wire ./broker "
            "./platform ./faces/cli (README.md#install)",
            file=sys.stderr,
        )
        return 2
    return run(argv)
