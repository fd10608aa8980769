"""#77 item 2: ``url_login``, the login the servers' URLs carry as nats-py's options (nats-py
gives a URL's login to that URL only: a server the cluster advertises is added without one)."""

from __future__ import annotations

import pytest

from mq9_wire.nats_floor.server_process import server_urls, url_login

LOGGED = "nats://mq9-broker:mq9-3fa0@h1:4222,nats://mq9-broker:mq9-3fa0@h2:4222"


def test_the_login_every_url_carries_becomes_the_options():
    assert url_login(server_urls(LOGGED)) == {"user": "mq9-broker", "password": "mq9-3fa0"}
    assert url_login(["mq9-broker:mq9-3fa0@h1:4222"]) == {
        "user": "mq9-broker",
        "password": "mq9-3fa0",
    }


def test_no_login_is_no_options():
    assert url_login(server_urls("nats://h1:4222,nats://h2:4222")) == {}
    assert url_login([]) == {}


@pytest.mark.parametrize(
    "urls",
    [
        "nats://mq9-broker:a@h1:4222,nats://mq9-broker:b@h2:4222",
        "nats://mq9-broker:a@h1:4222,nats://h2:4222",
        "nats://x:a@h1:4222,nats://y:a@h2:4222",
    ],
)
def test_different_logins_are_refused_in_one_line(urls):
    with pytest.raises(ValueError, match="same user:password@") as refused:
        url_login(server_urls(urls))
    assert "\n" not in str(refused.value) and ":a@" not in str(refused.value)
