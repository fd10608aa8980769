"""``python -m mq9_platform.wake``: mq9-wake."""

import sys

from .cli import main

sys.exit(main())
