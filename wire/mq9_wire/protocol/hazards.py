"""What the client warns of (logged, never raised): signs that the broker lost or repeats what
it acknowledged (docs/deploy-robustmq.md)."""

from __future__ import annotations


def warn_log_went_back(address: str, msg_id: int, highest: int) -> str:
    return (
        f"mailbox {address}: a SEND got msg_id {msg_id}, but an earlier one got {highest}: the "
        "broker's log of this mailbox went back, so messages it acknowledged may be lost (a "
        "RobustMQ node lost with the shard's replicas, or the mailbox made again under its "
        "name). Check what the mailbox still holds (query); see docs/deploy-robustmq.md"
    )


def warn_receipt_missing(address: str, msg_id: int, newest: int) -> str:
    where = f"the newest it holds is {newest}" if newest >= 0 else "it holds none"
    return (
        f"mailbox {address}: a receipt names msg_id {msg_id}, but the mailbox no longer holds "
        f"that message ({where}): the broker's log went back and lost what it acknowledged, "
        "or the message was deleted or expired. See docs/deploy-robustmq.md"
    )


def warn_partitions(address: str, msg_id: int) -> str:
    return (
        f"mailbox {address}: one answer held msg_id {msg_id} twice: the mailbox has several "
        "partitions (RobustMQ's [runtime] default_topic_partition_num above 1), so msg_ids "
        "repeat and an ACK may skip messages. Set default_topic_partition_num = 1 on the broker "
        "and use a new mailbox; see docs/deploy-robustmq.md"
    )
