"""#61 item 8: the state of a broker on servers configured without accounts, moved across the
change of accounts that turning credentials on brings (``mq9-dev-broker state export``, then
``state import``), restored by the broker with credentials; the file is its owner's only, an
import never mixes into a stream that holds records, and every refusal is one line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import stat

import pytest
from devbroker_helpers import DevBroker, write_mailbox
from jetstream_servers import JetStreamCluster, wait_serving

from langchain_mq9.broker.cli.dev_broker import main

pytestmark = pytest.mark.slow  # a nats-server and brokers: processes
pytest.importorskip("nkeys")


def _command(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_the_state_moves_across_the_accounts_credentials_bring(tmp_path):
    state, auth = tmp_path / "mq9-state", tmp_path / "mq9-auth"
    with JetStreamCluster(1) as cluster:
        server, url = cluster.servers[0], cluster.urls[0]
        with DevBroker("--nats", url, "--store", "jetstream", "--no-search", wait=False) as old:
            wait_serving(old)
            asyncio.run(write_mailbox(url, "kept.box", 3))
            assert any("default account ($G)" in line for line in old.stderr), old.output()
            assert old.stop() == 0
        status, out, err = _command("state", "export", str(state), "--nats", url)
        assert status == 0 and out.startswith("4 records of stream MQ9_STATE"), err
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
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
        assert status == 0 and out.startswith("4 records written into stream MQ9_STATE"), err
        status, out, err = _command("state", "import", str(state), *login)
        assert status == 1 and err.count("\n") == 1 and "already holds 4 records" in err

        with DevBroker("--store", "jetstream", "--no-search", *login, wait=False) as new:
            wait_serving(new)
            restored = "restored 1 mailboxes, 3 messages"
            assert any(restored in line for line in new.stdout), new.output()


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
