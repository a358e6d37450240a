"""The engine's data flows down: a stage never imports a later one (read from the package's own
source: every ``import`` and ``from ... import`` of ``engine``, at module level or inside a
function). ``engine/*/cli.py`` modules are command-line plug-ins and sit with the command line."""
from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"

# lower number = lower stage; a module may import its own layer and the ones below
LAYERS = {
    # services every stage may use
    "errors": 0, "arrays": 0, "fileio": 0, "progress": 0, "device": 0, "threads": 0, "optim": 0,
    "memory": 0, "isolated": 0,
    "mesh": 1, "mesh_files": 1, "correspondence": 1,
    "geometry": 2,
    "render": 3,
    "features": 4,
    "keypoints": 5,
    "correspond": 6, "parts": 6,
    "register": 7,
    # the match: its configuration, context, stages and the public API
    "config": 8, "inputs": 8, "pair_context": 8, "guidance_setup": 8, "full_fit": 8, "pipeline": 8, "__init__": 8,
    "transfer": 9, "samples": 9,
    "batch": 10, "batch_ray": 10, "batch_transfers": 10, "worker": 10, "worker_commands": 10,
    "cli": 11, "__main__": 11, "demo": 11,
    "bench": 12,
}
CLI_LAYER = LAYERS["cli"]


def _unit(module: str) -> str:
    """engine.a.b -> "a" (the top-level module or package); engine -> "__init__"."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    return parts[1]


def _layer(module: str) -> int:
    own = LAYERS[_unit(module)]
    if module.startswith("engine.") and module.endswith(".cli"):
        return max(own, CLI_LAYER)
    return own


def _package(path: Path, module: str) -> str:
    """The package a file's relative imports start from."""
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def _from_target(node: ast.ImportFrom, package: str) -> str:
    """The module ``from X import ...`` names, relative imports resolved against ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, module: str):
    """(line, imported engine module) of every import in one file."""
    package = _package(path, module)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "engine" or name.startswith("engine."):
                yield node.lineno, name


def _modules():
    for path in sorted(ENGINE.rglob("*.py")):
        parts = path.relative_to(ENGINE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield path, module


def test_every_engine_module_has_a_layer():
    missing = sorted({_unit(m) for _, m in _modules()} - set(LAYERS))
    assert not missing, f"add these to tests/test_layers.py LAYERS: {missing}"


def test_no_stage_imports_a_later_one():
    upward = []
    for path, module in _modules():
        mine = _layer(module)
        for line, target in _imports(path, module):
            if _layer(target) > mine:
                upward.append(f"{path.relative_to(ENGINE.parent)}:{line}: {module} -> {target}")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test itself: a geometry module importing the pipeline is caught."""
    bad = tmp_path / "engine" / "geometry"
    bad.mkdir(parents=True)
    (bad / "oops.py").write_text("def f():\n    from ..pipeline import match\n")
    found = list(_imports(bad / "oops.py", "engine.geometry.oops"))
    assert found == [(2, "engine.pipeline")] and _layer(found[0][1]) > _layer("engine.geometry.oops")


def _module_level_imports(path: Path, module: str, known: set) -> set:
    """The package's modules one file imports when it is loaded (its top-level statements, ``if``
    / ``try`` blocks included; imports inside functions run later and make no cycle). ``from X
    import name`` counts X's submodule ``name`` where there is one, else X."""
    package = _package(path, module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    nodes = []
    for node in tree.body:
        nodes.extend(ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node])
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out |= subs or ({target} & known)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names} & known
    return {m for m in out if m != module and not module.startswith(m + ".")}


def _cycles(root: Path) -> list:
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: _module_level_imports(p, m, set(files)) for m, p in files.items()}
    # modules on a cycle: those that reach themselves
    on_cycle = []
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == start:
                on_cycle.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
    return sorted(on_cycle)


def test_no_module_level_import_cycles_in_the_engine_or_the_add_on():
    for root in (ENGINE, ENGINE.parent / "blender_addon"):
        assert _cycles(root) == [], f"{root.name}: modules importing themselves round a cycle"


def test_the_checker_sees_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .a import x\n")
    (pkg / "c.py").write_text("def f():\n    from . import a\n")  # inside a function: no cycle
    assert _cycles(pkg) == ["pkg.a", "pkg.b"]
