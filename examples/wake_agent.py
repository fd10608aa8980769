"""Mail that wakes its agent: an agent that is not running gets mail, is woken, reads it and
answers (docs/wake.md).

The helpdesk agent runs only when woken: nothing of it polls its mailbox. Its operator kept a
wake rule for the mailbox on the broker (a callback here; a webhook, a LangGraph Agent Server
run or a command elsewhere, same rule book). A customer sends three questions at once; the
waker sees the burst and wakes the helpdesk once, it reads all three with its consumer group,
answers each into the customer's reply mailbox and stops. A fourth question later wakes it
again. Mail it already read wakes nothing.

    python examples/wake_agent.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio

from support import Names, banner, parser, wait_for_messages

from langchain_mq9 import GroupReader, Mq9Client
from mq9_platform.wake import Deliverer, RuleBook, Wake, Waker, WakeRule

ANSWERS = {"hours": "9 to 5, Monday to Friday", "refund": "within 14 days", "phone": "+1 555 0100"}


async def helpdesk(server: str, mailbox: str, wake: Wake) -> int:
    """The agent, started by a wake: reads what waits (as data), answers, and ends."""
    print(f"[helpdesk] woken: {wake.waiting} message(s) waiting in {wake.mailbox}")
    async with Mq9Client(server) as client:
        reader = GroupReader(client, mailbox, "helpdesk")
        answered = 0
        for message in await reader.fetch(num_msgs=10, max_wait_ms=0):
            question = message.json()
            text = ANSWERS.get(question["topic"], "I will ask a colleague")
            await client.send(question["reply_to"], {"topic": question["topic"], "answer": text})
            await reader.done(message.msg_id)
            answered += 1
        print(f"[helpdesk] answered {answered} and went back to sleep")
        return answered


def check(runs: list[asyncio.Task[int]]) -> None:
    """An agent run that failed ends the example with its error."""
    for run in runs:
        if run.done() and run.exception() is not None:
            raise SystemExit(f"the helpdesk failed: {run.exception()!r}")


async def main(server: str) -> None:
    names = Names(server)
    desk = names("agent.helpdesk")
    async with Mq9Client(server) as client:
        await client.mailbox_create(name=desk, ttl=600)
        runs: list[asyncio.Task[int]] = []

        def start_helpdesk(wake: Wake) -> None:  # the rule's callback: start the agent
            runs.append(asyncio.ensure_future(helpdesk(server, desk, wake)))

        await RuleBook(client).add(
            WakeRule(
                mailbox=desk,
                target="callback",
                callback="helpdesk",
                group="helpdesk",
                min_interval=0,
            )
        )
        # settle: what arrives within 0.2 s of the first message joins its wake (a burst)
        waker = await Waker(
            client,
            Deliverer(callbacks={"helpdesk": start_helpdesk}),
            poll_interval=0.1,
            settle=0.2,
        ).start()
        customer = await client.mailbox_create(ttl=600)
        replies = GroupReader(client, customer, "customer")

        banner("the helpdesk is not running; a customer writes anyway")
        for topic in ("hours", "refund", "phone"):
            await client.send(desk, {"topic": topic, "reply_to": customer})
            print(f"[customer] asks about {topic}")
        answers: list[dict] = []
        while len(answers) < 3:
            check(runs)
            for message in await wait_for_messages(replies, 1):
                answers.append(message.json())
                await replies.done(message.msg_id)
        for reply in answers:
            print(f"[customer] {reply['topic']}: {reply['answer']}")

        banner("later, one more question wakes it again")
        await client.send(desk, {"topic": "phone", "reply_to": customer})
        while len(answers) < 4:
            check(runs)
            for message in await wait_for_messages(replies, 1):
                answers.append(message.json())
                await replies.done(message.msg_id)
        print(f"[customer] {answers[-1]['topic']}: {answers[-1]['answer']}")
        await asyncio.gather(*runs)
        await waker.stop()

    banner("result")
    print(f"4 questions answered by {len(runs)} wakes of an agent that was never left running")
    if len(runs) > 3 or sum(run.result() for run in runs) != 4:
        raise SystemExit("unexpected wakes")


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
