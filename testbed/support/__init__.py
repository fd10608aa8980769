"""The tests' shared helpers, one package: ``from testbed.support.jetstream_servers import ...``.

Imported by its full name: the checkout is on ``sys.path`` (the editable install's .pth, and
the working directory of ``python -m pytest``), so ``tests`` is a namespace package and this one
is found the same way from a test, a conftest, a helper run as a script or bench/. A bare
``support`` would clash with examples/support.py, which the examples (and bench/, which runs
them in process) import by that name. A few of these modules are also run as scripts by path
(a2a_replica.py, poison_consumer.py, group_reader_cli.py, claude_stub.py)."""
