"""`python -m nas.calibrate ...` = `rtsr calibrate ...` (a doorway: the command lives in `rtsr.calibrate`)."""

import sys

from rtsr.calibrate import main

sys.exit(main(prog="python -m nas.calibrate"))
