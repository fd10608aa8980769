"""``mq9``: the agents' mail at a terminal, on any mq9 server. Each subcommand is one of the
catalog's operations (``overview.operate``) or one of ``overview``'s reads; this module only
reads options and writes answers (``render``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from mq9_platform._version import __version__
from mq9_platform.client.client import Mq9Client
from mq9_wire.protocol import LANE_READ_BYTES, QUERY_CAP
from mq9_wire.protocol.errors import NotAwaitingAck

from . import render
from .connect import FAILED, NOT_FOUND, OK, USAGE, Failure, Target, failure

if TYPE_CHECKING:
    from mq9_platform.operations.policy import ToolPolicy

    from . import overview

# What a command does with the broker (the catalog, its models, the groups' reads: ``overview``)
# is imported once it is connected, never before: a broker that is not there is said without
# waiting on imports it never needed (tests/cli/test_cli_start.py).

T = TypeVar("T")
SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_MQ9_COMPLETE"


@dataclass
class Session:
    target: Target
    as_json: bool

    def run(
        self,
        action: Callable[[Mq9Client], Awaitable[T]],
        operation: str | None = None,
        mailbox: str | None = None,
    ) -> T:
        """``action(client)`` on a connected client; a failure ends the command in one line
        (``operation`` on ``mailbox``: what the line's next step is about)."""

        async def main() -> T:
            async with self.target.client() as client:
                return await action(client)

        try:
            return asyncio.run(main())
        except Exception as exc:
            stop(failure(exc, operation=operation, mailbox=mailbox))

    def show(self, data: Any, human: Callable[[Any], str]) -> None:
        # JSON escapes C0 controls itself; printable escapes the rest a terminal obeys (DEL,
        # C1, bidirectional overrides), which inside JSON strings are the same text
        shown = json.dumps(data, ensure_ascii=False) if self.as_json else human(data)
        click.echo(render.printable(shown) if self.as_json else shown)

    def operate(
        self,
        name: str,
        args: dict[str, Any],
        human: Callable[[Any], str],
        policy: ToolPolicy | None = None,
    ) -> None:
        """Run the catalog's operation ``name`` and show its result."""
        mailbox = args.get("mail_address")

        async def operating(client: Mq9Client) -> Any:
            from . import overview

            return await overview.operate(client, name, args, policy)

        self.show(self.run(operating, name, mailbox), human)


def stop(problem: Failure) -> NoReturn:
    click.echo(f"mq9: {render.printable(str(problem))}", err=True)
    raise click.exceptions.Exit(problem.code)


def _session(ctx: click.Context, as_json: bool) -> Session:
    session = ctx.find_object(Session)
    assert session is not None  # the group made it
    if as_json:
        session.as_json = True
    return session


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Answer in JSON, for scripts.")(
        command
    )


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # as written: the order of the help's story

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's main, but a usage error is one ``mq9:`` line naming the help to read (not
        Click's four lines), as every other error is (docs/console.md's exit codes)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # `mq9` alone: the help it asked
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            sys.exit(USAGE)
        except click.UsageError as exc:
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
            click.echo(f"mq9: {render.printable(exc.format_message())}{where}", err=True)
            sys.exit(USAGE)
        except click.ClickException as exc:
            click.echo(f"mq9: {render.printable(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("mq9: aborted", err=True)
            sys.exit(FAILED)
        sys.exit(code if isinstance(code, int) else OK)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: mq9 --server nats://localhost:4222 agents",
)
@click.option(
    "--server",
    metavar="URL",
    help="nats://host:port (several comma-separated), tls://..., or memory:// (default: "
    "$MQ9_SERVER, then $NATS_URL, then nats://localhost:4222)",
)
@click.option("--user", help="NATS user ($MQ9_USER)")
@click.option("--password", help="NATS password (prefer $MQ9_PASSWORD)")
@click.option("--token", help="NATS token (prefer $MQ9_TOKEN)")
@click.option("--creds", metavar="FILE", help="NATS .creds file ($MQ9_CREDS)")
@click.option(
    "--credential-file",
    metavar="FILE",
    help="a file holding an mq9 credential <id>:<secret> (or $MQ9_CREDENTIAL, "
    "$MQ9_CREDENTIAL_FILE)",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="seconds to wait for each broker answer",
)
@json_option
@click.version_option(__version__, prog_name="mq9")
@click.pass_context
def cli(
    ctx: click.Context, /, server: str | None, timeout: float, as_json: bool, **login: Any
) -> None:
    """See and steer the agents' mail on an mq9 server (bundled broker or RobustMQ).

    Exit codes: 0 done, 1 refused, 2 usage, 3 not found, 4 broker or its store unreachable
    (a retry may work), 5 credentials refused."""
    if ctx.resilient_parsing:  # shell completion: nothing to connect
        return
    try:
        target = Target.from_options(server, request_timeout=timeout, **login)
    except Failure as problem:
        stop(problem)
    ctx.obj = Session(target, as_json)


