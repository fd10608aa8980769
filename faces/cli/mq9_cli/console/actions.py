"""What a form changes: logging in and out, a message deleted, acked past or set aside, dead
letters replayed, a call answered or cancelled. Each write form carries its session's CSRF
token and is refused on a read-only console; each write is told back as a notice on the next
page and kept in the log of writes (``audit``) with who made it."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.operations.errors import OperationError

from .. import overview
from .auth import COOKIE, Session, cookie_header, csrf_ok
from .guard import PlainRefusal
from .params import address_of, console_of, reply_of
from .reads import Console


async def login(request: Request) -> Response:
    console = console_of(request)
    if request.method == "GET":
        return console.page(request, "login.html", failed=False)
    form = await request.form()
    given = form.get("token")
    opened_by = console.gate.opened_by(given) if isinstance(given, str) else None
    if opened_by is None:
        await asyncio.sleep(0.5)  # a guesser's pace
        return console.page(request, "login.html", 401, failed=True)
    peer = request.client.host if request.client else "?"
    sid, _ = console.gate.open_session(who=f"{opened_by} from {peer}")
    response = RedirectResponse("/agents", 303)
    response.headers["set-cookie"] = cookie_header(sid, secure=request.url.scheme == "https")
    return response


async def _written(request: Request) -> tuple[Console, dict[str, str]]:
    """A write form's fields, once its CSRF token and the console's writes are checked."""
    console = console_of(request)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    session: Session | None = request.scope.get("mq9_session")
    if session is not None and not csrf_ok(session, fields.get("csrf", "")):
        raise Refused("this form is stale or not the console's (CSRF): reload the page")
    if not console.settings.allow_writes and request.url.path != "/logout":
        raise Refused("this console is read-only (start it with --allow-writes)")
    return console, fields


class Refused(Exception):
    """A write form refused before anything reached the broker: answered as a plain 403."""


async def logout(request: Request) -> Response:
    try:
        await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    console_of(request).gate.close(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _notice(request: Request, text: str) -> None:
    session: Session | None = request.scope.get("mq9_session")
    if session is not None:
        session.notice = text


def _who(request: Request) -> str:
    """Who made a write, for the log: the session's opener, or a program's bearer token."""
    session: Session | None = request.scope.get("mq9_session")
    if session is not None:
        return session.who
    peer = request.client.host if request.client else "?"
    return f"the bearer token from {peer}"


async def message_action(request: Request) -> Response:
    """Delete a message, ack a group past it, or set it aside (to its dead letters)."""
    try:
        console, fields = await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    address, msg_id = address_of(request), request.path_params["msg_id"]
    action = request.path_params["action"]
    client, who = console.broker, _who(request)
    if action == "delete":
        if await overview.message_at(client, address, msg_id) is None:
            raise OperationError(f"no message {msg_id} in {address} (nothing deleted)")
        await client.delete(address, msg_id)
        done = f"deleted message {msg_id} of {address}"
    elif action == "ack":
        group = fields.get("group", "").strip() or "default"
        await client.ack(address, group, msg_id)
        done = f"the group {group} went past message {msg_id} of {address} (and all before it)"
    elif action == "set-aside":
        group = fields.get("group", "").strip() or "console"
        reason = fields.get("reason", "").strip() or "set aside in the console"
        try:
            letter = await overview.set_aside(
                client, address, msg_id, group=group, reason=f"{reason} ({who})"
            )
        except LookupError as exc:
            raise OperationError(str(exc)) from None
        done = f"set message {msg_id} aside: it is #{letter} of {dead_letter_address(address)}"
    else:
        return PlainRefusal(f"no action {action[:40]!r}", 404)
    console.audit.add(
        who,
        action,
        address,
        msg_id=msg_id,
        **{k: v for k, v in fields.items() if k in ("group", "reason")},
    )
    _notice(request, done)
    return RedirectResponse(f"/mailboxes/{quote(address, safe='')}", 303)


async def replay(request: Request) -> Response:
    try:
        console, _ = await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    address = address_of(request)
    one = request.path_params.get("msg_id")
    if one is not None:
        try:
            sent = await overview.replay_one(console.broker, address, one)
        except LookupError as exc:
            raise OperationError(str(exc)) from None
        console.audit.add(_who(request), "replay", address, letter=one, sent_as=sent)
        _notice(request, f"sent dead letter {one} back to {address} as message {sent}")
        return RedirectResponse(f"/mailboxes/{quote(address, safe='')}/dead-letters", 303)
    done = await overview.replay_dead_letters(console.broker, address)
    console.audit.add(
        _who(request), "replay", address, sent=done.sent, skipped=sorted(done.skipped)
    )
    letters = "dead letter" if len(done.sent) == 1 else "dead letters"
    skipped = f"; skipped {len(done.skipped)} (no dead letter of {address})" if done.skipped else ""
    _notice(request, f"sent {len(done.sent)} {letters} back to {address}{skipped}")
    return RedirectResponse(f"/mailboxes/{quote(address, safe='')}/dead-letters", 303)


async def answer(request: Request) -> Response:
    return await _steer(request, "answer_call")


async def cancel(request: Request) -> Response:
    return await _steer(request, "cancel_call")


async def _steer(request: Request, operation: str) -> Response:
    try:
        console, fields = await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    reply, task_id = reply_of(request), request.path_params["task_id"]
    args = {"task_id": task_id}
    question = None
    if operation == "answer_call":
        args["answer"] = fields.get("answer", "")
        # the question this answers: the call's record drops it once the call goes on
        question = (await console.check_call(reply, task_id)).get("question")
    policy = overview.person_policy(reply_mailbox=reply)
    shown = await overview.operate(console.broker, operation, args, policy)
    detail = {"task_id": task_id, "agent": shown.get("agent")}
    if operation == "answer_call":
        detail |= {"question": question, "answer": args["answer"]}
    action = "answer" if operation == "answer_call" else "cancel"
    console.audit.add(_who(request), action, reply, **detail)
    done = "your answer went to the agent" if operation == "answer_call" else "cancel asked"
    _notice(request, f"{done} (the call was {shown['state']}; this page follows it)")
    return RedirectResponse(f"/calls/{quote(reply, safe='')}/{quote(task_id, safe='')}", 303)
