"""Where a batchglm warning points: the first stack frame outside the package.

Warnings raised deep inside the library (a test called by a pipeline called by a tool)
should name the line of the user's code that triggered them, not a library line, so
that ``warnings.filterwarnings(..., module=...)`` and the printed location are useful.
"""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """Stack level of ``warnings.warn`` that points at the first caller outside batchglm.

    Call it inside the function that warns and pass the result as ``stacklevel``; it
    counts the frames from that function outwards until one whose file is not under the
    installed ``batchglm`` package.

    Returns
    -------
    int
        At least 2 (the direct caller of the warning function when the whole stack is
        inside batchglm, e.g. in the package's own tests of private helpers).
    """
    frame = sys._getframe(1)  # the function that calls warnings.warn
    level = 1
    while frame is not None:
        if not os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
            return max(level, 2)
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return 2
