"""`python -m nas.export ...` = `rtsr export ...` (a doorway: the command lives in `rtsr.export`)."""

import sys

from rtsr.export import main

sys.exit(main(prog="python -m nas.export"))
