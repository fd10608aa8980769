"""``wake_rule``: keep the wake rules of a mailbox the agent reads (docs/wake.md): what to
wake when mail waits there. Not in the default eight. The waker's operator decides where wakes
may go (its allow-lists), so a rule naming an address it did not allow is kept but never
delivered; the mailbox goes through the policy as every mailbox a tool touches.
"""

from __future__ import annotations

from typing import Annotated, Literal, cast

from pydantic import Field, WithJsonSchema

from ..client.client import Mq9Client
from ..wake import RuleBook, RuleError, WakeRule
from .context import CallContext
from .errors import OperationError
from .results import Outcome, WakeRules
from .schemas import _MailboxInput

# What a rule wakes. "" (for list and remove: none) is taken but not listed: Gemini refuses a
# function declaration whose enum holds an empty value, and with it every tool of the request
# (HTTP 400); a strict-mode model that must give target picks any for a list.
_TARGETS = ("webhook", "agent_server", "command", "callback")
_Target = Annotated[
    Literal["webhook", "agent_server", "command", "callback", ""],
    WithJsonSchema({"type": "string", "enum": list(_TARGETS)}),
]


class WakeRuleInput(_MailboxInput):
    action: Literal["list", "add", "remove"] = Field(
        default="list", description="list, add or remove."
    )
    name: str = Field(default="default", description="The rule's name.")
    target: _Target = Field(default="", description="For add: what to wake.")
    url: str = Field(default="", description="webhook or agent_server: its URL.")
    secret: str = Field(default="", description="webhook: the signing secret (16+ chars).")
    assistant: str = Field(default="", description="agent_server: assistant or graph.")
    argv: list[str] = Field(default=[], description="command: the program and arguments.")
    callback: str = Field(default="", description="callback: its registered name.")
    group: str = Field(default="", description="Your reading group: read mail wakes nothing.")
    min_interval: int = Field(default=1, ge=0, description="Seconds between wakes.")
    cap: int = Field(default=0, ge=0, description="Most wakes per hour; 0: no cap.")
    quiet_hours: str = Field(default="", description="'HH:MM-HH:MM' UTC: no wakes then.")


DESCRIPTIONS = {
    "wake_rule": "Add, list or remove a rule that wakes an agent (webhook, Agent Server run, "
    "command, callback) when mail waits in a mailbox you read.",
}


async def wake_rule(ctx: CallContext, args: WakeRuleInput) -> Outcome[WakeRules]:
    address = ctx.policy.own(args.mail_address)
    ctx.policy.check(address)
    # Rules are records with tags and headers: this package's client (the SDK's has neither)
    book = RuleBook(cast(Mq9Client, ctx.client))
    try:
        if args.action == "add":
            if not args.target:
                raise OperationError(f"add needs a target: {', '.join(_TARGETS)}")
            rule = WakeRule(
                mailbox=address,
                name=args.name,
                target=args.target,
                url=args.url,
                secret=args.secret,
                assistant=args.assistant,
                argv=tuple(args.argv),
                callback=args.callback,
                group=args.group,
                min_interval=args.min_interval,
                cap=args.cap,
                quiet_hours=args.quiet_hours,
            )
            await book.add(rule)
        elif args.action == "remove" and not await book.remove(address, args.name):
            raise OperationError(f"{address!r} has no wake rule {args.name!r}")
        rules = [r.view() for r in await book.list(address)]
    except RuleError as exc:
        raise OperationError(str(exc)) from None
    result = WakeRules(mail_address=address, action=args.action, rules=rules)
    return Outcome(result, {"mail_address": address, "rules": rules})
