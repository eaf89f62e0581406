"""The layers of docs/architecture.md, enforced: what may import what, no import cycles, and the size limits of a
module and a function. Read from the source with ast, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"geosr": "geosr", "cli": "geosr.cli", "training": "geosr.training"}

# Bottom to top; a module may import its own layer and the layers below, never above.
LAYERS = [
    (
        "foundations",
        {
            "errors",
            "limits",
            "version",
            "fileio",
            "bundled",
            "device",
            "radiometry",
            "tiling",
            "resize",
            "metrics",
            "aoi",
            "aoicrs",
            "arraylayout",
            "worksize",
            "sources",
            "stagetimer",
        },
    ),
    (
        "files and networks",
        {
            "raster",
            "models",
            "checkpoint",
            "safetensorsfile",
            "consistency",
            "rowstream",
            "predictor",
            "sharedmodel",
            "datasets",
            "stac",
        },
    ),
    (
        "one raster",
        {
            "options",
            "provenance",
            "plan",
            "inputrows",
            "strips",
            "blocks",
            "pipethreads",
            "pipeline",
            "arrays",
            "lazy",
            "evaluation",
            "evaluation_report",
            "uncertainty",
            "pictures",
            "onnx",
            "onnxmeta",
            "onnxrun",
        },
    ),
    ("many rasters", {"batch", "report", "inference", "api", "apiwords", "preview"}),
    ("entry points", {"cli", "training"}),
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "geosr":
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "geosr")
    return {m for m in out if m in MODULES}


def _layer(module: str) -> int:
    if module == "geosr":
        return len(LAYERS) - 2  # the package: its lazy attributes are the API
    top = module.split(".")[1]
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of docs/architecture.md: add it to LAYERS and the page")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_layer_and_below(module):
    mine = _layer(module)
    above = sorted(m for m in _imports(MODULES[module]) if _layer(m) > mine)
    assert not above, f"{module} ({LAYERS[mine][0]}) imports {above} from a layer above"


def test_the_library_never_imports_the_command_line_and_training_never_imports_it_either():
    for module, path in MODULES.items():
        if not module.startswith("geosr.cli"):
            assert not [m for m in _imports(path) if m.startswith("geosr.cli")], module
        if not module.startswith(("geosr.cli", "geosr.training")):
            assert not [m for m in _imports(path) if m.startswith("geosr.training")], module


def test_no_import_cycles():
    graph = {m: {d for d in _imports(p) if d != m and not m.startswith(d + ".")} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(d) :] + [d]))
            if d not in state:
                visit(d, trail + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for module, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append((module, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append((f"{module}.{node.name}", length))
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
