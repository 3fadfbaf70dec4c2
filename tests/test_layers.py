"""The layers of ARCHITECTURE.md, read from the source: the core imports nothing above it, the
exported runtime runs without the search, no two sub-packages import each other (directly or
round a cycle), and no module imports another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exitsearch"

CORE_MAY_IMPORT = (
    "exitsearch.core",
    "exitsearch.errors",
    "exitsearch.units",
    "exitsearch.budget",
    "exitsearch.registry",
    "exitsearch._lazy",
)
RUNTIME = ("runtime.py", "onnx_runtime.py", "staged.py", "points.py", "inputs.py")
RUNTIME_MAY_IMPORT = (
    *CORE_MAY_IMPORT,
    "exitsearch.heads",
    "exitsearch.backbone",
    "exitsearch.pausing.pause",
    "exitsearch.data.preprocess",
    "exitsearch.data.samples",
    "exitsearch.data.transforms",
    "exitsearch.export.runtime",
    "exitsearch.export.onnx_runtime",
    "exitsearch.export.staged",
    "exitsearch.export.points",
    "exitsearch.export.inputs",
    "exitsearch.export.costs",  # only a model built from parts without costs counts them
)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every ``exitsearch`` import of a file, module level or inside functions:
    ``(module, imported names, line)``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "exitsearch":
                out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "exitsearch":
                    out.append((a.name, [], node.lineno))
    return out


def outside(path: Path, allowed: tuple[str, ...]) -> list[str]:
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return [
        f"{name}:{line} imports {module}"
        for module, names, line in imports(path)
        if not any(module == a or module.startswith(a + ".") for a in allowed)
        and not (module == "exitsearch" and names == ["__version__"])  # a constant
    ]


def test_the_core_imports_nothing_above_it():
    files = sorted((PACKAGE / "core").glob("*.py"))
    assert len(files) >= 4
    bad = [msg for f in files for msg in outside(f, CORE_MAY_IMPORT)]
    assert not bad, bad
    for name in ("errors.py", "units.py", "budget.py", "registry.py"):
        bad = outside(PACKAGE / name, CORE_MAY_IMPORT)
        assert not bad, bad


MODELS_MAY_IMPORT = (
    *CORE_MAY_IMPORT,
    "exitsearch.data",
    "exitsearch.device",
    "exitsearch._io",
    "exitsearch._mismatch",
)


def test_the_backbone_imports_no_layer_above_it():
    # training a backbone is the training layer's (exitsearch.training.backbone_trainer)
    files = sorted((PACKAGE / "backbone").glob("*.py"))
    bad = [msg for f in files for msg in outside(f, (*MODELS_MAY_IMPORT, "exitsearch.backbone"))]
    assert not bad, bad


def test_profile_and_heads_form_no_cycle():
    # heads count their FLOPs and time themselves with the profiler; the profiler knows no head
    files = sorted((PACKAGE / "profile").glob("*.py"))
    allowed = (
        *MODELS_MAY_IMPORT,
        "exitsearch.backbone",
        "exitsearch.profile",
        "exitsearch._memory",
    )
    bad = [msg for f in files for msg in outside(f, allowed)]
    assert not bad, bad


def test_export_does_not_import_the_pipeline_the_report_or_training():
    bad = [
        msg
        for f in sorted((PACKAGE / "export").glob("*.py"))
        for module, _, line in imports(f)
        if module.startswith(
            (
                "exitsearch.pipeline",
                "exitsearch.report",
                "exitsearch.distributed",
                "exitsearch.serve",
                "exitsearch.training",  # a bank of heads is the heads layer's
            )
        )
        for msg in [f"{f.name}:{line} imports {module}"]
    ]
    assert not bad, bad


def test_the_exported_runtime_does_not_import_the_search():
    bad = [
        msg for name in RUNTIME for msg in outside(PACKAGE / "export" / name, RUNTIME_MAY_IMPORT)
    ]
    assert not bad, bad


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "cli").glob("*.py")]):
        for module, names, line in imports(path):
            bad += [
                f"{path.relative_to(ROOT)}:{line} imports {module}.{n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
    assert not bad, bad


def package_graph(root: Path = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """Which sub-package (or top-level module) of ``root`` imports which, with the places:
    ``{importer: {imported: ["file:line", ...]}}``. Imports inside functions and under
    ``TYPE_CHECKING`` count: a type is a dependency too."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        source = rel.parts[0].removesuffix(".py")
        for module, names, line in imports(path):
            parts = module.split(".")
            targets = [parts[1]] if len(parts) > 1 else [n for n in names if n != "__version__"]
            for target in targets:
                if target != source:
                    graph.setdefault(source, {}).setdefault(target, []).append(f"{rel}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_sub_packages():
    graph = package_graph()
    assert {"pipeline", "report", "search", "export", "core"} <= set(graph)
    bad = [
        f"{a} -> {b} ({graph[a][b][0]})"
        for component in cycles(graph)
        for a in component
        for b in component
        if b in graph.get(a, {})
    ]
    assert not bad, bad


def test_the_cycle_check_can_fail(tmp_path: Path):
    for name, body in {
        "a/x.py": "from exitsearch.b.y import f\n",
        "b/y.py": "def g():\n    from exitsearch.c import h\n",
        "c/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from exitsearch.a.x import T\n",
        "d.py": "from exitsearch.a.x import T\n",
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(body)
    graph = package_graph(tmp_path)
    assert graph["d"] == {"a": ["d.py:1"]}
    assert cycles(graph) == [["a", "b", "c"]]
    del graph["c"]
    assert cycles(graph) == []


def test_the_layer_checks_can_fail(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from exitsearch.search.study import settle_interrupted\n"
        "def f():\n    from exitsearch.report.run_report import _hidden\n"
    )
    assert outside(bad, CORE_MAY_IMPORT) == [
        "bad.py:1 imports exitsearch.search.study",
        "bad.py:3 imports exitsearch.report.run_report",
    ]
    assert [(m, n) for m, n, _ in imports(bad)] == [
        ("exitsearch.search.study", ["settle_interrupted"]),
        ("exitsearch.report.run_report", ["_hidden"]),
    ]
