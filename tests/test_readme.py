"""Every code block of README.md runs as written.

How the README is read (the convention its authors follow):

* ```` ```python ```` blocks run in the order they appear. The blocks of one ``## `` section
  share one namespace, as a reader follows a section from top to bottom; each section starts
  from an empty namespace, so a section never relies on another one.
* Data a block takes for granted (the user's ``adata``, a design, files on disk) are built by
  Python in an HTML comment that opens with ``<!-- test-setup: what it builds`` (that line
  is not code) and closes with ``-->`` on a line of its own, placed before the block. It
  is invisible on the rendered page, sits next to the block in the source, and runs in the
  section's namespace before the next block.
  Setup code may use pytest's ``monkeypatch`` (undone after the section) to make a block
  cheap without changing its text: the dask example's ``LocalCluster`` gets thread workers
  instead of four worker processes.
* ```` ```bash ```` blocks: each command whose program is ``batchglm`` runs through the
  command line's entry point (:func:`batchglm.cli.main`) and must exit with status 0.
  Other commands are not run: ``make demo`` / ``make test`` create a virtual environment
  and install packages, which a test must not do.
* Other fences (the ``src/`` layout tree) are text, not code.
* Everything runs in a fresh temporary working directory with the ``agg`` matplotlib
  backend; figures and dask clients a section opened are closed afterwards.

A block that raises, or a ``batchglm`` command that fails, fails the test of its section,
with the README line numbers in the traceback.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# These tests use few replicates on purpose (small designs for the README's examples); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

README = Path(__file__).resolve().parents[1] / "README.md"
SETUP_OPEN = "<!-- test-setup"
SETUP_CLOSE = "-->"


@dataclass
class Chunk:
    """A piece of a section to run: Python (a block or a setup comment) or a bash block."""

    kind: str  # "python", "setup" or "bash"
    line: int  # README line number of the chunk's first line
    code: str


@dataclass
class Section:
    title: str
    chunks: list[Chunk] = field(default_factory=list)


def parse(text: str) -> list[Section]:
    """Split README text into sections with their runnable chunks, in order."""
    sections = [Section("(before the first section)")]
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            sections.append(Section(line[3:].strip()))
            i += 1
            continue
        fence = re.match(r"^```(\w*)\s*$", line)
        opens_setup = line.strip().startswith(SETUP_OPEN)
        if fence is None and not opens_setup:
            i += 1
            continue
        closing = "```" if fence is not None else SETUP_CLOSE
        end = i + 1
        while end < len(lines) and lines[end].strip() != closing:
            end += 1
        if end == len(lines):
            raise ValueError(f"README.md line {i + 1}: {line.strip()!r} is never closed.")
        kind = "setup" if fence is None else fence.group(1)
        if kind in ("python", "setup", "bash"):
            sections[-1].chunks.append(Chunk(kind, i + 2, "\n".join(lines[i + 1 : end])))
        i = end + 1
    return [s for s in sections if s.chunks]


def commands(block: str) -> list[list[str]]:
    """Shell commands of a bash block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def run_section(section: Section, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a section's chunks in one namespace; raise on the first failure."""
    from batchglm.cli import main

    namespace: dict[str, object] = {"__name__": "__readme__", "monkeypatch": monkeypatch}
    try:
        for chunk in section.chunks:
            if chunk.kind == "bash":
                for argv in commands(chunk.code):
                    if argv[0] != "batchglm":
                        continue  # make, pip: not run (see the module docstring)
                    err = io.StringIO()
                    with contextlib.redirect_stderr(err):
                        status = main(argv[1:])
                    if status != 0:
                        raise AssertionError(
                            f"README.md line {chunk.line}: `{shlex.join(argv)}` exited with "
                            f"status {status}: {err.getvalue().strip()}"
                        )
                continue
            # Leading newlines make tracebacks point at README.md's own line numbers.
            source = "\n" * (chunk.line - 1) + chunk.code
            exec(compile(source, str(README), "exec"), namespace)
    finally:
        _close(namespace)


def _close(namespace: dict[str, object]) -> None:
    import matplotlib.pyplot as plt

    plt.close("all")
    try:
        import distributed
    except ImportError:
        return
    for value in namespace.values():
        if isinstance(value, distributed.Client):
            cluster = value.cluster
            value.close()
            if cluster is not None:
                cluster.close()


SECTIONS = parse(README.read_text(encoding="utf-8"))


def test_every_fenced_block_is_found():
    text = README.read_text(encoding="utf-8")
    found = [c for s in SECTIONS for c in s.chunks]
    assert sum(c.kind == "python" for c in found) == text.count("\n```python\n")
    assert sum(c.kind == "bash" for c in found) == text.count("\n```bash\n")
    assert sum(c.kind == "setup" for c in found) == text.count(SETUP_OPEN)
    # The CLI section's bash block holds every subcommand; make is documented, not run.
    ran = {
        argv[1]
        for c in found
        if c.kind == "bash"
        for argv in commands(c.code)
        if argv[0] == "batchglm"
    }
    assert ran == {"fit", "test", "simulate"}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    import matplotlib

    monkeypatch.setenv("MPLBACKEND", "agg")
    matplotlib.use("agg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("section", SECTIONS, ids=[s.title for s in SECTIONS])
def test_readme_section_runs(section, sandbox, monkeypatch):
    run_section(section, monkeypatch)


def test_a_broken_block_fails(sandbox, monkeypatch):
    text = "## Broken\n\n<!-- test-setup\nx = 1\n-->\n\n```python\ny = x + 1\nassert y == 3\n```\n"
    (section,) = parse(text)
    with pytest.raises(AssertionError):
        run_section(section, monkeypatch)
    shell = parse(
        "## CLI\n\n```bash\nmake demo\nbatchglm fit missing.h5ad --design-loc '~ 1' "
        "\\\n    --out fit.csv   # comment\n```\n"
    )
    with pytest.raises(AssertionError, match=r"line 4: `batchglm fit missing.h5ad .*status 1"):
        run_section(shell[0], monkeypatch)
    with pytest.raises(ValueError, match=r"line 3: '```python' is never closed"):
        parse("## Open\n\n```python\nx = 1\n")
