"""``import batchglm.de`` stays light: scipy.stats and scipy.optimize load on first use.

A user who times ``bg.de.ql_f`` right after ``import batchglm`` pays the first access of
``bg.de`` inside the call (``../shared/cases/nc_09``); the modules that need scipy.stats
(thresholded tests, the robust prior of mixed fits) import it inside their functions.
"""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_de_module_does_not_load_scipy_stats_or_optimize() -> None:
    code = (
        "import sys, batchglm, batchglm.de; "
        "print('scipy.stats' in sys.modules, 'scipy.optimize' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False False"
