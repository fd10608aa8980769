"""The mq9 wire contract: subjects, headers, address rules, bodies, error texts.

Everything here follows RobustMQ, the reference mq9 broker (robustmq/robustmq at 8bd49dc; see
``docs/protocol.md`` for the rule behind each line and the RobustMQ file it comes from). The
client encodes with it and the bundled broker decodes with it, so the two cannot drift apart.
Nothing here does I/O, and nothing here imports beyond the standard library.

One module per job: ``subjects`` (where requests go), ``limits`` (defaults and bounds),
``values`` (checking what a request carries), ``serde`` (JSON as serde_json reads it),
``shapes`` (the request and reply bodies), ``messages`` (headers, payloads, ``Message``),
``cards`` and ``registration`` (A2A agent cards), ``errors`` (the classes, and each error
text beside the pattern that reads it), ``quoting`` and ``hazards`` (what logs and errors
quote and warn of). This face re-exports what the package uses as ``protocol.NAME``.
"""

from __future__ import annotations

from .cards import (
    A2A_CARD_FIELDS,
    A2A_CARD_VERSION,
    A2A_INTERFACE_FIELDS,
    A2A_MODES,
    A2A_SKILL_FIELDS,
    MQ9_URL_SCHEME,
    a2a_card,
    agent_card,
    card_mailbox,
    card_skill_fields,
    card_skills,
    mq9_interface,
    normalize_agent,
)
from .errors import (
    ERR_AGENT_INFO_EMPTY,
    ERR_AGENT_NAME_EMPTY,
    ERR_NAME_CHARS,
    ERR_NAME_EDGES,
    ERR_NAME_EMPTY,
    ERR_REGISTER_EMPTY,
    ERR_SEARCH_NOT_BUILT,
    LISTING_TOO_LARGE,
    SEARCH_NOT_BUILT,
    SEARCH_TABLE_MISSING,
    InvalidAddress,
    InvalidArgument,
    MalformedReply,
    Mq9Error,
    WireError,
    err_ack_mailbox_missing,
    err_address_too_long,
    err_agent_limit,
    err_answer_too_large,
    err_card_too_large,
    err_empty_segment,
    err_entry_too_large,
    err_group_limit,
    err_group_name_too_long,
    err_invalid_address,
    err_listing_too_large,
    err_mailbox_exists,
    err_mailbox_full,
    err_mailbox_limit,
    err_mailbox_missing,
    err_message_too_large,
    err_stored_too_large,
    err_topic_missing,
    err_unknown_subject,
)
from .hazards import warn_log_went_back, warn_partitions, warn_receipt_missing
from .limits import (
    DEFAULT_DISCOVER_LIMIT,
    DEFAULT_MAILBOX_TTL,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_WAIT_MS,
    DEFAULT_NUM_MSGS,
    DELIVER_POLICIES,
    LANE_READ_BYTES,
    MAX_ADDRESS_LENGTH,
    MAX_CONTROL_LINE,
    MAX_DISCOVER_LIMIT,
    MAX_GROUP_NAME,
    MAX_NUM_MSGS,
    MAX_SECONDS,
    MAX_U32,
    MAX_U64,
    MAX_WAIT_MS,
    QUERY_CAP,
    QUOTE_CHARS,
)
from .messages import (
    HEADER_DELAY,
    HEADER_KEY,
    HEADER_PRIORITY,
    HEADER_SENDER,
    HEADER_TAGS,
    HEADER_TTL,
    Message,
    check_key,
    check_tags,
    extra_headers,
    header_block,
    parse_header_block,
    payload_bytes,
    payload_text,
    send_headers,
)
from .quoting import clipped, quoted
from .serde import (
    ERR_LEAD_SURROGATE,
    ERR_NOT_UNICODE,
    ERR_TRAIL_SURROGATE,
    encode,
    err_not_utf8,
    loads,
    nests_deeper,
    text,
    utf8,
)
from .shapes import (
    ACK_REQUEST,
    BOOL,
    BYTES,
    CREATE_REPLY,
    CREATE_REQUEST,
    DELETE_REPLY,
    DELIVER,
    DISCOVER_REPLY,
    DISCOVER_REQUEST,
    ERROR_REPLY,
    FETCH_CONFIG,
    FETCH_REQUEST,
    I64,
    ITEMS,
    MESSAGES_REPLY,
    MSG_ITEM,
    QUERY_REQUEST,
    REGISTER_REQUEST,
    REPORT_REQUEST,
    SEND_REPLY,
    STR,
    STR_LIST,
    U32,
    U64,
    UNREGISTER_REQUEST,
    Shape,
)
from .subjects import (
    AGENT_DISCOVER,
    AGENT_REGISTER,
    AGENT_REPORT,
    AGENT_UNREGISTER,
    MAILBOX_CREATE,
    MSG_ACK,
    MSG_DELETE,
    MSG_FETCH,
    MSG_QUERY,
    MSG_SEND,
    PREFIX,
    SUBJECT_WILDCARD,
    TENANT,
    ack_subject,
    delete_subject,
    fetch_subject,
    query_subject,
    send_subject,
)
from .values import (
    PRIORITY_ORDER,
    Priority,
    check_address,
    check_group_name,
    check_int,
    header_u64,
    is_valid_address,
    name_error,
    new_address,
    parse_priority,
)

