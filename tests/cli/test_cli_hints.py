"""#78: the command line's hints read as meant: the login hint's example URL whole (the
redaction that hides a URL's secret had eaten it), and the console's start-up line on writes
saying what to do to allow them, not reading as if they were on."""

from __future__ import annotations

from mq9_cli.connect import REFUSED_LOGIN, failure
from mq9_cli.console.serve import READ_ONLY, WRITES_ALLOWED
from mq9_platform.client.auth import Login, refused_login
from mq9_wire.protocol.errors import NotAllowed, Unavailable


def test_the_login_hint_keeps_its_example_and_a_real_secret_stays_hidden():
    where = "nats://alice:s3cret-pw@127.0.0.1:4222"
    said = failure(NotAllowed(refused_login(where, Login())))
    assert said.code == REFUSED_LOGIN
    assert "or nats://<id>:<secret>@host:port" in str(said), str(said)
    assert "s3cret-pw" not in str(said) and "nats://alice:***@127.0.0.1:4222" in str(said)
    # the hint's example is restored, never a secret that happens to follow the same words
    forged = failure(Unavailable("or nats://<id>:<secret>@host:port nats://bob:pw2@host:1"))
    assert "pw2" not in str(forged)


def test_the_console_says_how_to_allow_writes_not_that_they_are_on():
    assert READ_ONLY.startswith("read-only") and "start it with --allow-writes" in READ_ONLY
    assert "(--allow-writes)" not in READ_ONLY
    assert WRITES_ALLOWED.startswith("writes allowed")
