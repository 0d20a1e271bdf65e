"""The CLI reference (`docs/cli.md`), generated from the commands' own `--help`.

    .venv/bin/python -m killcli.cli.reference > docs/cli.md

A test regenerates it and fails when the committed file is stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from killcli.cli.app import app


def iter_commands(group: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path, depth first: ("db", "upgrade"), ("demo",), ..."""
    group = group or typer.main.get_command(app)
    for name in sorted(group.list_commands(None)):
        command = group.get_command(None, name)
        if hasattr(command, "list_commands"):
            yield from iter_commands(command, (*path, name))
        else:
            yield (*path, name)


def help_text(path: tuple[str, ...]) -> str:
    from typer.testing import CliRunner  # noqa: PLC0415

    result = CliRunner().invoke(
        app,
        [*path, "--help"],
        prog_name="killsync",
        env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"},
    )
    return "\n".join(line.rstrip() for line in result.output.splitlines()).strip()


def render() -> str:
    parts = [
        "# killsync command reference",
        "",
        "Generated from `--help` by `python -m killcli.cli.reference`; do not edit.",
        "",
    ]
    for path in iter_commands():
        parts += [f"## killsync {' '.join(path)}", "", "```text", help_text(path), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
