"""`python -m pgkeeper.cli ...`: the same as the `pgkeeper` console script."""

import sys

from . import main

sys.exit(main())
