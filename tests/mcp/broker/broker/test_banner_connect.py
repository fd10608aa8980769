"""The banner's "connect with" lines never hand a client the brokers' own login (#77: on
deploy.md's open cluster a broker's URLs carry the brokers' user; a client gives none)."""

from __future__ import annotations

from mq9_broker.banner import _connect_lines


def test_the_brokers_login_is_left_out_of_what_a_client_is_told():
    lines = _connect_lines(
        "nats://mq9-broker:***@10.0.0.1:4222,nats://mq9-broker:***@10.0.0.2:4222"
    )
    assert all("mq9-broker" not in line and "@" not in line for line in lines)
    assert '  Mq9Client("nats://10.0.0.1:4222,nats://10.0.0.2:4222")' in lines


def test_a_url_without_a_login_is_told_as_it_is():
    assert "  mq9-mcp --server nats://127.0.0.1:4222" in _connect_lines("nats://127.0.0.1:4222")
