"""`python -m nas.latency`: a doorway to the `rtsr.latency` command (the one upward import allowed)."""

import sys

from rtsr.latency import main

if __name__ == "__main__":
    sys.exit(main())
