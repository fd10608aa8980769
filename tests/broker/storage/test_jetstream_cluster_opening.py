"""What a cluster store makes when it opens (``opening.py``) is what earlier versions made, to
the letter: a cluster a broker of an earlier version set up keeps working when the store is
laid out in other files (issue #80). The configs are read as data, no server needed."""

from __future__ import annotations

from mq9_broker.storage.jetstream import Layout
from mq9_broker.storage.jetstream.opening import bucket_config, message_config
from mq9_broker.storage.jetstream.staged import consumer_name


def test_the_message_stream_is_configured_as_before() -> None:
    layout = Layout("S")
    assert message_config(layout) == {
        "subjects": layout.message_subjects,
        "max_age": 7 * 86_400 * 1_000_000_000,
        "allow_direct": True,
        "allow_msg_ttl": True,
        "allow_msg_schedules": True,
        "allow_rollup_hdrs": True,
        "allow_atomic": True,
        "duplicate_window": 120 * 1_000_000_000,
        "republish": {
            "src": "mq9.S.m.*.*.*.*",
            "dest": "$mq9.WAKE.{{wildcard(1)}}",
            "headers_only": True,
        },
    }


def test_each_bucket_is_configured_as_before() -> None:
    for bucket in Layout("S").buckets:
        assert bucket_config(bucket) == {
            "subjects": [f"$KV.{bucket}.>"],
            "max_msgs_per_subject": 1,
            "discard": "new",
            "allow_direct": True,
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_msg_ttl": True,
            "allow_atomic": True,
        }


def test_the_delayed_messages_consumer_keeps_its_name() -> None:
    assert consumer_name(Layout("S")) == "S_STAGED"
