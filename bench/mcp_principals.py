"""mq9-mcp's memory with many principals seen: its resident memory as N principals
of an identity provider, each a user signing in through a client of its own (what open
registration lets anyone make), each with a broker credential file of its own, open a session
and make one keyed ``send_message``. What a principal leaves behind is bounded: the owners
remembered (256), the key ledger (its keys, bounded by the callers' total), the sessions
(``--max-sessions``), the principals' broker connections (256). So the memory grows while
those fill, then stays flat however many more principals come.

The issuer is testbed/issuer.py on loopback (its metadata and JWKS; the tokens signed with its
key for each user and client). mq9-mcp runs as a process of its own
in front of a dev broker with ``--credentials``: every other principal has a credential file
(its own broker connection), the rest act as the server's identity (``--unmapped-principals
shared``: their keys in the server's ledger)::

    python -m bench.mcp_principals --principals 10000

The figures recorded are in bench/RESULTS.md ("mq9-mcp with 10,000 principals"), with the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from testbed.ports import unclaimed_port

from .keys_held import rss_mib

ACCEPT = {"Accept": "application/json, text/event-stream"}
VERSION = "2025-11-25"


def _initialize() -> dict:
    return {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": VERSION, "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}},
    }  # fmt: skip


async def one_principal(http: Any, url: str, token: str, n: int) -> str:
    """A session of its own and one keyed send_message: "sent", "keys in use" (the free
    principals' part of the keys full), else what it was answered."""
    auth = {**ACCEPT, "Authorization": f"Bearer {token}"}
    opened = await http.post(url, json=_initialize(), headers=auth)
    if opened.status_code != 200:
        return f"initialize: {opened.status_code}"
    session = {**auth, "mcp-session-id": opened.headers["mcp-session-id"],
               "mcp-protocol-version": VERSION}  # fmt: skip
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                    headers=session)  # fmt: skip
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "send_message", "arguments": {
                "mail_address": "bench.principals", "payload": f"m{n}",
                "idempotency_key": f"k{n}"}}}  # fmt: skip
    answer = await http.post(url, json=call, headers=session)
    await http.delete(url, headers=session)  # done: the session ended, as a client ends it
    if answer.status_code != 200:
        return f"tools/call: {answer.status_code}"
    text = answer.text.replace(" ", "")
    if '"isError":true' not in text:
        return "sent"
    return "keys in use" if "idempotencykey" in text.replace(" ", "").replace("-", "") else text


def issue(data: Path, *names: str) -> dict[str, str]:
    """Credentials ``name:secret`` for ``names``, where a broker on ``data`` reads them (as
    ``mq9-dev-broker credentials issue`` writes them)."""
    from mq9_broker.identities.store import IdentityStore, identities_file

    data.mkdir(parents=True, exist_ok=True)
    store = IdentityStore(identities_file(data))
    try:
        return {name: f"{name}:{store.issue(name)}" for name in names}
    finally:
        store.close()


async def run(principals: int, every: int, at_once: int) -> None:
    import httpx2

    from mq9_mcp.http.principal_files import file_name
    from testbed.devbroker import DevBroker
    from testbed.issuer import Issuer

    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    authority = Issuer().start()
    data = Path(tempfile.mkdtemp(prefix="mq9-principals-"))
    mapped = range(0, principals, 2)  # every other principal has a credential of its own
    credentials = issue(data / "broker", "mcp", *(f"p{n}" for n in mapped))
    broker = DevBroker("--credentials", "--data", str(data / "broker"), "--port", "0")
    assert broker.url is not None
    folder = data / "principals"
    folder.mkdir()
    for n in mapped:
        name = file_name(authority.url, f"u-{n}", f"c-{n}")
        (folder / name).write_text(credentials[f"p{n}"] + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--port", str(port),
         "--server", broker.url, "--oauth-issuer", authority.url, "--resource-url", resource,
         "--principal-credentials", str(folder), "--unmapped-principals", "shared",
         "--log-level", "error"],
        env={**os.environ, "MQ9_CREDENTIAL": credentials["mcp"]},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = resource
        async with httpx2.AsyncClient(timeout=60) as http:
            for _ in range(200):  # until it listens
                try:
                    await http.get(url.replace("/mcp", "/.well-known/oauth-protected-resource"))
                    break
                except httpx2.HTTPError:
                    await asyncio.sleep(0.1)
            first = authority.sign(resource, sub="u-1", client_id="c-1")  # the server's
            auth = {**ACCEPT, "Authorization": f"Bearer {first}"}
            opened = await http.post(url, json=_initialize(), headers=auth)
            make = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "create_mailbox", "arguments": {"name": "bench.principals"}}}  # fmt: skip
            await http.post(url, json=make, headers={
                **auth, "mcp-session-id": opened.headers["mcp-session-id"],
                "mcp-protocol-version": VERSION})  # fmt: skip
            print("principals seen | mq9-mcp RSS (MiB) | outcomes | seconds")
            print(f"0 | {rss_mib(process.pid):.1f} | - | 0")
            started, outcomes = time.perf_counter(), Counter[str]()
            for base in range(0, principals, every):
                for chunk in range(base, min(base + every, principals), at_once):
                    names = range(chunk, min(chunk + at_once, base + every, principals))
                    tokens = [authority.sign(resource, sub=f"u-{n}", client_id=f"c-{n}")
                              for n in names]  # fmt: skip
                    pairs = zip(tokens, names, strict=True)
                    done = await asyncio.gather(*(one_principal(http, url, *p) for p in pairs))
                    outcomes.update(done)
                seen = min(base + every, principals)
                took = time.perf_counter() - started
                said = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
                print(f"{seen} | {rss_mib(process.pid):.1f} | {said} | {took:.0f}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=10)
        authority.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--principals", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000, help="principals between samples")
    parser.add_argument("--at-once", type=int, default=16, help="principals in flight")
    args = parser.parse_args()
    asyncio.run(run(args.principals, args.every, args.at_once))


if __name__ == "__main__":
    main()
