"""The NATS subjects mq9 requests go to (RobustMQ's mq9-core/src/protocol.rs)."""

from __future__ import annotations

PREFIX = "$mq9.AI"
SUBJECT_WILDCARD = f"{PREFIX}.>"
TENANT = "default"  # RobustMQ's tenant for mq9 requests; it shows in some of its error texts

MAILBOX_CREATE = f"{PREFIX}.MAILBOX.CREATE"
MSG_SEND = f"{PREFIX}.MSG.SEND."
MSG_FETCH = f"{PREFIX}.MSG.FETCH."
MSG_ACK = f"{PREFIX}.MSG.ACK."
MSG_QUERY = f"{PREFIX}.MSG.QUERY."
MSG_DELETE = f"{PREFIX}.MSG.DELETE."
AGENT_REGISTER = f"{PREFIX}.AGENT.REGISTER"
AGENT_UNREGISTER = f"{PREFIX}.AGENT.UNREGISTER"
AGENT_REPORT = f"{PREFIX}.AGENT.REPORT"
AGENT_DISCOVER = f"{PREFIX}.AGENT.DISCOVER"

# A broker enforcing per-agent credentials (the bundled one with --credentials;
# docs/security.md) takes a credentialed agent's requests on its own prefix, $mq9.U.<id>. and
# the subject without "$mq9."; a plain request there is answered an error starting with the marker.
PRINCIPAL_PREFIX = "$mq9.U."
IDENTITIES_MARKER = "mq9 identities: "
# Where the bundled broker announces a message stored (empty, on this prefix and the
# digest of its mailbox's name, never the name), for wakers (wake/arrivals.py); RobustMQ has
# none, and a waker polls there
ARRIVALS_PREFIX = "$mq9.WAKE."


def send_subject(address: str) -> str:
    return MSG_SEND + address


def fetch_subject(address: str) -> str:
    return MSG_FETCH + address


def ack_subject(address: str) -> str:
    return MSG_ACK + address


def query_subject(address: str) -> str:
    return MSG_QUERY + address


def delete_subject(address: str, msg_id: int) -> str:
    return f"{MSG_DELETE}{address}.{msg_id}"


def principal_subject(principal: str, subject: str) -> str:
    """``subject`` as the agent ``principal`` sends it to an enforcing broker:
    ``$mq9.AI.MSG.SEND.box`` -> ``$mq9.U.alice.AI.MSG.SEND.box``."""
    return f"{PRINCIPAL_PREFIX}{principal}.{subject.removeprefix('$mq9.')}"

# (the bundled broker's; RobustMQ has none, and answers nothing there) how many messages
# each priority's lane of a mailbox holds: what no read of the protocol can count to its end
# under many urgent ones (a read from an id answers the most urgent first). A read, owned as a
# QUERY; its answer {"error": "", "counts": {"critical": n, "urgent": n, "normal": n},
# "newest_id": n or null}
MSG_COUNT = f"{PREFIX}.MSG.COUNT."


def count_subject(address: str) -> str:
    return MSG_COUNT + address
