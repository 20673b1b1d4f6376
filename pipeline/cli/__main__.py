"""``python -m pipeline.cli``: the same as the ``ferroflow`` console script."""

import sys

from . import main

sys.exit(main())