# -- agents ------------------------------------------------------------------------------------


@cli.command(epilog="Example: mq9 agents")
@json_option
@click.pass_context
def agents(ctx: click.Context, as_json: bool) -> None:
    """List the registered agents. Changes nothing."""
    _session(ctx, as_json).operate("agent_discover", {"query": ""}, render.agents)


@cli.command(epilog="Example: mq9 discover 'translates to Japanese'")
@click.argument("query")
@json_option
@click.pass_context
def discover(ctx: click.Context, query: str, as_json: bool) -> None:
    """Find agents by what they do, best first. Changes nothing."""
    _session(ctx, as_json).operate("agent_discover", {"query": query}, render.agents)


@cli.command(epilog="Example: mq9 register agent.translator --capabilities 'translates text'")
@click.argument("name")
@click.option("--capabilities", required=True, help="what it does, as others would search it")
@click.option("--mailbox", help="its mailbox (default: the name); created if missing")
@json_option
@click.pass_context
def register(
    ctx: click.Context, name: str, capabilities: str, mailbox: str | None, as_json: bool
) -> None:
    """Register an agent: an A2A card carrying its mailbox.

    Changes: the registry (the card, replacing one of the same name), and creates the mailbox
    if it is missing."""
    args = {"name": name, "capabilities": capabilities}
    policy = _policy(agent_mailbox=mailbox)
    _session(ctx, as_json).operate("agent_register", args, render.registered, policy)


@cli.command(epilog="Example: mq9 unregister agent.translator")
@click.argument("name")
@json_option
@click.pass_context
def unregister(ctx: click.Context, name: str, as_json: bool) -> None:
    """Remove an agent from the registry.

    Changes: the registry (the card is gone); its mailbox and messages stay."""
    _session(ctx, as_json).operate("agent_unregister", {"name": name}, render.unregistered)


# -- messages ----------------------------------------------------------------------------------


@cli.command(epilog="Example: echo '{\"task\": 1}' | mq9 send agent.worker --priority urgent")
@click.argument("mailbox")
@click.argument("payload", required=False)
@click.option("--file", "path", type=click.File("r", encoding="utf-8"), help="read it from FILE")
@click.option(
    "--priority",
    type=click.Choice(["normal", "urgent", "critical"]),
    default="normal",
    show_default=True,
)
@click.option("--key", default="", help="a newer message with this key replaces it")
@click.option("--tag", "tags", multiple=True, help="a tag for query (repeatable)")
@click.option("--delay", type=click.IntRange(min=0), default=0, help="seconds until readable")
@click.option("--ttl", type=click.IntRange(min=0), default=0, help="seconds to live; 0 forever")
@json_option
@click.pass_context
def send(
    ctx: click.Context, /, mailbox: str, payload: str | None, path: Any, as_json: bool, **sent: Any
) -> None:
    """Store a message for MAILBOX: PAYLOAD, --file, or standard input ('-' or nothing).

    Changes: MAILBOX holds one more message (with --key, the older one with that key is
    replaced). `mq9 create` makes a mailbox."""
    session = _session(ctx, as_json)
    if payload is not None and path is not None:
        stop(Failure("give the payload as an argument or --file, not both", USAGE))
    if path is not None:
        payload = path.read()
    elif payload is None or payload == "-":
        if sys.stdin.isatty():
            stop(Failure("no payload: give it as an argument, --file or on standard input", USAGE))
        payload = sys.stdin.read()
    if not payload:
        why = "an empty message: give the payload as an argument, --file or on standard input"
        stop(Failure(why + " (nothing was sent)", USAGE))
    args = {"mail_address": mailbox, "payload": payload, **sent, "tags": list(sent["tags"])}
    session.operate("send_message", args, render.sent)


