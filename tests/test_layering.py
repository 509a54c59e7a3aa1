"""The import graph of agentgym: no cycle anywhere, and agentgym/eval is a one-way stack.

Imports are read from the source with ``ast`` (no module is imported), at module level and inside
functions alike, so an import moved into a function to dodge a cycle still counts.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentgym"

# agentgym/eval bottom to top: a module may import eval modules of lower layers only.
EVAL_LAYERS: list[set[str]] = [
    # leaves: no other eval module
    {"scoring", "mi", "metrics", "control_tokens", "run_files"},
    # model diagnostics of episodes, the summary of a run, playing in worker processes
    {"diagnostics", "summary", "worker_pool", "__init__"},
    {"runner"},
    {"format_variants"},
    # entry points
    {"pytest_plugin", "leaderboard"},
]


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module under ``package`` (a package is its ``__init__.py``)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The agentgym modules that module ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from agentgym.eval import runner` imports the submodule agentgym.eval.runner
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import agentgym.eval.runner.x` is at least that module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    known = module_names(package)
    return {name: imported_modules(name, path, known) for name, path in known.items()}


@functools.lru_cache(maxsize=1)
def agentgym_graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path, on_path = [root], {root}
        stack = [iter(sorted(graph.get(root, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": set(), "c": {"c2"}, "c2": {"c"}}) == ["c", "c2", "c"]


def test_relative_and_nested_imports_are_read(tmp_path):
    pkg = tmp_path / "agentgym"
    (pkg / "eval").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "eval" / "__init__.py").write_text("from . import low\n")
    (pkg / "eval" / "low.py").write_text("def f():\n    from agentgym.eval.high import g\n")
    (pkg / "eval" / "high.py").write_text("from .low import f\nimport agentgym\n")
    graph = import_graph(pkg)
    assert graph["agentgym.eval"] == {"agentgym.eval.low"}
    assert graph["agentgym.eval.high"] == {"agentgym.eval.low", "agentgym"}
    assert find_cycle(graph) == ["agentgym.eval.low", "agentgym.eval.high", "agentgym.eval.low"]


def test_agentgym_imports_have_no_cycle():
    cycle = find_cycle(agentgym_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _eval_layer(name: str) -> int:
    short = name.removeprefix("agentgym.eval").lstrip(".") or "__init__"
    for k, layer in enumerate(EVAL_LAYERS):
        if short in layer:
            return k
    raise AssertionError(f"{name} is in no layer: add it to EVAL_LAYERS in {Path(__file__).name}")


def test_every_eval_module_has_a_layer():
    on_disk = {p.stem for p in (PACKAGE / "eval").glob("*.py")}
    declared = set().union(*EVAL_LAYERS)
    assert on_disk == declared, f"undeclared: {on_disk - declared}, declared but absent: {declared - on_disk}"


@pytest.mark.parametrize("name", sorted(n for n in module_names() if n.startswith("agentgym.eval")))
def test_eval_modules_import_only_downward(name):
    imported = agentgym_graph()[name]
    assert not {m for m in imported if m.startswith("agentgym.trainers")}, f"{name} imports the trainers"
    upward = sorted(
        m for m in imported if m.startswith("agentgym.eval") and _eval_layer(m) >= _eval_layer(name)
    )
    assert not upward, f"{name} (layer {_eval_layer(name)}) imports {upward} from its own layer or above"


def test_the_core_does_not_import_eval_or_trainers():
    core = ["agentgym.formats", "agentgym.registry", "agentgym.env", "agentgym.rollout", "agentgym.policies"]
    graph = agentgym_graph()
    for name in core:
        above = {m for m in graph[name] if m.startswith(("agentgym.eval", "agentgym.trainers"))}
        assert not above, f"{name} imports {above}"


def test_nothing_below_engineer_imports_it():
    """agentgym.engineer sits on top of eval and the trainers: only itself and the command line import it."""
    for name, imported in agentgym_graph().items():
        if name.startswith("agentgym.engineer") or name == "agentgym.cli":
            continue
        above = {m for m in imported if m.startswith("agentgym.engineer")}
        assert not above, f"{name} imports {above}"
