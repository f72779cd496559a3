"""Imports point one way: no cycle inside bot/ or inside training/, training/ never imports
bot/, and only bot/discord/ imports discord.

Read from the source with ast, not by importing it: an import inside a function or under
``if TYPE_CHECKING:`` counts like one at the top of a module (it is the same dependency,
only deferred), relative imports are resolved, and ``from pkg import name`` is an edge to
the submodule ``pkg.name`` when there is one, else to ``pkg``.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "training")


@dataclass(frozen=True)
class Import:
    """One imported name: ``target`` is absolute (``bot.service``, ``discord.ui``)."""

    source: str
    target: str
    path: Path
    line: int

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_imports(root: Path, packages: tuple[str, ...]) -> tuple[set[str], list[Import]]:
    """The modules under ``packages`` and every import they make, wherever it stands."""
    files = sorted(path for package in packages for path in (root / package).rglob("*.py"))
    modules = {module_name(root, path) for path in files}
    found: list[Import] = []
    for path in files:
        me = module_name(root, path)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: up (level - 1) packages from this one
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                submodules = [f"{base}.{alias.name}" for alias in node.names]
                targets = [name if name in modules else base for name in submodules]
            else:
                continue
            found += [Import(me, target, path, node.lineno) for target in dict.fromkeys(targets)]
    return modules, found


def import_graph(modules: set[str], imports: list[Import]) -> dict[str, dict[str, Import]]:
    """module -> {module it imports: the first import that does}, among ``modules`` only."""
    graph: dict[str, dict[str, Import]] = {module: {} for module in modules}
    for found in imports:
        target = found.target
        while target and target not in modules:  # bot.db.models.User -> bot.db.models
            target = target.rpartition(".")[0]
        if target and target != found.source:
            graph[found.source].setdefault(target, replace(found, target=target))
    return graph


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            if group:
                groups.append(sorted([*group, module]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def shortest_cycle(graph: dict[str, dict[str, Import]], group: list[str]) -> list[Import]:
    """One cycle through the group's first module, as the imports that close it."""
    start, members = group[0], set(group)
    came: dict[str, Import] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target, found in sorted(graph[module].items()):
            if target in members and target not in came:
                came[target] = found
                queue.append(target)
        if start in came:
            break
    path, module = [], start
    while True:
        path.append(came[module])
        module = came[module].source
        if module == start:
            return path[::-1]


def describe(graph: dict[str, dict[str, Import]], group: list[str], root: Path) -> str:
    steps = shortest_cycle(graph, group)
    chain = " -> ".join([steps[0].source, *(step.target for step in steps)])
    edges = [
        f"    {found.where(root)}: {module} -> {target}"
        for module in group
        for target, found in sorted(graph[module].items())
        if target in group
    ]
    return "\n".join([f"cycle among {', '.join(group)}", f"  e.g. {chain}", *edges])


def cycle_report(root: Path, package: str) -> list[str]:
    modules, imports = read_imports(root, (package,))
    graph = import_graph(modules, imports)
    return [describe(graph, group, root) for group in cycles(graph)]


def imports_of(root: Path, prefix: str, among: tuple[str, ...]) -> list[Import]:
    """The imports of modules under ``among`` whose target is ``prefix`` or inside it."""
    return [
        found
        for found in read_imports(root, among)[1]
        if found.target == prefix or found.target.startswith(prefix + ".")
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    found = cycle_report(ROOT, package)
    assert not found, "\n" + "\n".join(found)


def test_training_does_not_import_bot() -> None:
    found = [
        f"{i.where(ROOT)}: {i.source} -> {i.target}" for i in imports_of(ROOT, "bot", ("training",))
    ]
    assert not found, "\n" + "\n".join(found)


def test_only_bot_discord_imports_discord() -> None:
    found = [
        f"{i.where(ROOT)}: {i.source} -> {i.target}"
        for i in imports_of(ROOT, "discord", PACKAGES)
        if not i.source.startswith("bot.discord")
    ]
    assert not found, "\n" + "\n".join(found)


# The checker itself, on small trees.


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"a/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "a/__init__.py": "from a.x import X\n",
            "a/x.py": "from a import y\nimport os\n\nX = y.Y\n",  # the submodule, not a/__init__
            "a/y.py": "from . import z\nY = 1\n",
            "a/z.py": "import a.w\n",
            "a/w.py": "",
        },
    )
    assert cycle_report(root, "a") == []


def test_a_cycle_is_named_with_the_imports_that_close_it(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "a/x.py": "import os\nimport a.y\n",
            "a/y.py": "from a import z\n",
            "a/z.py": "from .x import f\n",
            "a/w.py": "import a.x\n",  # imports into the cycle, not part of it
        },
    )
    [report] = cycle_report(root, "a")
    assert report.splitlines()[:2] == [
        "cycle among a.x, a.y, a.z",
        "  e.g. a.x -> a.y -> a.z -> a.x",
    ]
    assert "a/x.py:2: a.x -> a.y" in report and "a/z.py:1: a.z -> a.x" in report


def test_a_cycle_through_a_function_level_or_type_checking_import_is_found(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "a/x.py": "import a.y\n",
            "a/y.py": "def later():\n    from a.x import f\n",
            "a/p.py": "import typing\nif typing.TYPE_CHECKING:\n    from a.q import Q\n",
            "a/q.py": "from a.p import P\n",
        },
    )
    modules, imports = read_imports(root, ("a",))
    assert cycles(import_graph(modules, imports)) == [["a.p", "a.q"], ["a.x", "a.y"]]


def test_a_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "a/__init__.py": "from .b.run import go\n",
            "a/b/__init__.py": "",
            "a/b/run.py": "from .. import helper\n",  # a name in a/__init__.py, not a module
        },
    )
    modules, imports = read_imports(root, ("a",))
    assert cycles(import_graph(modules, imports)) == [["a", "a.b.run"]]


def test_training_importing_bot_and_discord_outside_bot_discord_are_found(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "bot/__init__.py": "",
            "bot/discord/__init__.py": "import discord\n",
            "bot/service.py": "from . import discord\n",  # bot.discord, not the library
            "bot/cli.py": "def run():\n    from discord import ui\n",
            "training/__init__.py": "",
            "training/fit.py": "from bot.service import Service\n",
        },
    )
    assert [i.source for i in imports_of(tmp_path, "bot", ("training",))] == ["training.fit"]
    found = imports_of(tmp_path, "discord", ("bot", "training"))
    assert [i.source for i in found] == ["bot.cli", "bot.discord"]
