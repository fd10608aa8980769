"""The suite's hooks and shared fixtures are a pytest plugin, testbed/pytest_plugin.py, which
imports none of the six distributions: each tests folder runs in an environment holding its
distribution and those below it only. The brokers with their clients are the platform's
fixtures (testbed/brokers.py), imported by the conftest.py of the folders that use them."""

pytest_plugins = ["testbed.pytest_plugin"]
