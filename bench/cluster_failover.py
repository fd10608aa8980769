"""The cluster failover run (issue #28): SENDs through a client given every node of a running
RobustMQ cluster, the node it is connected to killed part-way, then every message the broker
acknowledged looked for. Nothing here starts or builds RobustMQ: start the cluster by hand
(docs/deploy.md) and say how to kill a node with ``--kill``, a shell command in which
``{port}`` stands for the NATS port of the node the client is using.

    python -m bench.cluster_failover --urls nats://127.0.0.1:4222,nats://127.0.0.1:5222,\
nats://127.0.0.1:6222 --kill 'kill -9 $(cat /path/to/node-of-{port}.pid)'

Every SEND is counted as acked (its msg_id), failed retryable or failed final, with the error's
class; afterwards the mailbox is read through each node and the acked messages are matched by
payload. The client's own check of the log (``client.warnings``) says whether it noticed a
loss. The run passes when every acked message is readable or the client reported the log
going back, and every failure was a retryable error.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from urllib.parse import urlparse

from langchain_mq9 import Mq9Client, Mq9Error


def connected_port(client: Mq9Client) -> int:
    """The NATS port of the node the client's connection is on (nats-py's connected_url)."""
    return client._transport._connection.connected_url.port


async def until(action, seconds: float):
    """``action()`` once it stops failing retryably, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await action()
        except Mq9Error as exc:
            if not exc.retryable or time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


async def run(urls: list[str], sends: int, kill_after: int, kill: str, settle: float) -> dict:
    box = f"failover.{uuid.uuid4().hex[:10]}"
    acked: dict[str, int] = {}
    failures: Counter[str] = Counter()
    final: list[str] = []
    killed_port = None
    async with Mq9Client(",".join(urls)) as client:
        await until(lambda: client.mailbox_create(name=box, ttl=3600), settle)
        for i in range(sends):
            if i == kill_after:
                killed_port = connected_port(client)
                subprocess.run(kill.format(port=killed_port), shell=True, check=True)
            payload = f"m{i}"
            try:
                acked[payload] = await client.send(box, payload)
            except Mq9Error as exc:
                failures[type(exc).__name__] += 1
                if not exc.retryable:
                    final.append(exc.message[:200])
        warnings = dict(client.warnings)
        moved_to = connected_port(client)
    readable: dict[str, set[str]] = {}
    for url in urls:
        if urlparse(url).port == killed_port:
            continue
        async with Mq9Client(url) as reader:
            messages = await until(
                lambda reader=reader: reader.fetch(box, deliver="earliest", num_msgs=sends * 2),
                settle,
            )
            readable[url] = {m.text() for m in messages}
    missing = {url: sorted(set(acked) - seen) for url, seen in readable.items()}
    lost = max((len(m) for m in missing.values()), default=0)
    ids = list(acked.values())
    return {
        "mailbox": box,
        "sends": sends,
        "acked": len(acked),
        "failed": dict(failures),
        "failed_final": final,
        "killed_port": killed_port,
        "moved_to_port": moved_to,
        "msg_ids_went_back": any(b <= a for a, b in itertools.pairwise(ids)),
        "acked_but_unreadable": {url: len(m) for url, m in missing.items()},
        "client_warned": warnings,
        "passed": not final and (lost == 0 or bool(warnings)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", required=True, help="the cluster's NATS URLs, comma-separated")
    parser.add_argument("--kill", required=True, help="shell command; {port}: the node in use")
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--kill-after", type=int, default=100)
    parser.add_argument("--settle", type=float, default=90.0, help="seconds to wait for a node")
    args = parser.parse_args(argv)
    urls = [u.strip() for u in args.urls.split(",") if u.strip()]
    result = asyncio.run(run(urls, args.sends, args.kill_after, args.kill, args.settle))
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
