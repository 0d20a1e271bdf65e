"""The product and its simulator share no code (docs/architecture.md).

``killsim`` imports nothing from ``killcli``; in ``killcli`` only ``killsync sim`` and
``killsync demo`` import ``killsim``, and only inside functions, so that every other
command (``--version`` included) starts without it. Read from the source with ``ast``:
an import added anywhere, even in a function nobody calls, fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from killcli.cli.sim import SCENARIO_NAMES
from killsim import Scenario
from tests.conftest import REPO

#: The killcli modules that may use the simulator, lazily.
SIMULATOR_USERS = {"killcli/cli/sim.py", "killcli/demo.py"}


@dataclass(frozen=True)
class Import:
    """One import statement: the top-level package it names and where it runs."""

    file: str
    line: int
    package: str
    lazy: bool  # inside a function (or only for type checkers): not run at import time

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.package}"


class _Imports(ast.NodeVisitor):
    def __init__(self, file: str) -> None:
        self.file = file
        self.depth = 0  # functions and `if TYPE_CHECKING:` blocks around the node
        self.found: list[Import] = []

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._nested(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._nested(node)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self.depth += 1
        for child in node.body:
            self.visit(child)
        self.depth -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node, node.module)

    def _add(self, node: ast.stmt, module: str) -> None:
        package = module.split(".", maxsplit=1)[0]
        self.found.append(Import(self.file, node.lineno, package, lazy=self.depth > 0))


def imports_of(package: str) -> Iterator[Import]:
    """Every absolute import in the package's source files."""
    for path in sorted((REPO / package).rglob("*.py")):
        file = path.relative_to(REPO).as_posix()
        visitor = _Imports(file)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=file))
        yield from visitor.found


def test_the_simulator_imports_nothing_from_killsync() -> None:
    found = list(imports_of("killsim"))
    assert len(found) > 50  # the scan does see the simulator's imports
    assert [str(i) for i in found if i.package == "killcli"] == []


def test_only_sim_and_demo_import_the_simulator_and_only_lazily() -> None:
    users = [i for i in imports_of("killcli") if i.package == "killsim"]
    assert {i.file for i in users} == SIMULATOR_USERS
    assert [str(i) for i in users if not i.lazy] == []


def test_killsync_starts_without_the_simulator() -> None:
    code = (
        "import sys, killcli.cli.app, killcli.demo; "
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'killsim'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_help_names_every_scenario() -> None:
    assert Scenario.names() == SCENARIO_NAMES
