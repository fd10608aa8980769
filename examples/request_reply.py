"""Async request-reply between two agents, with reply_to and correlation ids.

Agent A (a planner) asks agent B (inventory) three questions while B is offline, and gets on
with other work. Each request carries reply_to (A's private mailbox) and a correlation_id. When
B comes online it answers its backlog most urgent first, so the replies arrive in a different
order than the questions were asked; A pairs them by correlation_id. A fourth question, asked
while B is online, is answered at once: the same code works whether the other side is there
or not. Both sides poll with short FETCHes: an empty FETCH waits its whole max_wait_ms, even
if a message arrives meanwhile, so a long one would only delay the answer.

    python examples/request_reply.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio

from support import Names, banner, parser, wait_for_messages

from langchain_mq9 import GroupReader, Message, Mq9Client, Priority

STOCK = {"sku-1": 42, "sku-3": 0, "sku-7": 9}
QUESTIONS = [
    ("req-1", {"ask": "stock", "sku": "sku-1"}, Priority.NORMAL),
    ("req-2", {"ask": "reserve", "sku": "sku-7", "units": 5, "order": 1042}, Priority.URGENT),
    ("req-3", {"ask": "stock", "sku": "sku-3"}, Priority.NORMAL),
]


def answer(question: dict) -> str:
    """Agent B's work."""
    if question["ask"] == "reserve":
        STOCK[question["sku"]] -= question["units"]
        return f"reserved {question['units']} × {question['sku']} for order {question['order']}"
    return f"{question['sku']}: {STOCK[question['sku']]} in stock"


class Requester:
    """Agent A's side: remembers what it asked, pairs replies by correlation_id."""

    def __init__(self, client: Mq9Client, reply_box: str) -> None:
        self.client, self.reply_box = client, reply_box
        self.replies = GroupReader(client, reply_box, "a")
        self.pending: dict[str, dict] = {}  # correlation_id -> question
        self.answers: list[tuple[str, str]] = []

    async def ask(self, to: str, correlation_id: str, question: dict, priority: Priority) -> None:
        await self.client.send(
            to,
            {**question, "reply_to": self.reply_box, "correlation_id": correlation_id},
            priority=priority,
        )
        self.pending[correlation_id] = question
        print(f"[A] asks {correlation_id} [{priority}]: {question}")

    async def collect(self, *, wait_ms: int) -> None:
        replies = await wait_for_messages(self.replies, wait_ms / 1000)
        for message in replies:
            reply = message.json()
            asked = self.pending.pop(reply["correlation_id"], None)
            if asked is None:
                print(f"[A] ignores a reply to {reply['correlation_id']}: not waiting for it")
                continue
            self.answers.append((reply["correlation_id"], reply["answer"]))
            print(f"[A] reply to {reply['correlation_id']}: {reply['answer']}")
        await self.replies.done([m.msg_id for m in replies])


async def main(server: str) -> None:
    inventory = Names(server)("agent.inventory")
    async with Mq9Client(server) as b_setup:
        await b_setup.mailbox_create(name=inventory, ttl=3600)  # B's well-known mailbox

    async with Mq9Client(server) as a, Mq9Client(server) as b:
        requester = Requester(a, await a.mailbox_create(ttl=600))

        banner("B is offline; A asks anyway and carries on")
        for correlation_id, question, priority in QUESTIONS:
            await requester.ask(inventory, correlation_id, question, priority)
        await requester.collect(wait_ms=0)
        print(f"[A] no replies yet ({len(requester.pending)} pending); doing other work")

        banner("B comes online and answers its backlog, most urgent first")

        async def serve(message: Message) -> None:
            question = message.json()
            result = answer(question)
            print(f"[B] {question['correlation_id']} [{message.priority}] → {result}")
            await b.send(
                question["reply_to"],
                {"correlation_id": question["correlation_id"], "answer": result},
            )

        consumer = await b.consume(
            inventory, serve, group_name="inventory", deliver="earliest", max_wait_ms=100
        )
        while requester.pending:
            await requester.collect(wait_ms=5000)

        banner("with B online, a new question is answered right away")
        await requester.ask(inventory, "req-4", {"ask": "stock", "sku": "sku-7"}, Priority.NORMAL)
        await requester.collect(wait_ms=5000)
        await consumer.stop()

    banner("result")
    order = [cid for cid, _ in requester.answers]
    print(f"replies paired by correlation_id, in arrival order: {', '.join(order)}")
    if order != ["req-2", "req-1", "req-3", "req-4"] or requester.pending:
        raise SystemExit("unexpected replies")
    print("req-2 (urgent) was answered first although it was asked second")


if __name__ == "__main__":
    asyncio.run(main(parser(__doc__).parse_args().server))
