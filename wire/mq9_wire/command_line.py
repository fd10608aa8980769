"""What the two command lines (``mq9-dev-broker`` and ``mq9-mcp``) share: argparse value types
and logging on stderr."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import sys
from collections.abc import Iterator, Sequence

from .nats_floor.redaction import redact


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, naming the flag meant when one is misspelt: a safety flag such as
    ``--read-only`` must not fail in words that leave the user guessing."""

    def parse_args(  # type: ignore[override]  # typeshed's overloads: a namespace's own type
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}{self._nearest(unknown)}")
        return parsed

    def _nearest(self, unknown: list[str]) -> str:
        flags = [word.split("=", 1)[0] for word in unknown if word.startswith("--")]
        known = [flag for flag in self._option_string_actions if flag.startswith("--")]
        for flag in flags:
            match = difflib.get_close_matches(flag, known, n=1)
            if match:
                return f" (did you mean {match[0]}?)"
        return ""


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: not an integer") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text}: must be at least 1")
    return value


def count_limit(text: str) -> int | None:
    """A count limit where 0 means none."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid number {text}: must be 0 (no limit) or more")
    return value or None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid number {text}: must be above 0")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text}: use 1-65535")
    return value


def port_or_free(text: str) -> int:
    """A port to listen on, 0 for the one the system gives (the program says which)."""
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text}: use 0 (a free one) to 65535")
    return value


def configure_logging(level: str, *, loud: Sequence[str] = ()) -> None:
    """Every log record on stderr, one line each (stdout may carry a protocol). With ``loud``
    logger names, only those log at ``level``; other libraries speak up for warnings and worse,
    unless ``level`` is debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Redacting("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_one_line_nats_errors)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = getattr(logging, level.upper())
    quiet = loud and numeric != logging.DEBUG
    root.setLevel(max(numeric, logging.WARNING) if quiet else numeric)
    for name in loud:
        logging.getLogger(name).setLevel(numeric)


class _Redacting(logging.Formatter):
    """Log lines with every URL's password hidden, tracebacks included: a library's error
    may quote the server URL, credentials and all."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


@contextlib.contextmanager
def nats_errors_in_one_line() -> Iterator[None]:
    """Meanwhile, nats-py's complaints (a failed reconnect, with its traceback) are one line
    each on stderr and go no further: for a short command that configures no logging."""
    nats_log = logging.getLogger("nats")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Redacting("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_one_line_nats_errors)
    kept = nats_log.propagate
    nats_log.addHandler(handler)
    nats_log.propagate = False
    try:
        yield
    finally:
        nats_log.removeHandler(handler)
        nats_log.propagate = kept


def _one_line_nats_errors(record: logging.LogRecord) -> bool:
    """nats-py logs every failed reconnect attempt with a traceback; one line says enough."""
    if record.name.startswith("nats") and record.exc_info:
        exc = record.exc_info[1]
        record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True