@cli.command(epilog="Example: mq9 fetch agent.worker --group workers --consume --wait 30000")
@click.argument("mailbox")
@click.option(
    "--group",
    default="default",
    show_default=True,
    help="the consumer group whose waiting messages to show (or take, with --consume)",
)
@click.option(
    "--wait",
    type=click.IntRange(0, 30_000),
    default=0,
    metavar="MS",
    help="wait this long for a message",
)
@click.option(
    "--consume",
    is_flag=True,
    help="take them for GROUP, as a worker does: ack each next (`mq9 ack`); one never "
    "acked is handed out again, and set aside as a dead letter after a few hand-outs",
)
@json_option
@click.pass_context
def fetch(
    ctx: click.Context, mailbox: str, group: str, wait: int, consume: bool, as_json: bool
) -> None:
    """Show what waits for GROUP in MAILBOX, most urgent first.

    Changes nothing (a look: no position moves, nothing is handed out, counted toward a dead
    letter or set aside), unless --consume: then the messages are taken for GROUP, to be
    acked next, and GROUP's workers see them as handed out."""
    session, policy = _session(ctx, as_json), _policy(group=group)
    if consume:
        args = {"mail_address": mailbox, "max_wait_ms": wait}

        async def taking(client: Mq9Client) -> dict[str, Any]:
            from . import overview

            done = await overview.operate(client, "fetch_messages", args, policy)
            said = (
                f"taken for group {group}: ack each with `mq9 ack {mailbox} MSG_ID --group "
                f"{group}`; one never acked is handed out again, then set aside"
            )
            return done | {"group": group, "consumed": True, "said": said}

        session.show(session.run(taking, "fetch_messages", mailbox), render.fetched)
        return

    async def looking(client: Mq9Client) -> dict[str, Any]:
        from . import overview

        found = await overview.waiting(client, mailbox, group, wait)
        said = (
            f"a look: nothing taken for group {group} (`--consume` takes them)"
            if found
            else f"nothing waits for group {group}"
        )
        views = [overview.message_view(m) for m in found]
        return {"messages": views, "count": len(views), "group": group, "consumed": False,
                "said": said}  # fmt: skip

    session.show(session.run(looking, "fetch_messages", mailbox), render.fetched)


@cli.command(epilog="Example: mq9 create team.inbox --ttl 86400 --description 'mail for the team'")
@click.argument("mailbox")
@click.option(
    "--ttl",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="seconds the mailbox lives (0: for ever); its messages go with it",
)
@click.option("--description", default="", help="what it is for, kept with it")
@json_option
@click.pass_context
def create(ctx: click.Context, mailbox: str, ttl: int, description: str, as_json: bool) -> None:
    """Create MAILBOX.

    Changes: a new mailbox (one that exists already is left as it is, and said: exit 1)."""
    session = _session(ctx, as_json)

    async def creating(client: Mq9Client) -> dict[str, Any]:
        from . import overview

        await overview.create(client, mailbox, ttl, description)
        return {"mail_address": mailbox, "ttl": ttl, "description": description, "created": True}

    session.show(session.run(creating, "create_mailbox", mailbox), render.created)


