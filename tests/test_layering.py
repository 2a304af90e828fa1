"""The import layering of the runtime, checked over the AST of every module.

DSP core <- networks <- timbre sources <- engine/control <- CLI: a module imports only from its own
layer or the ones below. The runtime (rt_engine/, models/) never imports training/, tests/ or
bench/ (those may import anything). No import cycles anywhere. Imports sit at module top; one inside
a function is a heavy or optional dependency kept off the import path, and says why in a comment
on its line or on the line just above its group.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ("rt_engine", "models")
PROJECT = RUNTIME + ("training", "tests", "bench", "patches")
LAYERS = ("dsp", "networks", "sources", "engine", "cli")
MODEL_LAYERS = {
    "dsp": ("checkpoint", "harmonic_inversion", "kernel_cache", "mel_inversion", "model_config", "mu_law", "one_shot", "own_sample_blend",
            "phase_reconstruction", "pitch", "resample",
            "spectral", "spectral_kernels", "timbre_grid", "gru_template"),
    "networks": ("features", "gan", "gru", "gru_config", "gru_stream", "gru_stream_reference", "hypernetwork", "one_shot_refinement"),
    "sources": ("bank_source", "gan_bank", "procedural_source", "timbre_sources"),
}
ENGINE_DSP = ("bank_tuning", "commands", "stream_resampler", "voice_kernel")
"""rt_engine modules that are DSP core: the block kernel and what it reads."""


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def layer_of(module: str) -> str | None:
    """The layer of a runtime module (None for a package's __init__); AssertionError for a
    models/ module no layer names."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    name = parts[-1]
    if parts[0] == "rt_engine":
        if name == "cli" or name.endswith("_command"):
            return "cli"
        return "dsp" if name in ENGINE_DSP else "engine"
    for layer, names in MODEL_LAYERS.items():
        if name in names:
            return layer
    raise AssertionError(f"{module} has no layer: add it to MODEL_LAYERS in tests/test_layering.py")


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import in `module`."""
    tree = ast.parse(MODULES[module].read_text())
    local_nodes = {id(node) for function in ast.walk(tree)
                   if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = next((name[:cut] for cut in range(len(name), 0, -1)
                           if name[:cut] in MODULES and (cut == len(name) or name[cut] == ".")), None)
            if target is not None and target != module:
                found.append((target, node.lineno, id(node) in local_nodes))
    return found


def _graph() -> dict[str, set[str]]:
    return {module: {target for target, _, _ in _imports(module)} for module in MODULES}


def test_every_runtime_module_has_a_layer():
    for module in MODULES:
        if module.split(".")[0] in RUNTIME:
            layer_of(module)


def test_the_runtime_imports_only_its_own_layer_and_those_below():
    violations = []
    for module in MODULES:
        if module.split(".")[0] not in RUNTIME:
            continue
        layer = layer_of(module)
        for target, line, _ in _imports(module):
            if target.split(".")[0] not in RUNTIME:
                violations.append(f"{module}:{line} imports {target} (training, tests and bench are not runtime)")
            elif layer is not None and layer_of(target) is not None \
                    and LAYERS.index(layer_of(target)) > LAYERS.index(layer):
                violations.append(f"{module}:{line} ({layer}) imports {target} ({layer_of(target)})")
    assert not violations, "\n".join(violations)


def test_no_module_imports_itself_through_a_cycle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def _local_imports_without_reason(path: Path) -> list[str]:
    """Imports inside functions of `path` with no comment on their line, on another line of their
    run of import lines (blank lines allowed), or on the line just above that run."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    inside = {node.lineno for function in ast.walk(tree)
              if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))}

    def is_import(number: int) -> bool:  # blank lines between import groups keep the run going
        text = lines[number - 1].strip()
        return not text or text.startswith(("import ", "from "))

    bad = []
    for number in sorted(inside):
        start = end = number
        while start > 1 and is_import(start - 1):
            start -= 1
        while end < len(lines) and is_import(end + 1):
            end += 1
        if not any("#" in lines[n - 1] for n in range(max(start - 1, 1), end + 1)):
            bad.append(f"{path.relative_to(ROOT)}:{number}: {lines[number - 1].strip()}")
    return bad


def test_imports_inside_functions_say_why():
    bad = []
    for module, path in MODULES.items():
        if module.split(".")[0] in RUNTIME:
            bad += _local_imports_without_reason(path)
    assert not bad, "imports inside functions without a reason (a comment):\n" + "\n".join(bad)


def test_the_layering_check_sees_a_forbidden_import(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    import torch\n    return torch\n")
    assert _local_imports_without_reason_at(fake) == ["2"]
    fake.write_text("def f():\n    try:\n        import torch\n    except ImportError:\n        pass\n")
    assert _local_imports_without_reason_at(fake) == ["3"]
    fake.write_text("def f():\n    # heavy: torch only when asked\n    import torch\n    import numpy\n")
    assert _local_imports_without_reason_at(fake) == []


def _local_imports_without_reason_at(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return [entry.split(":")[1] for entry in _local_imports_without_reason(path)]
    finally:
        ROOT = saved
