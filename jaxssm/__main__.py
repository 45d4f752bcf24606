"""``python -m jaxssm``: the ``jaxssm`` command (see :mod:`jaxssm.cli`)."""

import sys

from jaxssm.cli import main

if __name__ == "__main__":
    sys.exit(main())
