"""What a flood of REPORTs of made-up names costs a dev broker: its resident
memory before and after one client's REPORTs, each of a new name and a long ``report_info``,
then one registered agent's REPORT. Were each kept for good, the
broker's memory would only grow: a report is kept only while its agent is
registered, and the memory stays where it was.

    python -m bench.reports_held --reports 4000 --size 60000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import nats

from bench.keys_held import rss_mib
from mq9_wire import protocol as p
from testbed.devbroker import DevBroker

AGENT = "agent.real"
SETTLE = 3.0  # seconds after a step, before the RSS is read


async def flood(url: str, pid: int, reports: int, size: int) -> dict:
    connection = await nats.connect(url)
    register = p.encode({"name": AGENT, "payload": "a registered agent"})
    await connection.request(p.AGENT_REGISTER, register, timeout=30)
    await asyncio.sleep(SETTLE)
    before = rss_mib(pid)
    filler = "x" * size
    started = time.monotonic()
    for n in range(reports):
        body = p.encode({"name": f"made.up.{n}", "report_info": filler})
        answer = json.loads((await connection.request(p.AGENT_REPORT, body, timeout=30)).data)
        assert answer["error"] == "", answer
    took = time.monotonic() - started
    body = p.encode({"name": AGENT, "report_info": "busy"})
    agent = json.loads((await connection.request(p.AGENT_REPORT, body, timeout=30)).data)
    await asyncio.sleep(SETTLE)
    after = rss_mib(pid)
    await connection.close()
    return {"rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "flood_seconds": round(took, 1), "agent_report": agent}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=4_000)
    parser.add_argument("--size", type=int, default=60_000, help="characters of each report")
    args = parser.parse_args()
    broker = DevBroker("--port", "0", "--no-search")
    try:
        assert broker.url is not None  # (the constructor waited for its ready line)
        found = asyncio.run(flood(broker.url, broker.process.pid, args.reports, args.size))
    finally:
        broker.stop()
    conditions = {"reports": args.reports, "size": args.size,
                  "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}  # fmt: skip
    print(json.dumps({**found, "conditions": conditions}, indent=2))


if __name__ == "__main__":
    main()