@cli.command(epilog="Example: mq9 ack agent.worker 41 --group workers")
@click.argument("mailbox")
@click.argument("msg_id", type=click.IntRange(min=0))
@click.option("--group", default="default", show_default=True, help="the consumer group")
@click.option("--set-aside", default="", metavar="REASON", help="dead-letter it, saying why")
@json_option
@click.pass_context
def ack(
    ctx: click.Context, mailbox: str, msg_id: int, group: str, set_aside: str, as_json: bool
) -> None:
    """Confirm GROUP handled MAILBOX up to MSG_ID (or set one aside).

    Changes: GROUP's position in MAILBOX moves past MSG_ID (the messages are not deleted);
    --set-aside stores the message in MAILBOX.dlq, saying why."""
    args = {"mail_address": mailbox, "msg_id": msg_id, "set_aside": set_aside}
    session, policy = _session(ctx, as_json), _policy(group=group)

    async def acking(client: Mq9Client) -> dict[str, Any]:
        from mq9_platform.groups.dead_letters import dead_letter_address
        from mq9_platform.operations.errors import OperationError

        from . import overview

        try:
            done = await overview.operate(client, "ack_messages", args, policy)
        except OperationError as exc:
            refused = exc.__cause__  # the operation's typed refusal, never its words
            if not isinstance(refused, NotAwaitingAck):
                raise
            waiting = list(refused.waiting)
            hint = (
                f"these wait: {waiting}"
                if waiting
                else f"ack an id `mq9 fetch {mailbox} --group {group} --consume` took"
            )
            raise Failure(
                f"msg_id {msg_id} is not waiting for an ack by group {group} in {mailbox} "
                f"(never handed out, or acked already): {hint}",
                FAILED,
            ) from None
        if set_aside:  # the tool's words for this are a model's (next_step): a person's here
            done |= {"set_aside": msg_id, "dead_letter_mailbox": dead_letter_address(mailbox)}
        return done

    session.show(session.run(acking, "ack_messages", mailbox), render.acked)


@cli.command(epilog="Example: mq9 query agent.worker --tag billing --limit 20")
@click.argument("mailbox")
@click.option("--key", default="", help="only the newest with this key")
@click.option("--tag", "tags", multiple=True, help="only messages with one of these tags")
@click.option("--from-id", type=click.IntRange(min=0), default=0, help="start at this msg_id")
@click.option("--limit", type=click.IntRange(1, QUERY_CAP), default=QUERY_CAP, show_default=True)
@json_option
@click.pass_context
def query(
    ctx: click.Context, /, mailbox: str, tags: tuple[str, ...], as_json: bool, **given: Any
) -> None:
    """Read MAILBOX, oldest first. Changes nothing: no group's position moves."""
    args = {"mail_address": mailbox, "tags": list(tags), **given}
    session, limit = _session(ctx, as_json), given["limit"]

    async def querying(client: Mq9Client) -> dict[str, Any]:
        from . import overview

        done = await overview.operate(client, "query_messages", args)
        found = done["messages"]
        if len(found) >= limit:
            return done
        if tags or given["key"]:  # the broker pages a filter no further: say so
            if _maybe_cut(found):
                done["count_is_lower_bound"] = True
                done["warning"] = (
                    f"a QUERY answers at most {LANE_READ_BYTES >> 20} MiB of payloads: "
                    "there may be more of this key or these tags"
                )
            return done
        # One answer may stop before the mailbox ends without saying so: at 30 MiB of payloads
        # (34 messages of 1 MB answer 31) or at the broker's answer size. Read on from its
        # last id until the limit or a read that finds nothing more (overview.page)
        at = found[-1]["msg_id"] + 1 if found else None
        while at is not None and len(done["messages"]) < limit:
            more = await overview.page(client, mailbox, at, limit - len(done["messages"]))
            done["messages"] += [overview.message_view(m) for m in more.messages]
            at = more.next_from
            if more.hidden is not None:  # each page's, not only the last one's
                done["warning"] = "; ".join(filter(None, [done.get("warning"), more.hidden]))
        done["count"] = len(done["messages"])
        return done

    session.show(session.run(querying, "query_messages", mailbox), render.messages)


def _maybe_cut(shown: list[dict[str, Any]]) -> bool:
    from . import overview

    def size(payload: Any) -> int:  # a JSON payload is shown parsed
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        return len(text.encode())

    return sum(size(m["payload"]) for m in shown) > overview.SURE_BYTES


