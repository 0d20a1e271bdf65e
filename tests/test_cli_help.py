"""Every command is documented: a summary, examples, and a current docs/cli.md."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from killcli.cli.reference import help_text, iter_commands, render
from tests.conftest import REPO, CliResult

COMMANDS = list(iter_commands())
REQUIRED = {
    ("queue",),
    ("worker",),
    ("sync-user",),
    ("refresh-token",),
    ("stats",),
    ("login",),
    ("export",),
    ("import",),
    ("demo",),
    ("users", "add"),
    ("users", "list"),
    ("db", "upgrade"),
    ("config", "show"),
    ("sim", "serve"),
}


def test_the_commands_operators_need_exist() -> None:
    assert set(COMMANDS) >= REQUIRED


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_a_summary_and_examples(path: tuple[str, ...]) -> None:
    text = help_text(path)
    assert f"Usage: killsync {' '.join(path)}" in text
    assert "Examples:" in text
    assert f"$ killsync {path[0]}" in text


def test_root_help_lists_every_command_with_a_summary(cli: Callable[..., CliResult]) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name in {p[0] for p in COMMANDS}:
        line = next((ln for ln in result.stdout.splitlines() if f" {name} " in ln), "")
        assert line.split(name, 1)[-1].strip(" │"), f"{name} has no summary"


def test_cli_reference_is_current() -> None:
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == render(), "run: python -m killcli.cli.reference > docs/cli.md"
