"""What ``mq9 console``'s options hand the application (``serve.settings_for`` fills it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Settings:
    token: str
    other_secrets: list[str] = field(default_factory=list)
    allow_writes: bool = False
    mailboxes: tuple[str, ...] = ()
    reply_mailboxes: tuple[str, ...] = ()
    server: str = ""
    sample_seconds: float = 5.0
    poll_seconds: float = 0.5
    # The origins a browser may post from besides this console's own Host: the public
    # address behind a reverse proxy that rewrites Host (nginx's default), e.g.
    # https://mq9.example.com
    public_origins: tuple[str, ...] = ()
    audit_log: str | None = None  # a file the log of writes is appended to (and read from)
    metrics: str | None = None  # [HOST:]PORT of the operator's /metrics, /healthz, /readyz
