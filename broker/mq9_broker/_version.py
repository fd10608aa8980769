"""The broker's version (``mq9-dev-broker --version``), released with mq9-wire and langchain-mq9
at one version: broker/pyproject.toml says it too, and tests/project/test_distributions.py keeps
the three distributions, their pins and their ``_version`` leaves equal."""

__version__ = "0.5.0"
