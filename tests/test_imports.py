"""Imports point one way: no cycle between flow_omni's modules or between its packages, counting
imports inside functions too (they hide cycles instead of removing them)."""

import ast
from pathlib import Path

import flow_omni

ROOT = Path(flow_omni.__file__).parent


def module_graph() -> dict[str, set[str]]:
    """Module name → the flow_omni modules it imports (module-level and function-level alike)."""
    files = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in files.items():
        is_pkg = f.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".")
                if node.level:
                    base = base[: len(base) - node.level + int(is_pkg)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                # A package re-exporting its own children is not a cycle of design.
                if t and t != name and not name.startswith(t + "."):
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_module_imports_itself_through_others():
    assert find_cycle(module_graph()) is None


def test_no_two_packages_import_each_other():
    def package(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else m

    packages: dict[str, set[str]] = {}
    for m, deps in module_graph().items():
        packages.setdefault(package(m), set()).update(package(d) for d in deps if package(d) != package(m))
    packages.pop("flow_omni", None)  # the root __init__ re-exports the public API from every package
    for deps in packages.values():
        deps.discard("flow_omni")
    assert find_cycle(packages) is None


def test_the_checker_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
