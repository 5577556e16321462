"""The framework's imports run one way, top to bottom: no import circle, lazy imports included.

Intended order (each part may import only parts to its left):

    backends  tensor  ops  random  functional  nn  optim  io  preprocess  data  metrics
    figures  train  model  models  baselines  experiments  commands  cli

A circle is read from the source with ``ast`` (imports inside functions count: a lazy
import hides a circle from Python, not from a reader).
"""

import ast
import pathlib
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parents[1] / "minicnn"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
    """Every minicnn module that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "minicnn":
                found.update(f"minicnn.{a.name}" for a in node.names)
            else:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.startswith("minicnn.")}


def graph(unit) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges = defaultdict(set)
    for name, path in modules.items():
        for target in imports(path):
            while target not in modules and "." in target:  # minicnn.io.load_x -> minicnn.io
                target = target.rsplit(".", 1)[0]
            a, b = unit(name), unit(target)
            if target in modules and a is not None and b is not None and a != b:
                edges[a].add(b)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def top_part(name: str) -> str | None:
    """minicnn.train.loop -> train; the package's own __init__/__main__ re-export everything."""
    parts = name.split(".")
    return None if len(parts) == 1 or parts[1] == "__main__" else parts[1]


def test_parts_of_minicnn_import_one_way():
    edges = graph(top_part)
    assert "train" in edges and "nn" in edges["train"]  # the graph is really read
    assert find_cycle(edges) is None, f"import circle: {' -> '.join(find_cycle(edges))}"


def test_modules_inside_each_part_import_one_way():
    def module_in_part(name):  # a part's __init__ re-exports its modules: left out
        return None if name.count(".") < 2 or name.endswith("__main__") else name

    edges = {a: {b for b in bs if b.split(".")[1] == a.split(".")[1]} for a, bs in graph(module_in_part).items()}
    assert find_cycle(edges) is None, f"import circle: {' -> '.join(find_cycle(edges))}"


def test_a_circle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
