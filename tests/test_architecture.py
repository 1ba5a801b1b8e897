"""The house is laid out in floors (STYLE.md): imports never run back up, never in a cycle.

The import graph is read from the source (every ``import`` statement, function-local
ones included), so a cycle hidden behind a local import is found too; a subprocess
then checks what importing a package really loads. Sizes: modules ≤ 400 lines,
functions ≤ 60, each module opening with a docstring that says what it owns.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlxp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}

# Ground floor first; a module may import only from its own floor or below.
FLOORS = [
    (
        "mlxp._compat",
        "mlxp._special",
        "mlxp._kernels",
        "mlxp._cublas",
        "mlxp._products",
        "mlxp._conv_kernels",
        "mlxp._cholesky",
        "mlxp.exceptions",
        "mlxp._gpu_probe",
        "mlxp._jit",
        "mlxp._memory",
    ),
    ("mlxp._backend", "mlxp._params", "mlxp._frames", "mlxp._dask"),
    (
        "mlxp._validation",
        "mlxp._registry",
        "mlxp._model_state",
        "mlxp.io",
        "mlxp._classifier",
        "mlxp._device",
    ),
    ("mlxp.metrics", "mlxp.datasets", "mlxp.base"),
    ("mlxp.optim",),
    ("mlxp.nn",),  # layers, functional math, losses, the training loop, Sequential
    ("mlxp.linear_model", "mlxp.nn.mlp", "mlxp.nn.cnn", "mlxp.nn.__init__"),
    ("mlxp.__init__", "mlxp.__main__"),
]


def _floor(module: str) -> int:
    """The floor of ``module``: its longest matching prefix in FLOORS."""
    key = module + ".__init__" if MODULES[module].name == "__init__.py" else module
    best, floor = -1, None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (key == prefix or key.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), level
    assert floor is not None, f"{module} has no floor in FLOORS"
    return floor


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported mlxp module, names taken from it) for each import statement of ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "mlxp"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.split(".")[0] != "mlxp":
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{base}.{n}" in MODULES]
            found += [(f"{base}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest:
                found.append((base, rest))
    return found


GRAPH = {m: sorted({target for target, _ in _imports(m)} - {m}) for m in MODULES}


def test_every_import_stays_on_its_floor_or_below():
    upward = [
        f"{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
        for m, targets in GRAPH.items()
        for t in targets
        if t in MODULES and _floor(t) > _floor(m)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in GRAPH.get(node, []):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for module in GRAPH:
        if module not in state and (cycle := visit(module, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :]))


def test_no_private_name_is_imported_across_modules():
    """What a module offers others is in its ``__all__``; underscored names stay at home."""
    offenders = []
    for module in MODULES:
        for target, names in _imports(module):
            exported = _exports(target)
            for name in names:
                if name.startswith("_") and name != "__version__":
                    offenders.append(f"{module} imports private {target}.{name}")
                elif exported is not None and name not in exported:
                    offenders.append(f"{module} imports {target}.{name}, not in its __all__")
    assert not offenders, "\n".join(offenders)


def _exports(module: str) -> list[str] | None:
    if module not in MODULES:
        return None
    for node in ast.parse(MODULES[module].read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return None


@pytest.mark.parametrize("module", [m for m in MODULES if _exports(m) is not None])
def test_all_names_only_what_the_module_defines(module):
    """``__all__`` is true: each name it lists exists in the module."""
    tree = ast.parse(MODULES[module].read_text())
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
    missing = sorted(set(_exports(module)) - defined)
    assert not missing, f"{module}.__all__ lists undefined names {missing}"


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import mlxp", ("mlxp.nn", "mlxp.linear_model", "mlxp.optim")),
        ("import mlxp.linear_model", ("mlxp.nn",)),
        ("import mlxp.optim", ("mlxp.nn", "mlxp.linear_model")),
        ("import mlxp.io", ("mlxp.nn", "mlxp.linear_model")),
    ],
)
def test_importing_a_package_loads_only_what_it_needs(statement, absent):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = result.stdout.split()
    wrong = [m for m in loaded if any(m == a or m.startswith(a + ".") for a in absent)]
    assert not wrong, f"{statement} loads {wrong}"


@pytest.mark.parametrize("module", list(MODULES))
def test_module_size_and_docstring(module):
    source = MODULES[module].read_text()
    tree = ast.parse(source)
    assert ast.get_docstring(tree), f"{module} has no opening docstring"
    lines = source.count("\n")
    assert lines <= 400, f"{module} has {lines} lines (at most 400)"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, f"{module}: functions over 60 lines: {long}"