@cli.command(epilog="Example: mq9 delete agent.worker 41")
@click.argument("mailbox")
@click.argument("msg_id", type=click.IntRange(min=0))
@json_option
@click.pass_context
def delete(ctx: click.Context, mailbox: str, msg_id: int, as_json: bool) -> None:
    """Delete one message. Changes: the message is gone from MAILBOX for good."""
    args = {"mail_address": mailbox, "msg_id": msg_id}
    session = _session(ctx, as_json)

    async def deleting(client: Mq9Client) -> dict[str, Any]:
        from . import overview

        # mq9's DELETE of an id that is not there succeeds: a person is told it is not there
        with contextlib.suppress(overview.Unknown):  # (then deleted as asked)
            if await overview.message_at(client, mailbox, msg_id) is None:
                raise Failure(f"no message {msg_id} in {mailbox} (nothing deleted)", NOT_FOUND)
        return await overview.operate(client, "delete_message", args)

    session.show(session.run(deleting, "delete_message", mailbox), render.deleted)


@cli.command(epilog="Example: mq9 watch agent.worker --json | jq .payload")
@click.argument("mailbox")
@click.option("--from-id", type=click.IntRange(min=0), help="start here (default: new ones)")
@click.option("--count", type=click.IntRange(min=1), help="stop after this many")
@click.option("--for", "seconds", type=click.FloatRange(min=0), help="stop after SECONDS")
@json_option
@click.pass_context
def watch(
    ctx: click.Context,
    mailbox: str,
    from_id: int | None,
    count: int | None,
    seconds: float | None,
    as_json: bool,
) -> None:
    """Follow MAILBOX live: each new message as it arrives. Ctrl-C stops.

    Changes nothing: no group's position moves."""
    session = _session(ctx, as_json)

    async def follow(client: Mq9Client) -> None:
        from . import overview

        if from_id is None:  # the newest now, read here so that the line below can name it
            newest = await overview.newest_id(client, mailbox)
            after = -1 if newest is None else newest
        else:
            after, newest = from_id - 1, None
        click.echo(f"mq9: {_waiting_for(mailbox, from_id, newest, count, seconds)}", err=True)
        shown = 0
        with contextlib.suppress(TimeoutError):  # --for ran out: the end asked for
            async with asyncio.timeout(seconds):
                async for message in overview.follow(client, mailbox, after=after):
                    session.show(overview.message_view(message), render.message)
                    sys.stdout.flush()
                    shown += 1
                    if count is not None and shown >= count:
                        return

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the end a person chose
        session.run(follow)


def _waiting_for(
    mailbox: str, from_id: int | None, newest: int | None, count: int | None, seconds: float | None
) -> str:
    """What a watch waits for, said once it is connected: a quiet watch is not a hung one."""
    if from_id is not None:
        what = f"watching {mailbox} from msg_id {from_id}"
    elif newest is None:
        what = f"watching {mailbox} for new messages (it holds none now)"
    else:
        what = f"watching {mailbox} for messages after msg_id {newest}, the newest now"
    ends = [
        f"until {count} have come" if count is not None else "",
        f"for {seconds:g} s at most" if seconds is not None else "",
        "Ctrl-C stops",
    ]
    return render.printable(f"{what}: {', '.join(filter(None, ends))}")


# -- dead letters ------------------------------------------------------------------------------


@cli.group(cls=_Group, epilog="Example: mq9 dlq list agent.worker")
def dlq() -> None:
    """A mailbox's dead letters (in <mailbox>.dlq): list, show (changing nothing), replay."""


@dlq.command("list", epilog="Example: mq9 dlq list agent.worker --json")
@click.argument("mailbox")
@json_option
@click.pass_context
def dlq_list(ctx: click.Context, mailbox: str, as_json: bool) -> None:
    """The dead letters of MAILBOX: why, how often they failed, whether replayed. Changes
    nothing."""
    session = _session(ctx, as_json)

    async def listing(client: Mq9Client) -> tuple[str, list[overview.Letter] | None]:
        from . import overview

        found = await overview.dead_letters(client, mailbox)
        if found[1] is None and not await overview.exists(client, mailbox):
            raise Failure(f"mailbox {mailbox!r} does not exist (nor its dead letters)", NOT_FOUND)
        return found

    address, letters = session.run(listing)
    data = {
        "dead_letter_mailbox": address,
        "exists": letters is not None,
        "letters": [letter.view() for letter in letters or ()],
    }
    session.show(data, render.letters)


