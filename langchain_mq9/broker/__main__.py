"""Deprecated: ``python -m langchain_mq9.broker`` is ``python -m mq9_broker`` (or
``mq9-dev-broker``) since 0.4.0."""

import sys

from mq9_broker.cli import main

sys.exit(main())
