"""The open cluster's accounts (docs/deploy.md's ``accounts.conf``, as written) on one
JetStream nats-server of a test's: the brokers' account ``AGENTS``, which the brokers' user
logs in to, and ``CLIENTS``, every client without a login, which imports the mq9 service
(``share: true``: nats-server names each request's connection and address) and the wake
announcements. Issue #88's tests play a login-less client there."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[3] / "docs" / "deploy.md"
BROKER_USER = "mq9-broker"
_FILE = re.compile(r"<!-- deploy-file: accounts.conf -->\n```\w*\n(?P<body>.*?)^```", re.S | re.M)


def open_accounts() -> tuple[str, str]:
    """(the config text to add to a nats-server's, the brokers' password): deploy.md's
    ``accounts.conf``, its password read from the environment given here instead."""
    found = _FILE.search(DEPLOY.read_text())
    assert found is not None, "deploy.md has no accounts.conf"
    password = "mq9-" + secrets.token_hex(24)
    body = found.group("body")
    assert "$MQ9_BROKER_PASSWORD" in body, body
    return body.replace("$MQ9_BROKER_PASSWORD", f'"{password}"'), password
