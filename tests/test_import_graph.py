"""The import graph of keraslm/ has no cycle and no upward arrow (read from the sources with ast)."""

import ast
import os

import keraslm

PACKAGE_DIR = os.path.dirname(keraslm.__file__)

# Floors, lowest first: a module may import modules on its own floor or below, never above.
FLOORS = [
    ["keraslm.validation", "keraslm.atomic", "keraslm.presets", "keraslm.config",   # plain data, rules, files
     "keraslm.curves"],
    ["keraslm.ops"],                                                # the kernels' Python face
    ["keraslm.data", "keraslm.metrics", "keraslm.optimizers", "keraslm.schedules"],
    ["keraslm.layers", "keraslm.generation"],                       # generation knows only the model contract
    ["keraslm.models"],
    ["keraslm.checkpoint", "keraslm.precision", "keraslm.evaluation", "keraslm.export", "keraslm.convert",
     "keraslm.run_log"],
    ["keraslm.training"],
    ["keraslm.cli", "keraslm.__main__", "keraslm"],
]


def _modules():
    """{module name: source path} of every module under keraslm/ (packages by their __init__)."""
    found = {}
    root = os.path.dirname(PACKAGE_DIR)
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def _imports(path, modules):
    """The keraslm modules that the file at ``path`` imports (``from pkg import mod`` counts as pkg.mod)."""
    deps = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keraslm"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            if subs:
                deps.update(subs)
            if len(subs) < len(node.names) and node.module in modules:
                deps.add(node.module)
    return deps


def _floor(module):
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    assert best is not None, f"{module} is on no floor: add it to FLOORS"
    return best[0]


def _graph():
    modules = _modules()
    return {m: {d for d in _imports(p, modules) if d != m} for m, p in modules.items()}


def test_no_upward_imports():
    upward = [f"{m} (floor {_floor(m)}) imports {d} (floor {_floor(d)})"
              for m, deps in _graph().items() for d in sorted(deps)
              if _floor(d) > _floor(m)]
    assert not upward, "\n".join(upward)


def test_no_cycles():
    graph = _graph()
    # A package's __init__ gathers its submodules, and a submodule's "from pkg import sibling" goes
    # through the package: those edges are the package's own plumbing, not a cycle between modules.
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_arrows():
    graph = _graph()
    assert "keraslm.ops.sampling" in graph["keraslm.generation.settings"]
    assert "keraslm.models.base" in graph["keraslm.models.transformer"]
    assert _floor("keraslm.ops.attention") < _floor("keraslm.models.transformer") < _floor("keraslm.training")


def test_generation_sees_only_the_model_contract():
    """The decoding loops use ops and the next()/init_cache() contract, no layer, model or harness."""
    graph = _graph()
    for module, deps in graph.items():
        if module.startswith("keraslm.generation"):
            foreign = sorted(d for d in deps if not d.startswith(("keraslm.generation", "keraslm.ops",
                                                                  "keraslm.validation")))
            assert not foreign, f"{module} imports {foreign}"
