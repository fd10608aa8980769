"""#61 item 8: the state of a broker on servers configured without accounts, moved across the
change of accounts that turning credentials on brings; the file is its owner's only, an import
never mixes into a layout that holds records, and every refusal is one line.

Since issue #72 our commands move the stream an earlier version wrote (``mq9-dev-broker state
export``, then ``state import``, which writes this version's layout): that is what is tested
here, from an old stream as that version left it (tests/data/jetstream_old_format.mq9state).
This version's own layout (a stream of messages and buckets) is moved across an accounts
change with the NATS CLI's ``nats stream backup`` and ``restore`` (docs/deploy.md): not our
command, so not tested here; ``state export`` of it says so."""

from __future__ import annotations

import asyncio
import contextlib
import io
import stat
from pathlib import Path

import nats
import pytest

from mq9_broker.cli.dev_broker import main
from mq9_broker.cli.state import SUBJECT_PREFIX, _records
from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving

pytestmark = pytest.mark.slow  # a nats-server and brokers: processes
pytest.importorskip("nkeys")

OLD_FILE = Path(__file__).resolve().parents[3] / "data" / "jetstream_old_format.mq9state"
OLD_STREAM = "MQ9_STATE"  # the default --stream


async def _old_stream(url: str) -> None:
    """The stream the earlier store left, its records as it wrote them (8: a snapshot of two
    mailboxes, then changes), in the servers' default account."""
    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        subject = f"{SUBJECT_PREFIX}.{OLD_STREAM.lower()}"
        await js.add_stream(name=OLD_STREAM, subjects=[subject])
        for record in _records(OLD_FILE):
            await js.publish(subject, record)
    finally:
        await connection.close()


def _command(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_an_old_stream_moves_across_the_accounts_credentials_bring(tmp_path):
    state, auth = tmp_path / "mq9-state", tmp_path / "mq9-auth"
    with JetStreamCluster(1) as cluster:
        server, url = cluster.servers[0], cluster.urls[0]
        asyncio.run(_old_stream(url))
        status, out, err = _command("state", "export", str(state), "--nats", url)
        assert status == 0 and out.startswith("8 records of stream MQ9_STATE"), err
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        assert _records(state) == _records(OLD_FILE)
        status, out, err = _command("state", "export", str(state), "--nats", url)
        assert status == 1 and err.count("\n") == 1 and "exists: name a new file" in err

        status, config, _ = _command("credentials", "setup", str(auth))
        assert status == 0
        server.stop()
        server.extra_config = config  # the accounts change: the old stream is out of reach
        server.start()
        login = ("--nats", url, "--credentials", str(auth))
        cut = tmp_path / "cut"
        cut.write_bytes(state.read_bytes()[:-5])
        status, out, err = _command("state", "import", str(cut), *login)
        assert status == 1 and err.count("\n") == 1 and "is cut short or damaged" in err
        status, out, err = _command("state", "import", str(state), *login)
        assert status == 0, err
        moved = "8 records read; written into the layout of MQ9_STATE: 2 mailboxes, 11 messages"
        assert out.startswith(moved), out
        status, out, err = _command("state", "import", str(state), *login)
        assert status == 1 and err.count("\n") == 1 and "import into a new or empty layout" in err
        # what is kept now is this version's layout: moved by the NATS CLI, as export says
        status, out, err = _command("state", "export", str(tmp_path / "again"), *login)
        assert status == 1 and err.count("\n") == 1 and "'nats stream backup'" in err, err

        with DevBroker("--store", "jetstream", "--no-search", *login, wait=False) as new:
            wait_serving(new)
            status, issued, err = _command("credentials", "issue", "alice", *login[2:], *login[:2])
            assert status == 0, err
            asyncio.run(_moved_mailbox_is_there(url, issued.splitlines()[0]))


async def _moved_mailbox_is_there(url: str, credential: str) -> None:
    """The broker with credentials serves the moved state: a mailbox made before credentials
    has no owner, so an agent is told so (and not that it does not exist)."""
    async with Mq9Client(url, credential=credential) as alice:
        with pytest.raises(Mq9Error, match="has no owner"):
            await alice.query("jobs")
        with pytest.raises(Mq9Error) as missing:
            await alice.query("never.made")
        assert "has no owner" not in str(missing.value)


def test_what_is_not_a_state_file_is_refused_in_one_line(tmp_path):
    with JetStreamCluster(1) as cluster:
        (tmp_path / "other").write_bytes(b"not a state\n")
        status, out, err = _command("state", "import", str(tmp_path / "other"), "--nats",
                                    cluster.urls[0])  # fmt: skip
        assert status == 1 and out == "" and err.count("\n") == 1
        assert "is not a state file written by 'mq9-dev-broker state export'" in err
        status, _, err = _command("state", "export", str(tmp_path / "x"), "--nats",
                                  cluster.urls[0])  # fmt: skip
        assert status == 1 and "no stream MQ9_STATE there" in err and err.count("\n") == 1
        assert not (tmp_path / "x").exists()