@dlq.command("show", epilog="Example: mq9 dlq show agent.worker 3")
@click.argument("mailbox")
@click.argument("msg_id", type=click.IntRange(min=0))
@json_option
@click.pass_context
def dlq_show(ctx: click.Context, mailbox: str, msg_id: int, as_json: bool) -> None:
    """One dead letter, payload and all (MSG_ID in the dead-letter mailbox). Changes
    nothing."""
    session = _session(ctx, as_json)

    async def reading(client: Mq9Client) -> tuple[str, list[overview.Letter] | None]:
        from . import overview

        return await overview.dead_letters(client, mailbox)

    address, letters = session.run(reading)
    found = [x for x in letters or () if x.message.msg_id == msg_id]
    if not found:
        stop(Failure(f"no message {msg_id} in {address}", 3))
    session.show(found[0].view(), render.letter)


@dlq.command("replay", epilog="Example: mq9 dlq replay agent.worker")
@click.argument("mailbox")
@json_option
@click.pass_context
def dlq_replay(ctx: click.Context, mailbox: str, as_json: bool) -> None:
    """Send MAILBOX's dead letters back to it, each once.

    Changes: MAILBOX holds each dead letter again (a new message each); MAILBOX.dlq records
    which were replayed, so a replay again sends none twice."""
    session = _session(ctx, as_json)

    async def replaying(client: Mq9Client) -> Any:
        from . import overview

        return await overview.replay_dead_letters(client, mailbox)

    done = session.run(replaying)
    data = {"sent": done.sent, "skipped": {str(k): v for k, v in done.skipped.items()}}
    session.show(data, render.replayed)


# -- calls -------------------------------------------------------------------------------------


@cli.group(cls=_Group, epilog="Example: mq9 calls --reply agent.me.calls list")
@click.option(
    "--reply",
    metavar="MAILBOX",
    help="the caller's reply mailbox (its agent_mailbox + '.calls', or its reply_mailbox)",
)
@click.pass_context
def calls(ctx: click.Context, reply: str | None) -> None:
    """The calls one caller made: list, show (changing nothing), answer a question, cancel."""
    ctx.meta["reply"] = reply


def _call(
    ctx: click.Context, as_json: bool, name: str, args: dict[str, Any], human: Callable[..., str]
) -> None:
    if ctx.meta["reply"] is None:  # (checked here: `mq9 calls list --help` needs none)
        stop(Failure("Missing option '--reply' (see mq9 calls --help)", USAGE))
    policy = _policy(reply_mailbox=ctx.meta["reply"])
    _session(ctx, as_json).operate(name, args, human, policy)


@calls.command("list", epilog="Example: mq9 calls --reply me.calls list --state input-required")
@click.option("--state", default="", help="only calls in this state, e.g. input-required")
@json_option
@click.pass_context
def calls_list(ctx: click.Context, state: str, as_json: bool) -> None:
    """Each call and its state. Changes nothing."""
    _call(ctx, as_json, "list_calls", {"state": state}, render.calls)


@calls.command("show", epilog="Example: mq9 calls --reply agent.me.calls show 7f3a...")
@click.argument("task_id")
@click.option("--wait", type=click.IntRange(0, 120), default=0, help="seconds to wait for it")
@json_option
@click.pass_context
def calls_show(ctx: click.Context, task_id: str, wait: int, as_json: bool) -> None:
    """One call: its state, and its result, question or reason. Changes nothing."""
    _call(ctx, as_json, "check_call", {"task_id": task_id, "wait_seconds": wait}, render.call)


@calls.command("answer", epilog="Example: mq9 calls --reply agent.me.calls answer 7f3a... 'French'")
@click.argument("task_id")
@click.argument("answer")
@click.option("--wait", type=click.IntRange(0, 120), default=0, help="seconds to wait for it")
@json_option
@click.pass_context
def calls_answer(ctx: click.Context, task_id: str, answer: str, wait: int, as_json: bool) -> None:
    """Answer the question of a call waiting for input (input-required).

    Changes: the answer is sent to the called agent's mailbox."""
    args = {"task_id": task_id, "answer": answer, "wait_seconds": wait}
    _call(ctx, as_json, "answer_call", args, render.call)


