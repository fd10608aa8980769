"""mq9-wire's version, released with mq9-broker and langchain-mq9 at one version:
wire/pyproject.toml says it too (tests/project/test_distributions.py keeps the three equal)."""

__version__ = "0.5.0"
