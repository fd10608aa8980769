"""The screening of one JSON-RPC message before the MCP SDK reads it, over stdio and HTTP alike:
what the SDK cannot read (a batch, a missing ``method``, another ``jsonrpc``, params that are
not an object, a lone surrogate, nesting past its limit, an id that is neither a string nor an
integer) gets the JSON-RPC error owed for it here, so no request goes unanswered."""

from __future__ import annotations

import json
import re
from typing import Any

from mcp import types
from pydantic import ValidationError


def screened(text: str) -> list[types.JSONRPCError] | None:
    """None when the SDK can read ``text``; else the errors owed for it (none for a message with
    no id to answer: a notification, a response, or no JSON-RPC at all)."""
    answers = bad_id_refusal(text)
    if answers:
        return answers
    try:
        types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as exc:
        return refusals(text, exc)
    return None


def bad_id_refusal(line: str) -> list[types.JSONRPCError]:
    """A request whose id is neither a string nor an integer (12.5, null, an object, an array):
    the SDK would read it as a notification and never answer. JSON-RPC 2.0 answers a request
    whose id cannot be used with an Invalid Request error whose id is null."""
    if '"id"' not in line:
        return []
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return []  # refusals() answers what is not JSON, or too deep to read
    if not isinstance(value, dict) or "id" not in value or "result" in value or "error" in value:
        return []
    if _usable_id(value["id"]):
        return []
    why = f"the request id must be a string or an integer, not {json.dumps(value['id'])[:40]}"
    return [_refusal(None, types.INVALID_REQUEST, why)]


def _usable_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def refusals(line: str, problem: Exception) -> list[types.JSONRPCError]:
    """The JSON-RPC errors owed for a line the SDK cannot read (a batch, a missing ``method``,
    another ``jsonrpc`` version, params that are not an object, a lone surrogate, nesting past
    its limit): one per request in it that carries an id (JSON-RPC 2.0: every request with an
    id gets an answer). None for a line with no id to answer (a notification, a response, or no
    JSON at all)."""
    try:
        value = json.loads(line)
    except RecursionError:  # nested past Python's limit: its id is still near the start
        found = leading_id(line)
        why = "the request is nested too deeply"
        return [] if found is None else [_refusal(found, types.INVALID_REQUEST, why)]
    except ValueError:
        return []
    if isinstance(value, list):
        why = "JSON-RPC batches are not supported (MCP): send one message per line"
        return [_refusal(item["id"], types.INVALID_REQUEST, why) for item in value if _has_id(item)]
    if not _has_id(value):
        return []
    if value.get("jsonrpc") != "2.0":
        return [_refusal(value["id"], types.INVALID_REQUEST, 'jsonrpc must be "2.0"')]
    if not isinstance(value.get("method"), str):
        return [_refusal(value["id"], types.INVALID_REQUEST, "the request has no method")]
    if not isinstance(value.get("params", {}), dict):
        return [_refusal(value["id"], types.INVALID_PARAMS, "params must be an object")]
    detail = str(problem).splitlines()
    text = next((d.strip() for d in detail[1:] if d.strip()), "cannot be read")
    if "surrogate" in line or "\\ud" in line.lower():
        text = "text holds a lone surrogate (half of a character): it is not valid UTF-8"
    return [_refusal(value["id"], types.INVALID_PARAMS, f"invalid params: {text[:200]}")]


# The id of a request written in the usual order (jsonrpc, id, method, params): found without
# parsing, for a text too deep to parse.
_LEADING_ID = re.compile(r'\s*\{\s*(?:"jsonrpc"\s*:\s*"[^"]*"\s*,\s*)?"id"\s*:\s*(-?\d+|"[^"\\]*")')


def leading_id(text: str) -> int | str | None:
    """The id at the start of a JSON-RPC request's text, read without parsing it."""
    found = _LEADING_ID.match(text)
    return None if found is None else json.loads(found.group(1))


def _has_id(item: Any) -> bool:
    """A request with an id to answer (not a notification, and not a response)."""
    if not isinstance(item, dict) or "result" in item or "error" in item:
        return False
    return _usable_id(item.get("id"))


def _refusal(request_id: Any, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message)
    )
