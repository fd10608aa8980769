"""JSON as serde_json reads and writes it: strict UTF-8, no NaN, no key given twice, RobustMQ's
number rules, and serde's words for each refusal (``WireError``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, NoReturn

from .errors import InvalidArgument, WireError
from .limits import MAX_U64

# json.dumps makes an encoder per call when given options: one made once (every request body)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(body: Any) -> bytes:
    """``body`` as compact JSON in UTF-8. Raises ``WireError`` on text that has no UTF-8
    form (a lone surrogate), which serde_json would refuse."""
    text = _COMPACT.encode(body)
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise WireError(err_not_utf8(text[exc.start])) from None


def err_not_utf8(char: str) -> str:
    return f"text holds a lone surrogate ({char!a}): it is not valid UTF-8, so mq9 cannot carry it"


def utf8(name: str, value: str) -> str:
    """``value`` if it has a UTF-8 form, else ``Mq9Error`` naming ``name``."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"invalid {name}: {err_not_utf8(value[exc.start])}") from None
    return value


class _Object(dict[str, Any]):
    """A JSON object as parsed, with the names it gave more than once (in ``repeated``):
    serde refuses a repeated field of the struct it reads and ignores repeated unknown ones."""

    repeated: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = []
        for name, _ in pairs:
            if name in seen:
                repeated.append(name)
            seen.add(name)
        obj.repeated = tuple(repeated)
    return obj


def repeated_names(value: object) -> tuple[str, ...]:
    """The names a parsed JSON object gave more than once (``loads(..., as_struct=True)``)."""
    return value.repeated if isinstance(value, _Object) else ()


def _unique_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _pairs(pairs)
    if obj.repeated:
        raise WireError(f"duplicate field `{obj.repeated[0]}`")
    return obj


def _int(literal: str) -> int | float:
    # serde_json reads as a float -0, and an integer that fits neither u64 nor i64: no integer
    # field takes them (``floating point `1.8446744073709552e+19` ``, as RobustMQ answers)
    if literal == "-0":
        return -0.0
    if len(literal) > 21:  # beyond any u64 or i64 (and Python's int conversion limit)
        return _float(literal)
    number = int(literal)
    return float(number) if not -(2**63) <= number <= MAX_U64 else number


def _float(literal: str) -> float:
    number = float(literal)
    if math.isinf(number):  # serde_json's f64 overflows
        raise WireError("number out of range")
    return number


def _no_constant(name: str) -> NoReturn:
    raise WireError("expected value")  # NaN, Infinity: JSON has none


def loads(data: bytes, *, as_struct: bool = False) -> Any:
    """Parse JSON as strictly as serde_json: UTF-8 only, no NaN, no lone surrogates, no key
    given twice in an object. Raises ``WireError`` in serde's words.

    ``as_struct``: parse it as serde reads a struct (``Shape``), which skips what it does not
    read: a key given twice is judged by ``Shape`` (an error only for a field of the struct),
    and text that is not UTF-8 or holds a lone surrogate is an error only where a field's
    string is read (``text``); elsewhere it is kept, as U+DC80-U+DCFF for each bad byte."""
    if not data or not data.strip():
        raise WireError("EOF while parsing a value")
    try:
        text = bytes(data).decode("utf-8", "surrogateescape" if as_struct else "strict")
        value = (_STRUCT_DECODER if as_struct else _STRICT_DECODER).decode(text)
    except WireError:
        raise
    except UnicodeDecodeError:
        raise WireError(ERR_NOT_UNICODE) from None
    except RecursionError:
        raise WireError("recursion limit exceeded") from None
    except json.JSONDecodeError as exc:
        raise WireError(_serde_syntax(exc)) from None
    except ValueError:  # no JSON reader of ours should raise anything else; never a crash
        raise WireError("expected value") from None
    if not as_struct and "\\u" in text:  # an escaped lone surrogate parses in Python only
        _check_surrogates(value)
    return value


# Made once: json.loads with options builds a decoder (and its scanner) for every call
_STRUCT_DECODER, _STRICT_DECODER = (
    json.JSONDecoder(
        object_pairs_hook=hook, parse_constant=_no_constant, parse_int=_int, parse_float=_float
    )
    for hook in (_pairs, _unique_pairs)
)


def _serde_syntax(exc: json.JSONDecodeError) -> str:
    """serde_json's words for the JSON syntax error Python's json found."""
    if exc.msg.startswith("Expecting ',' delimiter"):
        closing = "}" if _innermost(exc.doc[: exc.pos]) == "{" else "]"
        return f"expected `,` or `{closing}`"
    for python, serde in _SYNTAX:
        if exc.msg.startswith(python):
            return serde
    return "expected value"


def _innermost(doc: str) -> str | None:
    """The bracket of the object or array open at the end of ``doc`` (None at top level)."""
    opened: list[str] = []
    quoted = escaped = False
    for char in doc:
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "{[":
            opened.append(char)
        elif char in "}]" and opened:
            opened.pop()
    return opened[-1] if opened else None


_SYNTAX = (
    ("Expecting property name", "key must be a string"),
    ("Expecting ':' delimiter", "expected `:`"),
    ("Extra data", "trailing characters"),
    ("Unterminated string", "EOF while parsing a string"),
    (
        "Invalid control character",
        "control character (\\u0000-\\u001F) found while parsing a string",
    ),
    ("Invalid \\escape", "invalid escape"),
)


# serde_json's words for text that is not Unicode: bytes that are not UTF-8, a leading
# surrogate escape not followed by its trailing one, a trailing one alone.
ERR_NOT_UNICODE = "invalid unicode code point"
ERR_LEAD_SURROGATE = "unexpected end of hex escape"
ERR_TRAIL_SURROGATE = "lone leading surrogate in hex escape"


def text(value: str) -> str:
    """``value`` if it is Unicode text (see ``loads``), else ``WireError`` in serde's words."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(value[exc.start])
        if 0xDC80 <= char <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            raise WireError(ERR_NOT_UNICODE) from None
        raise WireError(ERR_LEAD_SURROGATE if char < 0xDC00 else ERR_TRAIL_SURROGATE) from None
    return value


def _check_surrogates(value: object) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            text(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def nests_deeper(value: object, levels: int) -> bool:
    """Whether ``value`` nests more than ``levels`` objects or arrays. It recurses at most that
    deep, so it is safe on any parsed body, however deep."""
    if isinstance(value, dict):
        children: Iterable[object] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels == 0 or any(nests_deeper(child, levels - 1) for child in children)