@calls.command("cancel", epilog="Example: mq9 calls --reply agent.me.calls cancel 7f3a...")
@click.argument("task_id")
@json_option
@click.pass_context
def calls_cancel(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Ask the agent to cancel a call. Changes: a cancel request is sent to its mailbox."""
    _call(ctx, as_json, "cancel_call", {"task_id": task_id}, render.call)


# -- the console and the shell -----------------------------------------------------------------


@cli.command(epilog="Example: mq9 --server nats://localhost:4222 console --calls agent.me.calls")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8780,
    show_default=True,
    help="port to listen on (0: a free one, printed)",
)
@click.option(
    "--token",
    "console_token",
    envvar="MQ9_CONSOLE_TOKEN",
    help="the token to enter ($MQ9_CONSOLE_TOKEN; default: a random one, printed); "
    "needed to bind a non-loopback address",
)
@click.option("--allow-writes", is_flag=True, help="allow replay, answering and cancelling")
@click.option("--mailbox", "mailboxes", multiple=True, help="a mailbox to show (repeatable)")
@click.option(
    "--calls",
    "reply_mailboxes",
    multiple=True,
    metavar="MAILBOX",
    help="a caller's reply mailbox whose calls to show (repeatable)",
)
@click.option(
    "--public-origin",
    "public_origins",
    multiple=True,
    metavar="URL",
    envvar="MQ9_CONSOLE_ORIGIN",
    help="the address a browser reaches it at behind a reverse proxy that rewrites Host, "
    "e.g. https://mq9.example.com: forms posted from there are its own "
    "($MQ9_CONSOLE_ORIGIN; repeatable)",
)
@click.option(
    "--audit-log",
    metavar="FILE",
    help="append who did what (each write) to FILE as JSON lines, and show it from there",
)
@click.option(
    "--metrics",
    metavar="[HOST:]PORT",
    help="serve Prometheus metrics, /healthz and /readyz at HOST:PORT, the operator's "
    "address, apart from --port (the metrics extra)",
)
@click.pass_context
def console(ctx: click.Context, /, **options: Any) -> None:
    """Serve the web console: agents, mailboxes, dead letters, calls, live.

    Changes nothing, unless --allow-writes: then a person may replay, delete, ack, set aside
    and answer calls from it (each write logged with --audit-log)."""
    try:
        from .console.serve import serve
    except ImportError as exc:
        stop(
            Failure(
                f"the console needs the console extra ({exc.name} is missing): "
                "in a clone, pip install ./wire ./broker ./platform './faces/cli[console]'",
                USAGE,
            )
        )
    session = _session(ctx, False)
    try:
        serve(session.target, **options)
    except Failure as problem:
        stop(problem)


@cli.command(epilog="Example: mq9 completion bash >> ~/.bashrc")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL. Changes nothing (append it yourself)."""
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None  # Click has each of SHELLS
    click.echo(complete(cli, {}, "mq9", COMPLETE_VAR).source())


def _policy(**options: Any) -> ToolPolicy | None:
    """The catalog's policy for a person with ``options`` (a mailbox, group or reply mailbox
    it refuses ends the command, naming it, before anything connects); None where each is the
    default, the person's policy the operation makes once connected."""
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("group") == "default":  # (the policy's own default group)
        del given["group"]
    if not given:
        return None
    from pydantic import ValidationError

    from . import overview

    try:
        return overview.person_policy(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = {"agent_mailbox": "mailbox", "default_group": "group", "reply_mailbox": "reply"}
        flag = "--" + name.get(str(error["loc"][0]), str(error["loc"][0]))
        stop(Failure(f"{flag}: {error['msg'].removeprefix('Value error, ')}", USAGE))


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``mq9`` with ``argv``; its exit code."""
    try:
        cli.main(args=argv, prog_name="mq9", complete_var=COMPLETE_VAR)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else USAGE
    return OK
