"""mq9's defaults and bounds: RobustMQ's where it has them, the client's own where it takes
anything (each line says which)."""

from __future__ import annotations

DELIVER_POLICIES = ("earliest", "latest", "from_time", "from_id")
DEFAULT_NUM_MSGS = 100
DEFAULT_MAX_WAIT_MS = 500
DEFAULT_DISCOVER_LIMIT = 20
DEFAULT_MAILBOX_TTL = 86_400  # RobustMQ's mq9_mailbox_default_ttl: a CREATE without ttl
QUERY_CAP = 100  # a QUERY answers at most this many messages, whatever its limit
DEFAULT_MAX_PAYLOAD = 1024 * 1024  # NATS' own default max_payload
# RobustMQ reads each priority lane of a FETCH (each read of a QUERY) with max_size 30 MiB
# (mq9/fetch.rs, query.rs); rocksdb read.rs read_by_tag/read_by_offset stop before a record whose
# payload would take the read's total above it, but always take the first record.
LANE_READ_BYTES = 30 * 1024 * 1024
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
MAX_NUM_MSGS = 10_000  # the client's sanity bound; RobustMQ takes any u32
MAX_WAIT_MS = 600_000  # ten minutes: a longer wait should be a loop
MAX_DISCOVER_LIMIT = 10_000
MAX_GROUP_NAME = 256
# nats-server's default max_control_line: a longer PUB/HPUB line closes the connection. The
# longest line with an address is a DELETE's "HPUB $mq9.AI.MSG.DELETE.<address>.<msg_id> <reply>
# <sizes>"; 3,800 leaves room for the rest (RobustMQ sets no length,
# docs/protocol-commands.md §5.1).
MAX_CONTROL_LINE = 4096
MAX_ADDRESS_LENGTH = 3800
# How much of a value an error quotes (quoting.py)
QUOTE_CHARS = 60
MAX_SECONDS = 2**31 - 1  # the client's bound for ttl (and a mailbox's): about 68 years
# The longest delay: RobustMQ 8bd49dc queues a delayed message in tokio-util's DelayQueue
# (delay-message manager.rs, pop.rs), whose timer wheel holds a deadline at most 2^36-1 ms
# (about 795 days) past the time the wheel last advanced, and panics its task past that
# ("invalid deadline"): every later delayed message of that shard is then never delivered. One
# year leaves a wheel idle for 430 days inside its bound. The bundled broker takes the same.
MAX_DELAY_SECONDS = 365 * 86_400
# An idempotency key's longest (UTF-8 bytes, our choice: Stripe's 255 characters, rounded up):
# a broker keeps each key it saw for its window, so the key's length is what a key costs it
MAX_IDEMPOTENCY_KEY = 256
