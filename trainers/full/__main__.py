"""`python -m trainers.full ...` = `rtsr train ...` (a doorway: the command lives in `rtsr.train`)."""

import sys

from rtsr.train import main

sys.exit(main(prog="python -m trainers.full"))
