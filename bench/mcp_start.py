"""mq9-mcp's start over stdio: from the process's start to its first ``tools/list``
answer, as Claude Desktop, Cursor or any MCP client pays it each time it opens.

Each run starts the ``mq9-mcp`` command afresh as a child of one MCP ``ClientSession`` (the
MCP SDK's own stdio client), initialises and lists the tools; the figure is the median of
``--runs`` starts. The broker is named but never reached: mq9-mcp connects at its first tool
call, so what is measured is the server's own start (its imports, its catalog, its schemas).

It imports nothing of this repository, so it runs in a virtualenv holding mq9-mcp alone::

    python -m bench.mcp_start --runs 15 --command .venv-mcp/bin/mq9-mcp

The figures recorded are in bench/RESULTS.md ("mq9-mcp's start"), with the runs they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time

# A URL nothing answers on: mq9-mcp names its broker at start and connects at the first call
SERVER = "nats://127.0.0.1:9"
INIT_TIMEOUT = 120.0  # seconds: a hang guard on one start, never a figure


async def one_start(command: list[str]) -> tuple[float, int]:
    """Seconds from spawning ``command`` to its first tools/list answer, and the tools it
    listed."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {**os.environ, "MQ9_SERVER": SERVER}
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    with tempfile.TemporaryFile("w+") as errlog:
        started = time.perf_counter()
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await asyncio.wait_for(session.initialize(), INIT_TIMEOUT)
            tools = await asyncio.wait_for(session.list_tools(), INIT_TIMEOUT)
            took = time.perf_counter() - started
    return took, len(tools.tools)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp_start", description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="starts measured (default 15)")
    parser.add_argument(
        "--command",
        default=shutil.which("mq9-mcp", path=os.path.dirname(sys.executable)) or "mq9-mcp",
        help="the mq9-mcp to start (default: this Python's own)",
    )
    args = parser.parse_args(argv)
    command = [args.command, "--transport", "stdio"]
    asyncio.run(one_start(command))  # one start unmeasured: the files into the page cache
    took = []
    for _ in range(args.runs):
        seconds, listed = asyncio.run(one_start(command))
        took.append(seconds)
    took.sort()
    print(
        f"mq9-mcp start to first tools/list ({listed} tools): median "
        f"{statistics.median(took) * 1000:.0f} ms, min {took[0] * 1000:.0f} ms, max "
        f"{took[-1] * 1000:.0f} ms, n={len(took)} ({args.command})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
