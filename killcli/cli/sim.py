"""`killsync sim`: run the ESI + EVE SSO simulator."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from killcli.cli import params
from killcli.cli.context import examples, print_json
from killcli.console import make_console
from killcli.errors import InputError, UsageError
from killcli.signals import stop_on_signals
from killcli.textsafe import sanitize

if TYPE_CHECKING:
    from killsim.server import Provisioned

#: ``killsim.Scenario.names()``, spelled out so that ``--help`` (and every other command)
#: does not import the simulator; tests/test_layout.py keeps the two equal.
SCENARIO_NAMES = (
    "smoke",
    "fleet",
    "incremental",
    "chaos",
    "ratelimit",
    "huge",
    "corporation",
    "market",
)

app = typer.Typer(
    name="sim",
    help="Run the ESI + EVE SSO simulator that tests, benchmarks and the demo use.",
    no_args_is_help=True,
    add_completion=False,
    epilog=examples("killsync sim serve", "killsync sim serve --scenario fleet --port 8080"),
)


@app.callback()
def sim() -> None:
    """Run the ESI + EVE SSO simulator that tests, benchmarks and the demo use."""


@app.command(
    "serve",
    epilog=examples(
        "killsync sim serve",
        "killsync sim serve --scenario chaos --seed 7 --port 8080",
        "killsync sim serve --scenario my-world.toml --tokens-file tokens.json",
    ),
)
def serve(
    port: Annotated[
        int,
        typer.Option(
            "--port", help="TCP port on 127.0.0.1 (0: any free).", parser=params.port_or_any
        ),
    ] = 0,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario", help=f"Scenario name ({', '.join(SCENARIO_NAMES)}) or TOML file."
        ),
    ] = "smoke",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the generated world.", show_default=False)
    ] = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file",
            help="Write URLs, client and refresh tokens to this JSON file instead of stdout.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the details as JSON.")] = False,
) -> None:
    """Serve ESI at / and the SSO at /sso until Ctrl-C or SIGTERM.

    Prints the ESI URL, the SSO URL, the client id and a refresh token for every
    simulated character (lines KEY=value, then id, token and name per character).
    """
    from killsim import Scenario, SimServer  # noqa: PLC0415 - only this command needs it

    console = make_console()
    with _simulator_errors():
        chosen = Scenario.load(scenario, seed=seed)
    # Handlers first: whoever reads the printed URLs may signal us right away.
    with stop_on_signals() as stop, _simulator_errors(), SimServer(chosen, port=port) as sim:
        details = sim.provision()
        if tokens_file is not None:
            _write_tokens(tokens_file, details)
            console.print(f"refresh tokens written to {tokens_file}")
        _print_details(details, as_json=as_json, with_tokens=tokens_file is None)
        console.print(f"simulating {chosen.describe()}")
        console.print(f"ESI at {sim.esi_url}, SSO at {sim.sso_url}; Ctrl-C to stop")
        stop.wait()
    console.print("simulator stopped")


@contextmanager
def _simulator_errors() -> Iterator[None]:
    """The simulator's errors as killsync's: one line, exit code 2."""
    from killsim.errors import ListenError, ScenarioError, ScenarioFileError  # noqa: PLC0415

    try:
        yield
    except ScenarioFileError as exc:
        raise InputError(str(exc)) from exc
    except (ScenarioError, ListenError) as exc:
        raise UsageError(str(exc)) from exc


def _print_details(details: Provisioned, *, as_json: bool, with_tokens: bool) -> None:
    data = details.to_dict()
    if not with_tokens:
        data["characters"] = [
            {k: v for k, v in c.items() if k != "refresh_token"} for c in data["characters"]
        ]
    if as_json:
        print_json("sim.serve", data)
    else:
        lines = [
            f"KILLSYNC_ESI_BASE_URL={details.esi_url}",
            f"KILLSYNC_SSO_BASE_URL={details.sso_url}",
            f"KILLSYNC_CLIENT_ID={details.client_id}",
        ]
        if details.client_secret is not None:
            lines.append(f"KILLSYNC_CLIENT_SECRET={details.client_secret}")
        for char in data["characters"]:
            token = char.get("refresh_token", "-")
            lines.append(f"{char['character_id']}\t{token}\t{sanitize(char['name'])}")
        typer.echo("\n".join(lines))
    sys.stdout.flush()  # a supervising process reads the URLs before we block


def _write_tokens(path: Path, details: Provisioned) -> None:
    """The refresh tokens, in a new file of mode 0600 (atomic; never through a planted link)."""
    from killcli.keyfile import write_private_file  # noqa: PLC0415 - keep `--help` fast

    write_private_file(path, json.dumps(details.to_dict(), ensure_ascii=False, indent=2) + "\n")
