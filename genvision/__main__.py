"""`python -m genvision` runs the `genvision` command."""

import sys

from genvision.cli import main

if __name__ == "__main__":
    sys.exit(main())
