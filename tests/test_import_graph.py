"""mmjax's imports form no cycle, counting the imports inside functions too.

A lazy (function-level) import hides a cycle from Python but not from the reader: the two
modules still depend on each other. Lazy imports are fine for keeping TensorFlow out of
`import mmjax` (DESIGN.md principle 6); they must not close a circle.

Edges are the imports as written. Importing `a.b.c` also runs `a/__init__.py` and
`a/b/__init__.py`, but those implicit edges are left out: a package whose `__init__`
re-exports its modules, while the modules import each other, is the usual layout and no
circle of dependencies.
"""
from __future__ import annotations

import ast
import pathlib

PACKAGE = "mmjax"
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  """{dotted name: file} of every module and package under mmjax/."""
  return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imported(name: str, source: str, modules, *, is_package: bool = False) -> set[str]:
  """The `modules` that module `name` (whose code is `source`) imports, anywhere in it.

  `from a.b import c` imports a.b.c when that is a module, else a.b (c is a name in it).
  Relative imports resolve against the module's package.
  """
  package = name if is_package else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        anchor = ".".join(parts[:len(parts) - node.level + 1])
        base = f"{anchor}.{base}" if base else anchor
      for alias in node.names:
        child = f"{base}.{alias.name}"
        found.add(child if child in modules else base)
  return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
  """{module: the mmjax modules it imports} over every .py file under mmjax/."""
  modules = _modules()
  return {name: imported(name, path.read_text(), modules, is_package=path.stem == "__init__")
          for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle, [a, b, ..., a], per strongly connected component of several modules."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(v):   # Tarjan's algorithm
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.add(w)
        if w == v:
          break
      if len(component) > 1:
        components.append(component)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return [_shortest_cycle(graph, c) for c in components]


def _shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
  """A shortest cycle through the component's first module (breadth-first)."""
  start = min(component)
  paths, frontier = {start: [start]}, [start]
  while frontier:
    following = []
    for v in frontier:
      for w in sorted(graph[v] & component):
        if w == start:
          return paths[v] + [start]
        if w not in paths:
          paths[w] = paths[v] + [w]
          following.append(w)
    frontier = following
  raise AssertionError(f"{sorted(component)} is strongly connected, so it has a cycle")


def test_finds_cycles_and_only_cycles():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}
  assert find_cycles(graph) == [["a", "b", "c", "a"]]
  assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_resolves_relative_lazy_and_submodule_imports():
  modules = {"p", "p.a", "p.b", "p.c", "p.q", "p.q.d", "x"}
  source = ("from . import b\n"             # a sibling module
            "from .c import name\n"         # a name in a sibling module
            "from p.q import d, value\n"    # a submodule, and a name in the package
            "def f():\n"
            "  import x\n")                 # lazy
  assert imported("p.a", source, modules) == {"p.b", "p.c", "p.q.d", "p.q", "x"}
  assert imported("p.q", "from .. import a\nfrom . import d", modules,
                  is_package=True) == {"p.a", "p.q.d"}


def test_mmjax_has_no_import_cycle():
  cycles = find_cycles(import_graph())
  assert not cycles, "Import cycles in mmjax/ (imports inside functions count):\n" + (
      "\n".join("  " + " -> ".join(c) for c in cycles))


if __name__ == "__main__":   # Prints the cycles, one a line.
  for cycle in find_cycles(import_graph()):
    print(" -> ".join(cycle))
