"""Run the command line in-process, in a working directory, for the CLI tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchglm.cli import main


def run_cli(workdir: Path, args: list[str], capsys: Any) -> tuple[int, str, str]:
    """``batchglm ARGS`` run by :func:`batchglm.cli.main` from ``workdir``.

    Returns the exit status and what it wrote to stdout and stderr (read from ``capsys``);
    the current directory is restored afterwards.
    """
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        code = main(args)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    return code, out.out, out.err
