"""``python -m langchain_mq9.wake``: mq9-wake."""

import sys

from .cli import main

sys.exit(main())
