"""The import graph of `algebranets` and of `experiments` has no cycle.

Dependencies point downwards only (DESIGN.md): a command that reports on a lower module (the
per-model cost table, the sparse export, sampling) sits on a floor above what it uses, never
inside the module it reports on. The graph is read from the source with `ast`, every `import`
and `from ... import` anywhere in a module, inside functions included (a lazy import is still an
edge), with relative imports resolved; `from pkg import name` is an edge to the module
`pkg.name` when that is a module, else to `pkg`.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _modules(package: str, root: pathlib.Path) -> dict:
  """{module name: path} of every .py file of `package`."""
  return {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _resolve_relative(module: str, is_package: bool, level: int, target: str) -> str:
  base = module.split(".")
  if not is_package:
    base = base[:-1]
  base = base[:len(base) - (level - 1)] if level > 1 else base
  return ".".join(base + ([target] if target else []))


def import_graph(package: str, root: pathlib.Path = ROOT) -> dict:
  """{module: set of modules of `package` it imports} (see the module docstring)."""
  modules = _modules(package, root)
  graph = {}
  for name, path in modules.items():
    is_package = path.name == "__init__.py"
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      targets = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = (_resolve_relative(name, is_package, node.level, node.module or "")
                if node.level else node.module or "")
        for alias in node.names:
          sub = f"{base}.{alias.name}"
          targets.append(sub if sub in modules else base)
      for target in targets:
        # `import a.b.c` of a module that is not ours: its longest prefix that is.
        while target and target not in modules:
          target = target.rpartition(".")[0]
        if target and target != name:
          edges.add(target)
    graph[name] = edges
  return graph


def find_cycles(graph: dict) -> list:
  """The strongly connected components with more than one module (Tarjan), as sorted lists."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
  # A cycle closed only by an import inside a function, and a relative import.
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "low.py").write_text("def f():\n  from pkg.sub import high\n")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "sub" / "high.py").write_text("from .. import low\n")
  (pkg / "other.py").write_text("import pkg.low\n")
  graph = import_graph("pkg", tmp_path)
  assert graph["pkg.sub.high"] == {"pkg.low"}
  assert graph["pkg.other"] == {"pkg.low"}
  assert find_cycles(graph) == [["pkg.low", "pkg.sub.high"]]


@pytest.mark.parametrize("package", ["algebranets", "experiments"])
def test_no_import_cycles(package):
  graph = import_graph(package)
  assert len(graph) > 5
  cycles = find_cycles(graph)
  assert not cycles, f"import cycles in {package}: {cycles}"


def test_command_line_modules_sit_above_what_they_report_on():
  # The counting and pruning modules import neither the models nor the trainer.
  graph = import_graph("algebranets")
  for low in ("algebranets.costs", "algebranets.sparsity"):
    assert not {m for m in graph[low]
                if m.startswith(("algebranets.models", "algebranets.training"))}, graph[low]
