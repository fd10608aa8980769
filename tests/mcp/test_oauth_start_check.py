"""Issue #117: a misconfigured ``--oauth-issuer`` is said at start, in one line, with a non-zero
exit and nothing served. Before, mq9-mcp with the issuer spelled with a trailing slash said it
was ready, then answered every valid token "401 ... the bearer token is wrong" (the mismatch
only in its log); an issuer that did not answer was found out at the first request. Played with
a real authorization server (oidc-provider) and the ``mq9_mcp`` command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from testbed.ports import unclaimed_port
from testbed.support.mcp_support import ROOT, server_env
from tests.mcp.oauth.support import AuthorizationServer, client, running

pytestmark = pytest.mark.slow  # an authorization server and mq9-mcp processes

RESOURCE = "http://127.0.0.1:9/mcp"


def started(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """mq9-mcp started over HTTP with ``args``: it must stop by itself (a server that serves
    would run until the timeout, which fails the test)."""
    return subprocess.run(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--server", "memory://",
         "--port", str(unclaimed_port()), "--resource-url", RESOURCE, *args],
        cwd=ROOT, env=server_env(**env), capture_output=True, text=True, timeout=40,
    )  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback, no "ready", no usage
    assert "Uvicorn running" not in done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def authority() -> Iterator[AuthorizationServer]:
    with running(RESOURCE, [client("mq9-mcp", grant_types=[])]) as server:
        yield server


def test_an_issuer_spelled_with_a_trailing_slash_stops_the_server_at_start(authority):
    said = one_line(started("--oauth-issuer", authority.url + "/"))
    assert f"--oauth-issuer {authority.url}/" in said and repr(authority.url) in said, said


def test_an_issuer_that_does_not_answer_stops_the_server_at_start():
    nowhere = f"http://127.0.0.1:{unclaimed_port()}"
    said = one_line(started("--oauth-issuer", nowhere))
    assert f"--oauth-issuer {nowhere}: " in said and "did not answer" in said, said


def test_introspection_credentials_the_issuer_refuses_stop_the_server_at_start(authority):
    said = one_line(started("--oauth-issuer", authority.url, "--oauth-client-id", "mq9-mcp",
                            MQ9_MCP_OAUTH_CLIENT_SECRET="not-its-secret"))  # fmt: skip
    assert "introspection endpoint" in said and "answered 401" in said, said
    assert "not-its-secret" not in said
