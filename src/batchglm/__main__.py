"""``python -m batchglm``: the ``batchglm`` command line (:func:`batchglm.cli.main`)."""

from __future__ import annotations

import sys

from batchglm.cli import main

if __name__ == "__main__":
    sys.exit(main())
