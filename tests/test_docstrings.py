"""Docstrings match the code: ``Raises`` sections and documented parameters.

Every public function and method of ``batchglm`` (public module, name without a leading
underscore) that raises directly (a ``raise`` statement in its own body, not in a nested
function) has a numpydoc ``Raises`` section; and the names a public function documents
under ``Parameters`` are those of its signature.
"""

from __future__ import annotations

import ast
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import batchglm

SRC = Path(batchglm.__file__).parent

_SECTION = re.compile(r"^\s*([A-Z][A-Za-z ]+)\n\s*-{3,}\s*$", re.MULTILINE)
_PARAM = re.compile(
    r"^(\s*)(\*{0,2}[A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*(?::|$)"
)


def _public_modules() -> Iterator[tuple[str, Path]]:
    for info in pkgutil.walk_packages([str(SRC)], prefix="batchglm."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]):
            continue
        path = SRC.joinpath(*parts[1:])
        file = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
        yield info.name, file


def _public_functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    """Module-level functions and methods of module-level classes, public names only."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def _raises_directly(func: ast.FunctionDef) -> bool:
    """A ``raise`` with an exception in the function's own body (nested defs excluded)."""
    stack: list[ast.AST] = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def _sections(doc: str) -> dict[str, str]:
    matches = list(_SECTION.finditer(doc))
    out = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(doc)
        out[m.group(1).strip()] = doc[m.end() : end]
    return out


def _duplicate_sections(doc: str) -> list[str]:
    """Section names that occur more than once (``_sections`` would keep only the last)."""
    names = [m.group(1).strip() for m in _SECTION.finditer(doc)]
    return sorted({n for n in names if names.count(n) > 1})


def _documented_parameters(body: str) -> list[str]:
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return []
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    names: list[str] = []
    for line in lines:
        if len(line) - len(line.lstrip()) != indent:
            continue
        m = _PARAM.match(line)
        if m:
            names.extend(n.strip().lstrip("*") for n in m.group(2).split(","))
    return names


def _signature_names(func: ast.FunctionDef) -> list[str]:
    a = func.args
    names = [arg.arg for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    if a.vararg is not None:
        names.append(a.vararg.arg)
    if a.kwarg is not None:
        names.append(a.kwarg.arg)
    return [n for n in names if n not in ("self", "cls")]


def _collect() -> tuple[list[str], list[str], list[str]]:
    missing_raises: list[str] = []
    mismatched: list[str] = []
    repeated: list[str] = []
    for module, file in _public_modules():
        tree = ast.parse(file.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                dup = _duplicate_sections(ast.get_docstring(node) or "")
                if dup:
                    repeated.append(f"{module}.{node.name}: {dup}")
        for name, func in _public_functions(tree):
            doc = ast.get_docstring(func)
            where = f"{module}.{name}"
            if doc is None:
                continue  # ruff's pydocstyle rules require the docstring itself
            if _duplicate_sections(doc):
                repeated.append(f"{where}: {_duplicate_sections(doc)}")
            sections = _sections(doc)
            if _raises_directly(func) and "Raises" not in sections:
                missing_raises.append(where)
            if "Parameters" in sections:
                documented = _documented_parameters(sections["Parameters"])
                signature = _signature_names(func)
                if sorted(documented) != sorted(signature):
                    extra = sorted(set(documented) - set(signature))
                    absent = sorted(set(signature) - set(documented))
                    mismatched.append(f"{where}: documented only {extra}, undocumented {absent}")
    return missing_raises, mismatched, repeated


@pytest.fixture(scope="module")
def findings() -> tuple[list[str], list[str], list[str]]:
    return _collect()


def test_every_public_function_that_raises_documents_it(findings):
    missing, _, _ = findings
    assert not missing, "public functions that raise without a `Raises` section:\n" + "\n".join(
        missing
    )


def test_documented_parameters_match_the_signature(findings):
    _, mismatched, _ = findings
    assert not mismatched, "docstring parameters differ from the signature:\n" + "\n".join(
        mismatched
    )


def test_no_docstring_repeats_a_section(findings):
    _, _, repeated = findings
    assert not repeated, "docstrings with a section twice (merge them):\n" + "\n".join(repeated)


def test_the_checks_can_fail():
    source = '''
def f(x, y):
    """Do.

    Parameters
    ----------
    x : int
        A.
    z : int
        B.
    """
    if x:
        raise ValueError("no")
'''
    func = ast.parse(source).body[0]
    assert isinstance(func, ast.FunctionDef)
    doc = ast.get_docstring(func)
    assert doc is not None
    sections = _sections(doc)
    assert _raises_directly(func) and "Raises" not in sections
    assert _documented_parameters(sections["Parameters"]) == ["x", "z"]
    assert _signature_names(func) == ["x", "y"]
    twice = doc + "\n\nRaises\n------\nValueError\n    A.\n\nRaises\n------\nTypeError\n    B.\n"
    assert _duplicate_sections(twice) == ["Raises"] and _duplicate_sections(doc) == []
