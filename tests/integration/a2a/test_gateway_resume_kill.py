"""Resume with replay across a gateway's death (#101): a real ``mq9-a2a-gateway`` process
(JSON-RPC, HTTP+JSON and gRPC), a served a2a-sdk executor running three long tasks on a real
nats-server, and three a2a-sdk clients, one per binding, each subscribed to one task. The
gateway is SIGKILLed at 10 random moments and started again on the same ports; each client
resubscribes with its last cursor each time: every event of its task from its first, each
once, in order (the events the agent kept while no gateway ran replayed from the reply
mailbox)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess

import httpx
import pytest
from a2a.client.card_resolver import A2ACardResolver

from mq9_platform._http.tokens_file import digest_line
from mq9_platform.a2a.sdk.executor import ExecutorServer
from testbed.ports import unclaimed_port
from testbed.support.waiting import until
from tests.integration.a2a.test_gateway_cli import start
from tests.integration.a2a.test_gateway_resume import a2a_client, started
from tests.langchain.a2a.test_gateway import AGENT, ALICE
from tests.platform.a2a.resume_support import Reader, Steps

pytestmark = pytest.mark.slow  # the gateway's process, killed and started 10 times

BINDINGS = ["JSONRPC", "HTTP+JSON", "GRPC"]
KILLS = 10


class GatewayProcess:
    """``mq9-a2a-gateway`` on fixed ports (so a client finds it again after a restart)."""

    def __init__(self, server: str, tokens: str) -> None:
        self.port, self.grpc_port = unclaimed_port(), unclaimed_port()
        self.args = [
            "--server", server, "--agent", AGENT, "--tokens-file", tokens,
            "--listen", f"127.0.0.1:{self.port}", "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/a2a/{AGENT}"
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        self.process = start(self.args)

        async def serving() -> bool:
            assert self.process is not None and self.process.poll() is None, (
                self.process.communicate()[1].decode() if self.process else ""
            )
            try:
                async with httpx.AsyncClient(timeout=5) as http:
                    await A2ACardResolver(http, self.url).get_agent_card()
                return True
            except Exception:
                return False

        # a hang guard: the process imports a2a-sdk and grpc, on a shared machine
        await until(serving, timeout=60, what="the gateway's card", every=0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=15)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.communicate(timeout=15)


async def test_clients_on_three_bindings_resume_across_ten_sigkills(nats_broker, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(digest_line("alice", ALICE) + "\n")
    gateway = GatewayProcess(nats_broker.url, str(tokens))
    rng = random.Random(101)
    executor = Steps(every=0.05)
    await gateway.start()
    try:
        async with (
            nats_broker.client() as client,
            ExecutorServer(executor, name=AGENT, client=client, worker="w1"),
        ):
            readers: dict[str, Reader] = {}
            for binding in BINDINGS:
                async with a2a_client(gateway.url, ALICE, binding) as a2a:
                    readers[binding] = Reader(await started(a2a, executor))

            async def read(binding: str, cut_after: float | None) -> None:
                # a client of its own each time: a gRPC channel to a dead server backs off
                async with a2a_client(gateway.url, ALICE, binding) as a2a:
                    await readers[binding].read(a2a, cut_after=cut_after, killed=True)

            for kill in range(KILLS):
                opened = {b: len(r.first_events) for b, r in readers.items()}
                reading = [asyncio.ensure_future(read(b, None)) for b in BINDINGS]
                # the kill cuts streams, not a client still connecting (a busy machine's pace)
                await until(
                    lambda opened=opened: all(
                        len(readers[b].first_events) > opened[b] for b in BINDINGS
                    ),
                    timeout=60,
                    what=f"each binding's stream open before kill {kill + 1}",
                )
                await asyncio.sleep(rng.uniform(0.3, 1.5))  # a random moment of the streams
                gateway.kill()
                await asyncio.wait_for(asyncio.gather(*reading), 30)  # cut: each stream ends
                for binding, reader in readers.items():
                    assert not reader.ended, f"{binding}'s task ended before kill {kill + 1}"
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # the agent goes on meanwhile
                await gateway.start()
            executor.finish.set()
            await asyncio.gather(*(read(b, 60) for b in BINDINGS))
            for binding, reader in readers.items():
                print(f"#101 kill run, {binding}: {reader.summary()}")
                reader.check()
                assert reader.streams == KILLS + 1, (binding, reader.streams)
    finally:
        gateway.stop()
