"""``python -m metalearn ...``: the command line (see :mod:`metalearn.cli`)."""

import sys

from metalearn.cli import main

sys.exit(main())
