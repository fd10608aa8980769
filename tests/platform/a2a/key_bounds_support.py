"""A ``--credentials`` dev broker whose per-identity key bound is shrunk (``--max-keys-per-sender``)
for the tests of #106 item 1: keys follow the caller, not the server that carries it. A bound of
a few dozen keys stands for the default 10,000 so a flood is a few dozen sends, not 10,000."""

from __future__ import annotations

from pathlib import Path

from testbed.support.credentials_support import AgentLogins, issue
from testbed.support.devbroker_helpers import DevBroker


class BoundedBroker(AgentLogins):
    """``mq9-dev-broker --credentials --max-keys-per-sender <keys_each>`` on a free port."""

    def __init__(self, data: Path, *names: str, keys_each: int) -> None:
        credentials = issue(data, *names)
        self.process = DevBroker(
            "--credentials", "--data", str(data), "--port", "0",
            "--max-keys-per-sender", str(keys_each),
        )  # fmt: skip
        assert self.process.url is not None
        super().__init__(self.process.url, credentials)

    def stop(self) -> None:
        self.process.stop()
