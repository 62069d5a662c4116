"""`python -m rtsr COMMAND ...`: the same as the `rtsr` console script."""

import sys

from rtsr.cli import main

sys.exit(main())