__all__ = [  # noqa: RUF022  (grouped by module, as imported)
    # subjects
    "AGENT_DISCOVER", "AGENT_REGISTER", "AGENT_REPORT", "AGENT_UNREGISTER", "MAILBOX_CREATE",
    "MSG_ACK", "MSG_DELETE", "MSG_FETCH", "MSG_QUERY", "MSG_SEND", "PREFIX", "SUBJECT_WILDCARD",
    "TENANT", "ack_subject", "delete_subject", "fetch_subject", "query_subject", "send_subject",
    # limits
    "DEFAULT_DISCOVER_LIMIT", "DEFAULT_MAILBOX_TTL", "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_WAIT_MS", "DEFAULT_NUM_MSGS", "DELIVER_POLICIES", "LANE_READ_BYTES",
    "MAX_ADDRESS_LENGTH", "MAX_CONTROL_LINE", "MAX_DISCOVER_LIMIT", "MAX_GROUP_NAME",
    "MAX_NUM_MSGS", "MAX_SECONDS", "MAX_U32", "MAX_U64", "MAX_WAIT_MS", "QUERY_CAP",
    "QUOTE_CHARS",
    # values
    "PRIORITY_ORDER", "Priority", "check_address", "check_group_name", "check_int",
    "header_u64", "is_valid_address", "name_error", "new_address", "parse_priority",
    # quoting
    "clipped", "quoted",
    # serde
    "ERR_LEAD_SURROGATE", "ERR_NOT_UNICODE", "ERR_TRAIL_SURROGATE", "encode", "err_not_utf8",
    "loads", "nests_deeper", "text", "utf8",
    # shapes
    "ACK_REQUEST", "BOOL", "BYTES", "CREATE_REPLY", "CREATE_REQUEST", "DELETE_REPLY", "DELIVER",
    "DISCOVER_REPLY", "DISCOVER_REQUEST", "ERROR_REPLY", "FETCH_CONFIG", "FETCH_REQUEST", "I64",
    "ITEMS", "MESSAGES_REPLY", "MSG_ITEM", "QUERY_REQUEST", "REGISTER_REQUEST",
    "REPORT_REQUEST", "SEND_REPLY", "STR", "STR_LIST", "U32", "U64", "UNREGISTER_REQUEST",
    "Shape",
    # messages
    "HEADER_DELAY", "HEADER_KEY", "HEADER_PRIORITY", "HEADER_SENDER", "HEADER_TAGS", "HEADER_TTL",
    "Message",
    "check_key", "check_tags", "extra_headers", "header_block", "parse_header_block",
    "payload_bytes", "payload_text", "send_headers",
    # cards
    "A2A_CARD_FIELDS", "A2A_CARD_VERSION", "A2A_INTERFACE_FIELDS", "A2A_MODES",
    "A2A_SKILL_FIELDS", "MQ9_URL_SCHEME", "a2a_card", "agent_card", "card_mailbox",
    "card_skill_fields", "card_skills", "mq9_interface", "normalize_agent",
    # errors
    "ERR_AGENT_INFO_EMPTY", "ERR_AGENT_NAME_EMPTY", "ERR_NAME_CHARS", "ERR_NAME_EDGES",
    "ERR_NAME_EMPTY", "ERR_REGISTER_EMPTY", "ERR_SEARCH_NOT_BUILT", "LISTING_TOO_LARGE",
    "SEARCH_NOT_BUILT", "SEARCH_TABLE_MISSING", "InvalidAddress", "InvalidArgument",
    "MalformedReply", "Mq9Error", "WireError", "err_ack_mailbox_missing",
    "err_address_too_long", "err_agent_limit", "err_answer_too_large", "err_card_too_large",
    "err_empty_segment", "err_entry_too_large", "err_group_limit", "err_group_name_too_long",
    "err_invalid_address", "err_listing_too_large", "err_mailbox_exists", "err_mailbox_full",
    "err_mailbox_limit", "err_mailbox_missing", "err_message_too_large", "err_stored_too_large",
    "err_topic_missing", "err_unknown_subject",
    # hazards
    "warn_log_went_back", "warn_partitions", "warn_receipt_missing",
]
