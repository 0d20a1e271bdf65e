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


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "root")
def test_flags_show_no_value_type(path: tuple[str, ...]) -> None:
    """A flag takes no value, so its help line shows no type (Typer would print <bool>)."""
    text = help_text(path)
    assert "<bool>" not in text
    if not path:
        verbose = next(line for line in text.splitlines() if "--verbose" in line)
        assert "<int>" not in verbose


def test_no_command_option_means_something_else_at_the_root() -> None:
    """`killsync -q queue` and `killsync queue --quiet` must not be two different things:
    a visible option of a command never reuses a name of the root's options."""
    import typer

    from killcli.cli.app import app

    root = typer.main.get_command(app)
    root_names = {name for p in root.params for name in p.opts} - {"--help", "-h"}
    clashes = []
    for path in COMMANDS:
        command = root
        for name in path:
            command = command.get_command(None, name)  # type: ignore[attr-defined]
        for param in command.params:
            if not getattr(param, "hidden", False):
                clashes += [(path, name) for name in set(param.opts) & root_names]
    assert clashes == []
