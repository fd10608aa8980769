"""One replica of a served agent, as its own process (tests/langchain/a2a/test_agent_calls_kill.py
kills it):
``python testbed/support/a2a_replica.py NATS_URL WORKER LOG [LEASE_TTL]``. Each task appends
``start <text>`` and ``done <text>`` lines to LOG, and takes a moment."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: testbed.support

from langchain_mq9.serving import serve_agent
from testbed.support.a2a_support import text_graph, text_io

PAUSE = 0.3  # long enough that a kill lands mid-task


async def main(url: str, worker: str, log: str, lease: str | None) -> None:
    def note(line: str) -> None:
        with open(log, "a") as out:
            out.write(f"{worker} {line}\n")

    async def work(text: str) -> str:
        note(f"start {text}")
        await asyncio.sleep(PAUSE)
        note(f"done {text}")
        return text.upper()

    options = {"reader_options": {"lease_ttl": int(lease)}} if lease else {}
    server = await serve_agent(
        text_graph(work), name="agent.upper", server=url, worker=worker, max_concurrency=2,
        **text_io(), **options,
    )  # fmt: skip
    note("ready")
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4], sys.argv[4] if len(sys.argv) > 4 else None))
