"""`python -m reports ...` = `rtsr report ...` (a doorway: the command lives in `rtsr.report`)."""

import sys

from rtsr.report import main

sys.exit(main(prog="python -m reports"))
