from mq9_platform import Priority


async def test_priority_order_over_each_transport(client):
    inbox = await client.mailbox_create(name="smoke.inbox")
    await client.send(inbox, "n")
    await client.send(inbox, "c", priority=Priority.CRITICAL)
    await client.send(inbox, "u", priority="urgent")
    messages = await client.fetch(inbox, deliver="earliest", max_wait_ms=0)
    assert [m.payload for m in messages] == [b"c", b"u", b"n"]


def test_the_public_names_show_in_dir_and_help_and_every_error_imports_from_the_top():
    import pydoc

    import langchain_mq9
    from mq9_wire.protocol import errors

    for name in ("Mq9Toolkit", "Mq9InboxMiddleware", "serve_agent", "AgentCaller"):
        assert name in dir(langchain_mq9)
        assert name in langchain_mq9.__all__
    assert set(langchain_mq9.__all__) <= set(dir(langchain_mq9))
    page = pydoc.render_doc(langchain_mq9, renderer=pydoc.plaintext)
    assert "class Mq9Toolkit" in page and "serve_agent(" in page and "class AgentCaller" in page
    error_classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    }
    assert error_classes <= set(langchain_mq9.__all__)
    from mq9_platform import OperationError
    from mq9_wire.protocol.errors import MailboxNotFound

    assert MailboxNotFound is errors.MailboxNotFound and issubclass(OperationError, Exception)
