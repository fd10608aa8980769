"""langchain-mq9's version, in a leaf the command lines (mq9-mcp, mq9) and the package's face
import. pyproject.toml says it too, and mq9-wire and mq9-broker are released at the same one:
tests/project/test_distributions.py keeps them equal."""

__version__ = "0.5.0"
