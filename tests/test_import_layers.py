"""The import graph of batchglm: no cycles, and every import points down the layer order.

Every ``import`` of a ``batchglm`` module is read from the sources (AST), including imports
inside functions (they run when the function does, so they count as edges); imports under
``if TYPE_CHECKING:`` are for annotations only and do not. An import of ``a.b.c`` is an
edge to module ``a.b.c``; ``from a.b import c`` is an edge to the module ``a.b.c`` when it
exists, else to ``a.b``. The layer order is documented in ``docs/architecture.md``
(*Import layers*); keep the two in step.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "batchglm"

#: Layers, lowest first. A module may import modules of its own layer or of layers below.
#: Members are module names relative to ``batchglm`` or package prefixes (``"solvers"``
#: covers ``batchglm.solvers`` and everything under it); the longest match decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "inputs",
        (
            "input_types",
            "warning_site",
            "version",
            "blocks",
            "backed",
            "data",
            "nonzeros",
            "align",
            "anndata_io",
            "inputs",
        ),
    ),
    (
        "model",
        (
            "formula",
            "constraints",
            "named_constraints",
            "design",
            "nested_designs",
            "fit_settings",
            "obs_weights",
            "families",
        ),
    ),
    ("engine", ("solvers", "init", "dask_fit")),
    ("result", ("result", "fitted", "predict", "residuals", "anndata_write")),
    ("fit", ("size_factors", "tmm", "fit", "mixed", "pseudobulk", "simulate")),
    ("dispersion", ("dispersion", "vst")),
    ("de", ("de",)),
    (
        "interfaces",
        (
            "",
            "tl",
            "pl",
            "cli",
            "cli_de",
            "cli_options",
            "cli_replicates",
            "cli_tables",
            "__main__",
            "integrations",
            "api",
        ),
    ),
    ("scripts", ("demo", "demo_seed")),
]

#: Edges that go up the layer order or close a cycle, each with its reason. The test fails
#: when one of them disappears, so the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    # FitResult's convenience methods (res.to_anndata(), res.residuals(), res.vst(), ...)
    # are public API; each imports its implementation, which sits above the result, when
    # called. The implementations never need the methods.
    ("result", "anndata_write"): "FitResult.to_anndata calls the writer",
    ("result", "residuals"): "FitResult.residuals calls batchglm.residuals",
    ("result", "vst"): "FitResult.normalized_counts / vst_fit call batchglm.vst",
    # The donor-level test of separated features in mixed fits is pseudobulk + ql_f
    # (de.pseudobulk_ql, which imports de.ql when called); de.ql imports de.wald and
    # de.statistics, which call de.mixed_separation, which calls de.pseudobulk_ql. Removing
    # it needs de.ql off de.wald (test_rows in a module of its own) and the donor-level
    # fallback called from de.lrt instead of de.statistics.likelihood_ratio.
    ("de.pseudobulk_ql", "de.ql"): "separated features of mixed fits: pseudobulk + ql_f",
}


def _modules() -> dict[str, tuple[Path, list[str]]]:
    """``batchglm`` module name -> (file, package parts used to resolve relative imports)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = parts
        else:
            package = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def _graph() -> dict[str, set[str]]:
    """Runtime import edges between ``batchglm`` modules (names without ``batchglm.``)."""
    modules = _modules()

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets.update(
                    known(a.name) for a in node.names if a.name.split(".")[0] == "batchglm"
                )
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                if base.split(".")[0] != "batchglm":
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else known(base))
        targets.discard(name)
        edges[_short(name)] = {_short(t) for t in targets}
    return edges


def _short(name: str) -> str:
    return name.removeprefix("batchglm").removeprefix(".")


def _layer(module: str) -> int:
    best, rank = -1, -1
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            matches = module == m or (m != "" and module.startswith(m + "."))
            if matches and len(m) > best:
                best, rank = len(m), i
    if rank < 0:
        raise AssertionError(f"module batchglm.{module} is in no layer; add it to LAYERS.")
    return rank


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return _graph()


def test_graph_sees_function_level_and_ignores_type_checking_imports(edges) -> None:
    # Known imports of each kind, so a parser that misses a kind fails here first.
    assert "vst" in edges["result"]  # inside a method
    assert "result" not in edges["fitted"]  # under TYPE_CHECKING only
    assert "data" in edges["anndata_io"]  # module level
    assert "de.statistics" in edges["de.ql"]


def test_every_module_has_a_layer(edges) -> None:
    for module in edges:
        _layer(module)


def test_no_import_cycles(edges) -> None:
    kept = {m: {t for t in ts if (m, t) not in ALLOWED} for m, ts in edges.items()}
    assert _cycles(kept) == []


def test_imports_follow_the_layers(edges) -> None:
    bad = [
        f"batchglm.{m} ({LAYERS[_layer(m)][0]}) imports batchglm.{t} ({LAYERS[_layer(t)][0]})"
        for m, ts in sorted(edges.items())
        for t in sorted(ts)
        if _layer(t) > _layer(m) and (m, t) not in ALLOWED
    ]
    assert bad == []


def test_allowed_edges_still_exist(edges) -> None:
    # A fixed back edge must leave ALLOWED too.
    assert [e for e in ALLOWED if e[1] not in edges.get(e[0], set())] == []


def test_input_layer_does_not_import_the_engine(edges) -> None:
    inputs = [m for m in edges if LAYERS[_layer(m)][0] == "inputs"]
    assert inputs
    for m in inputs:
        assert {LAYERS[_layer(t)][0] for t in edges[m]} <= {"inputs"}, m


def test_de_modules_import_no_private_names() -> None:
    # Shared pieces of the tests are public functions (batchglm.de.statistics).
    for path in sorted((PACKAGE / "de").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("batchglm"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert private == [], f"{path.name} imports {private} from {node.module}"
