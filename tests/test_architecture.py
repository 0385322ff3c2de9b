"""The package layering, read from the source: every import of every module (ast, function-local ones too),
checked against the dependency graph bottom up

    robot_spec  <-  sim_pretrain, real_robot  <-  deploy  <-  uni_o4

(sim_pretrain and real_robot never import each other); command-line modules (`cli.py`, `*_cli.py`) are
composition roots and may import any package. And no import cycle between modules, roots included.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALLOWED = {  # package -> the packages it may import besides itself
    "robot_spec": set(),
    "sim_pretrain": {"robot_spec"},
    "real_robot": {"robot_spec"},
    "deploy": {"robot_spec", "real_robot"},
    "uni_o4": {"robot_spec", "sim_pretrain", "real_robot", "deploy"},
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_command_line(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf == "cli" or leaf.endswith("_cli")


def source_modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of the packages (generated lcm-gen code included: it imports nothing of ours)."""
    return {module_name(p, root): p for package in ALLOWED for p in sorted((root / package).rglob("*.py"))}


def imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """The project modules `path` imports: `from a.b import c` names a.b.c if that is a module, else a.b."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` up
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    return {name for name in found if name.split(".")[0] in ALLOWED}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    modules = source_modules(root)
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in imported_modules(path, name, known):
            while target not in known and "." in target:  # `import a.b.c` of a name inside a module: that module
                target = target.rpartition(".")[0]
            targets.add(target)
        graph[name] = targets - {name}
    return graph


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        if is_command_line(module):
            continue
        package = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                bad.append(f"{module} imports {target} ({package} may import only {sorted(ALLOWED[package])})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_package_imports_upward_or_sideways():
    assert layering_violations(import_graph()) == []


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    """The checks themselves, on a made-up tree: real_robot importing deploy, and two deploy modules in a loop."""
    for package in ALLOWED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "real_robot" / "collect.py").write_text("def f():\n    from deploy.runtime import Runtime\n")
    (tmp_path / "real_robot" / "cli.py").write_text("import uni_o4.online\n")  # a root may
    (tmp_path / "deploy" / "runtime.py").write_text("from deploy import commands\n")
    (tmp_path / "deploy" / "commands.py").write_text("from .runtime import Runtime\n")
    (tmp_path / "uni_o4" / "online.py").write_text("import numpy\nfrom deploy.runtime import Runtime\n")
    graph = import_graph(tmp_path)
    assert layering_violations(graph) == [
        "real_robot.collect imports deploy.runtime (real_robot may import only ['robot_spec'])"
    ]
    assert cycles(graph) == [["deploy.commands", "deploy.runtime"]]
