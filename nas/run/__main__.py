"""`python -m nas.run ...` = `rtsr search ...` (a doorway: the command lives in `rtsr.search`)."""

import sys

from rtsr.search import main

sys.exit(main(prog="python -m nas.run"))
