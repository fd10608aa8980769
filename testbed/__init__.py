"""Servers on loopback for the test suite and the benchmarks: nats-server alone or with
JetStream (one server, or a cluster of three), and the dev broker run as a user runs it.

``tests/`` and ``bench/`` both import this package; it imports neither of them, and it is not
in the wheel (``[tool.hatch.build.targets.wheel]`` lists what is shipped). Every server takes
the port the system gives it and says which (nats-server's ``--ports_file_dir``), so processes
started at once by parallel test workers never race for a port asked of the system first.
"""
