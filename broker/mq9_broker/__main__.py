"""``python -m mq9_broker``: the same as the ``mq9-dev-broker`` command."""

import sys

from .cli import main

sys.exit(main())
