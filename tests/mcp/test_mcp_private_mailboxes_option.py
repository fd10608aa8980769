"""``--shared-mailboxes`` (issue #116): what the operator shares is read as the allow-list reads
prefixes, and a bad value stops mq9-mcp in one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any, cast

import pytest

from mq9_mcp.mailbox_owners import MailboxOwners, parse_prefixes, record_address
from mq9_platform.client.connection import Mq9Connection
from testbed.support.mcp_support import ROOT, server_env


def test_shared_prefixes_cover_the_name_and_the_names_under_it():
    shared = parse_prefixes("team, ops")
    owners = MailboxOwners(cast(Any, None), 1.0, agent_mailbox="desk", shared=shared)
    assert owners.shared == ("team", "ops")
    assert all(owners.is_shared(a) for a in ("team", "team.board", "ops.x.y", "desk"))
    assert not any(owners.is_shared(a) for a in ("teams", "teamx.board", "alice.inbox"))


def test_records_are_nobodys_to_share_and_fit_any_address():
    for bad in ("mq9mcp.owner", "mq9mcp", "mq9mcp.task.abc", " , "):
        with pytest.raises(ValueError):
            parse_prefixes(bad)
    assert len(record_address("a." * 100)) == len(record_address("b"))


@pytest.mark.slow  # an mq9-mcp process
def test_a_bad_shared_prefix_stops_the_server_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--server", "memory://",
         "--shared-mailboxes", "mq9mcp.owner"],
        cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "--shared-mailboxes: 'mq9mcp.owner' holds mq9-mcp's own records" in last


async def test_the_record_outlives_no_process_and_no_mailbox():
    """Two ``MailboxOwners`` on one broker are two replicas: the second learns alice's mailbox
    from the broker's record; what one learned is used no longer than the mailbox lives (an
    injected clock), and the record mailbox is made before the mailbox, with its TTL."""
    now = [1000.0]
    connection = Mq9Connection(f"memory://private-{uuid.uuid4().hex[:8]}")
    try:
        one = MailboxOwners(connection, 5.0, clock=lambda: now[0])
        other = MailboxOwners(connection, 5.0, clock=lambda: now[0])
        await one.prepare("alice.inbox", 60)
        await connection.run(lambda c: c.mailbox_create(name="alice.inbox", ttl=60))
        await one.claim("principal alice", "alice.inbox", 60)
        assert await other.may_read("principal alice", "alice.inbox")
        assert not await other.may_read("principal bob", "alice.inbox")
        assert not await other.may_read("principal alice", record_address("alice.inbox"))
        now[0] += 61  # past the mailbox's life: nothing remembered answers for it
        assert not one.knows("principal alice", "alice.inbox")
        assert not other.knows("principal alice", "alice.inbox")
    finally:
        await connection.aclose()
