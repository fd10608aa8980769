from langchain_mq9 import Priority


async def test_priority_order_over_each_transport(client):
    inbox = await client.mailbox_create(name="smoke.inbox")
    await client.send(inbox, "n")
    await client.send(inbox, "c", priority=Priority.CRITICAL)
    await client.send(inbox, "u", priority="urgent")
    messages = await client.fetch(inbox, deliver="earliest", max_wait_ms=0)
    assert [m.payload for m in messages] == [b"c", b"u", b"n"]
