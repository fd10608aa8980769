"""A push URL the gateway refuses names the gateway's own option, `--allow-push-host`, not
the waker's `--allow-host` (#91 item 6): the refusal tells the operator what to set."""

from __future__ import annotations

import pytest

from mq9_platform._http.ssrf import HostRefused
from mq9_platform.a2a.gateway.cli import _parser, _push


async def test_a_push_host_not_allowed_names_the_gateways_option() -> None:
    args = _parser().parse_args(["--server", "memory://", "--allow-push-host", "127.0.0.1"])
    push = _push(args)
    with pytest.raises(HostRefused) as refused:
        # (a documentation address, TEST-NET-1: only checked against the list, never reached)
        await push.deliverer.destinations.hosts.check("https://192.0.2.1/hook")
    assert "the gateway's --allow-push-host" in str(refused.value)
    assert "--allow-host" not in str(refused.value)
