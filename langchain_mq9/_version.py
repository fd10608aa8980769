"""The package's version, in a leaf both command lines and the package's face import (so the
bundled broker need not import the face). pyproject.toml says it too: a test keeps them equal
(tests/broker/cli/test_dev_broker.py)."""

__version__ = "0.4.0"
