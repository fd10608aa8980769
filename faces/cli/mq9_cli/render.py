"""What ``mq9`` prints for a person. Everything another agent wrote (payloads, cards, reasons,
questions) may hold terminal control sequences: it is printed with every control character but
newline and tab written as an escape, so nothing it holds can move the cursor, retitle the
window or hide a line."""

from __future__ import annotations

import json
import re
import time
from typing import Any

COLUMN = 60  # widest a table column is padded to
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` with its control characters (and bidirectional overrides) escaped."""
    return _CONTROL.sub(lambda found: f"\\u{ord(found[0]):04x}", str(text))


def when(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + "Z"


def _table(rows: list[list[str]], heads: list[str]) -> str:
    """Columns aligned up to ``COLUMN`` characters; nothing is cut (a reason or a question is
    read whole: a longer cell pushes its row's next ones along instead), each newline shown as
    an escape so that a row stays one line."""
    if not rows:
        return ""
    cells = [heads, *[[printable(c).replace("\n", "\\n") for c in row] for row in rows]]
    widths = [min(max(len(r[i]) for r in cells), COLUMN) for i in range(len(heads))]
    lines = []
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def registered(data: dict[str, Any]) -> str:
    return printable(f"registered, mailbox {data['mail_address']}")


def unregistered(data: dict[str, Any]) -> str:
    return printable(f"unregistered {data['unregistered']}")


def sent(data: dict[str, Any]) -> str:
    return f"sent: msg_id {data['msg_id']}"


def acked(data: dict[str, Any]) -> str:
    if "set_aside" in data:
        return printable(
            f"set aside msg_id {data['set_aside']}: the group goes past it; it is kept with "
            f"your reason in {data['dead_letter_mailbox']} (mq9 dlq list)"
        )
    return f"acked {', '.join(map(str, data['confirmed'])) or 'nothing'}"


def deleted(data: dict[str, Any]) -> str:
    return f"deleted msg_id {data['msg_id']}"


def agents(data: dict[str, Any]) -> str:
    found = data.get("agents", [])
    if not found:
        return "no agents"
    rows = [[a.get("name", ""), a.get("mailbox", ""), a.get("description", "")] for a in found]
    return _table(rows, ["NAME", "MAILBOX", "DESCRIPTION"])


def message(shown: dict[str, Any]) -> str:
    head = [f"#{shown['msg_id']}", shown.get("priority", ""), when(shown.get("create_time"))]
    if shown.get("key"):
        head.append(f"key={shown['key']}")
    if shown.get("tags"):
        head.append("tags=" + ",".join(shown["tags"]))
    body = payload(shown.get("payload", ""))
    return printable(" ".join(head)) + "\n  " + printable(body).replace("\n", "\n  ")


def payload(value: Any) -> str:
    """A payload as it was sent: text as it is, JSON (the catalog shows it parsed) as JSON,
    never as Python writes a dict."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def messages(data: dict[str, Any]) -> str:
    found = data.get("messages", [])
    lines = [message(m) for m in found] or ["no messages"]
    if data.get("warning"):
        lines.append("warning: " + printable(data["warning"]))
    return "\n".join(lines)


def fetched(data: dict[str, Any]) -> str:
    """``mq9 fetch``: the messages, and whether they were taken (``said``)."""
    return messages(data) + "\n" + printable(data["said"])


def created(data: dict[str, Any]) -> str:
    ttl = f"{data['ttl']} s" if data["ttl"] else "for ever"
    return printable(f"created {data['mail_address']} (lives {ttl})")


def letter(shown: dict[str, Any]) -> str:
    about = shown.get("dead_letter")
    if about is None:
        return f"#{shown['msg_id']} is no dead letter: {printable(shown.get('problem'))}"
    status = {True: "waiting", False: "replayed", None: "unknown"}[shown.get("waiting")]
    lines = [
        f"#{shown['msg_id']} ({status}): {about['mailbox']} msg_id {about['msg_id']}, "
        f"group {about['group']}, {about['attempts']} attempts",
        f"  reason: {about['reason']}",
        f"  payload: {payload(shown['payload'])}",
    ]
    return printable("\n".join(lines))


def letters(data: dict[str, Any]) -> str:
    if not data["exists"]:
        return f"no dead letters ({data['dead_letter_mailbox']} does not exist)"
    rows = []
    for shown in data["letters"]:
        about = shown.get("dead_letter") or {}
        status = {True: "waiting", False: "replayed", None: "unknown"}[shown.get("waiting")]
        reason = about.get("reason", shown.get("problem") or "")
        rows.append(
            [
                str(shown["msg_id"]),
                str(about.get("msg_id", "-")),
                str(about.get("attempts", "-")),
                status,
                str(reason),
            ]
        )
    heads = ["ID", "ORIGINAL", "ATTEMPTS", "STATUS", "REASON"]
    return _table(rows, heads) or f"no dead letters in {data['dead_letter_mailbox']}"


def replayed(data: dict[str, Any]) -> str:
    lines = [f"sent back {len(data['sent'])}"]
    lines += [f"skipped #{k}: {printable(v)}" for k, v in data["skipped"].items()]
    return "\n".join(lines)


def call(shown: dict[str, Any]) -> str:
    lines = [f"{shown['task_id']}  {shown['state']}  agent {shown.get('agent', '')}"]
    for key in ("question", "result", "reason"):
        if key in shown:
            lines.append(f"  {key}: {payload(shown[key])}")
    if shown.get("answer_pending"):
        lines.append("  (your answer waits for the agent)")
    return printable("\n".join(lines))


def calls(data: dict[str, Any]) -> str:
    found = data.get("calls", [])
    if not found:
        return "no calls"
    rows = [
        [
            c["task_id"],
            c["state"],
            c.get("agent", ""),
            payload(c.get("question") or c.get("result") or c.get("reason") or ""),
        ]
        for c in found
    ]
    return _table(rows, ["TASK", "STATE", "AGENT", "QUESTION / RESULT"])
