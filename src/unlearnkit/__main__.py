"""``python -m unlearnkit``: the same command line as ``unlearnkit``."""

import sys

from unlearnkit._entry import main

if __name__ == "__main__":
    sys.exit(main())
