"""Hostile names and error bodies never drive the terminal (issue 10, finding 5).

The simulator serves names and error bodies full of terminal controls (OSC window titles,
BEL, screen clears, 8-bit CSI, CR, right-to-left overrides, hyperlinks); real `killsync`
processes run on a pseudo-terminal against it. Their output must carry none of the
injected sequences, show the visible replacements instead, and ``--json`` must keep the
exact original strings.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.progress import BarColumn, Progress
from rich.table import Table
from rich.text import Text

from killcli.console import PlainTextColumn, SafeConsole, SafeLogFormatter, make_console
from killcli.events.render import discord_body, kill_line, slack_body
from killcli.textsafe import dumps_for_terminal, sanitize
from killsim import FaultPlan, SimServer
from killsim.names import HOSTILE_NAMES, HOSTILE_SUFFIX
from tests.conftest import REPO, sim_environ
from tests.events.conftest import make_payload

HOSTILE_ERROR = "boom\x1b]0;err-title\x07\x9b2J\u202erev\rover\nnext\x1b[2J"
#: Byte-level traces of the injected sequences (the UTF-8 of C1 and bidi characters).
INJECTED = (
    "\x1b]",
    "\x07",
    "\x9b",
    "\x9c",
    "\u202e",
    "\u202c",
    "\u200e",
    "\u2066",
    "\u2069",
    "\x1b[2J",
    "\x1b[H",
    "\x1b[K",
    "Corp\rOverwrite",
    "rev\rover",
    "boom\x1b",
)
#: The escape sequences Rich itself writes: styles, erase line, cursor up, cursor on/off.
RICH_OWN_ESCAPE = re.compile(r"\x1b\[(?:[0-9;]*[mKA]|\?25[lh])")
WIDE = struct.pack("HHHH", 50, 250, 0, 0)


@dataclasses.dataclass(frozen=True)
class Run:
    code: int
    text: str


def run_on_pty(env: dict[str, str], *args: str, stdin: str = "", timeout_s: float = 90) -> Run:
    """`killsync ARGS` with stdout and stderr on a 250-column pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, WIDE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "killcli", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    assert proc.stdin is not None
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    code = proc.wait(timeout=timeout_s)
    return Run(code, b"".join(chunks).decode("utf-8"))  # strict: never a broken byte


def run_piped(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "killcli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def assert_terminal_safe(run: Run) -> None:
    """No injected sequence; every ESC is one Rich writes; CR only before LF or an erase."""
    for trace in INJECTED:
        assert trace not in run.text, (trace, run.text)
    leftover = RICH_OWN_ESCAPE.sub("", run.text)
    assert "\x1b" not in leftover, leftover
    assert not re.search(r"\r(?!\n|\x1b\[2K)", run.text), run.text
    assert not re.search("[\x00-\x08\x0b-\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]", run.text)


@dataclasses.dataclass(frozen=True)
class HostileWorld:
    sim: SimServer
    env: dict[str, str]
    ids: list[int]


@pytest.fixture
def hostile(start_sim: Callable[..., SimServer], tmp_path: Path) -> HostileWorld:
    """A smoke world with hostile names and error bodies; three characters added."""
    sim = start_sim("smoke", hostile_names=True, faults=FaultPlan(error_message=HOSTILE_ERROR))
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KILLSYNC_")},
        **sim_environ(sim, home, f"sqlite:///{tmp_path / 'k.db'}"),
    }
    assert run_piped(env, "db", "upgrade").returncode == 0
    ids = [c.character_id for c in sim.world.characters[:3]]
    for cid in ids:
        added = run_on_pty(
            env, "users", "add", "--refresh-token", "-", stdin=sim.issue_refresh_token(cid)
        )
        assert added.code == 0, added.text
        assert_terminal_safe(added)
    return HostileWorld(sim, env, ids)


def test_names_are_hostile_in_the_simulator(hostile: HostileWorld) -> None:
    names = [c.name for c in hostile.sim.world.characters[:2]]
    assert names == list(HOSTILE_NAMES[:2])


def test_commands_on_a_terminal_show_names_visibly_and_obey_none(hostile: HostileWorld) -> None:
    env, ids = hostile.env, hostile.ids
    title, wipe = (sanitize(name) for name in HOSTILE_NAMES[:2])
    assert title == "Evil␛]0;pwned␇ [b]Title[/b]"  # markup stays literal too
    synced = run_on_pty(env, "sync-user", str(ids[0]))
    assert synced.code == 0, synced.text
    assert title in synced.text  # the summary table's title
    for args, expected in [
        (("users", "list"), [title, wipe]),
        (("stats",), [title, wipe]),
        (("queue", "--dry-run"), [wipe]),
        (("refresh-token", "--all"), [title, wipe]),
    ]:
        run = run_on_pty(env, *args)
        assert run.code == 0, (args, run.text)
        assert_terminal_safe(run)
        for visible in expected:
            assert visible in run.text, (args, visible, run.text)
    assert_terminal_safe(synced)


def test_the_worker_and_watch_show_hostile_type_and_alliance_names_visibly(
    hostile: HostileWorld,
) -> None:
    env = hostile.env
    queued = run_on_pty(env, "queue")
    worked = run_on_pty(env, "worker", "--drain")
    watched = run_on_pty(env, "watch", "--from-start", "--max-events", "30", "--timeout", "20")
    for run in (queued, worked, watched):
        assert run.code == 0, run.text
        assert_terminal_safe(run)
    assert sanitize(HOSTILE_NAMES[0]) in worked.text
    assert "␛]8;;https://evil.invalid/␛\\link" in watched.text  # a ship's name, visibly


def test_error_bodies_reach_error_lines_and_last_error_sanitised(hostile: HostileWorld) -> None:
    sim, env, ids = hostile.sim, hostile.env, hostile.ids
    for killmail_id in list(sim.world.ground_truth()[ids[1]])[:2]:
        sim.faults.fail_body(killmail_id, status=422, times=20)
    partial = run_on_pty(env, "sync-user", str(ids[1]))
    assert partial.code == 3, partial.text
    assert "pending:" in partial.text
    sim.faults.fail_list(ids[2], status=403, times=20)
    failed = run_on_pty(env, "sync-user", str(ids[2]))
    assert failed.code != 0
    assert "killsync: error:" in failed.text
    listed = run_on_pty(env, "users", "list")
    sim.faults.fail_sso(status=400, times=20)
    refused = run_on_pty(env, "refresh-token", "--all")
    assert refused.code != 0
    assert listed.code == 0, listed.text
    for run in (partial, failed, listed, refused):
        assert_terminal_safe(run)
    for run in (partial, failed, refused):  # `users list` cuts last_error before the body
        assert "boom␛]0;err-title␇\\u009b2J\\u202erev␍over␊next␛[2J" in run.text, run.text


def _names_in(data: Any) -> set[str]:
    """Every ``name`` value anywhere in a JSON document."""
    if isinstance(data, dict):
        found = {data["name"]} if isinstance(data.get("name"), str) else set()
        return found.union(*(_names_in(v) for v in data.values()))
    if isinstance(data, list):
        return set().union(*(_names_in(v) for v in data))
    return set()


def test_json_output_keeps_the_exact_strings_and_escapes_them(hostile: HostileWorld) -> None:
    env, ids = hostile.env, hostile.ids
    assert run_piped(env, "sync-user", str(ids[0]), "--no-progress").returncode == 0
    both, due = set(HOSTILE_NAMES[:2]), {HOSTILE_NAMES[1]}  # the first one just synced
    for args, names in [
        (("users", "list"), both),
        (("stats",), both),
        (("queue", "--dry-run"), due),
        (("refresh-token", "--all"), both),
    ]:
        result = run_piped(env, *args, "--json")
        assert result.returncode == 0, result.stderr
        assert names <= _names_in(json.loads(result.stdout)), args
        assert not re.search(
            "[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", result.stdout
        ), args
    on_terminal = run_on_pty(env, "users", "list", "--json")
    assert_terminal_safe(on_terminal)


# -- the sanitiser, the console and webhook text, in process ----------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x00\x01\x1b\x1f", "␀␁␛␟"),
        ("a\x07b", "a␇b"),
        ("tab\there", "tab␉here"),
        ("cr\rlf\n", "cr␍lf␊"),
        ("del\x7f", "del␡"),
        ("\x80\x9b\x9c\x9f", "\\u0080\\u009b\\u009c\\u009f"),
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("lone \ud800", "lone \\ud800"),
        ("[b]Boss[/b] Ünïcødé ☠ 名前 Zoë", "[b]Boss[/b] Ünïcødé ☠ 名前 Zoë"),
    ],
)
def test_sanitize_replaces_every_class_visibly(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown
    assert sanitize(shown) == shown  # idempotent: safe text is left alone


def test_sanitize_keeps_only_the_programs_newlines_when_asked() -> None:
    assert sanitize("one\ntwo\r", keep_newlines=True) == "one\ntwo␍"


def test_json_for_terminals_is_exact_json() -> None:
    data = {"name": '\x1b]0;t\x07\x9b\u202e\ud800\x7f\u2028 \\ "q" Zoë'}
    text = dumps_for_terminal(data)
    assert json.loads(text) == data
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202e\u2028\ud800]", text)
    assert "Zoë" in text  # readable non-ASCII stays as it is


def _render(renderable: object) -> str:
    console = make_console(stderr=False)
    assert isinstance(console, SafeConsole)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def test_console_sanitises_strings_tables_and_hand_built_text() -> None:
    table = Table("name", title=HOSTILE_NAMES[4])
    table.add_row(HOSTILE_NAMES[0])
    shown = _render(table) + _render(Text(HOSTILE_NAMES[3] + HOSTILE_SUFFIX))
    shown += _render(f"error: {HOSTILE_ERROR}")
    assert "Evil␛]0;pwned␇ [b]Title[/b]" in shown and "Corp␍Overwrite␛[K" in shown
    assert "Bidi \\u202eSpoof\\u202c␛]8;;" in shown and "boom␛]0;err-title␇" in shown
    for trace in INJECTED:
        assert trace not in shown


def test_progress_columns_sanitise_descriptions() -> None:
    console = make_console(stderr=False)
    progress = Progress(PlainTextColumn("{task.description}"), BarColumn(), console=console)
    task = progress.add_task(HOSTILE_NAMES[1] + " [/bad]", total=2)
    shown = str(progress.columns[0].render(progress.tasks[task]))  # type: ignore[union-attr]
    assert shown == "Wipe␛[2J␛[H Screen [/bad]"  # no markup error, no control


def test_webhook_and_watch_text_show_hostile_names_visibly() -> None:
    payload = make_payload(7, datetime.now(UTC), victim=HOSTILE_NAMES[0], final=HOSTILE_NAMES[3])
    line = kill_line(payload)
    slack = slack_body(payload)["text"]
    discord = json.dumps(discord_body(payload), ensure_ascii=False)
    for text in (line, slack, discord):
        for trace in INJECTED:
            assert trace not in text
        assert "\\u202e" in text or "\\\\u202e" in text
    assert "Evil␛]0;pwned␇ [b]Title[/b]" in line
    assert "Evil␛\\]0;pwned␇ \\[b\\]Title\\[/b\\]" in discord_body(payload)["content"]


def test_log_lines_are_sanitised() -> None:
    record = logging.LogRecord(
        "killcli.queue", logging.WARNING, __file__, 1, "job %s failed: %s", (7, HOSTILE_ERROR), None
    )
    line = SafeLogFormatter("%(message)s").format(record)
    assert line == f"job 7 failed: {sanitize(HOSTILE_ERROR, keep_newlines=True)}"
    assert "\x1b" not in line and "\x07" not in line


def test_no_command_builds_its_own_console_or_markup_column() -> None:
    """Every console is a SafeConsole from `make_console`, every text column plain."""
    offenders = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in sorted((REPO / "killcli").rglob("*.py"))
        if path.name != "console.py"
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"\b(?:Console|TextColumn)\(", line)
    ]
    assert offenders == []


def test_kills_and_show_on_a_terminal_show_hostile_names_visibly(hostile: HostileWorld) -> None:
    env, ids = hostile.env, hostile.ids
    assert run_piped(env, "sync-user", str(ids[0]), "--no-progress").returncode == 0
    listed = json.loads(run_piped(env, "kills", "--json").stdout)["data"]["kills"]
    killmail_id = str(listed[0]["killmail_id"])
    link = "␛]8;;https://evil.invalid/␛\\link"  # every type name ends in a hyperlink
    for args in (
        ("kills",),
        ("kills", "--character", str(ids[0])),
        ("show", killmail_id),
        ("show", killmail_id, "--attackers", "1000"),
    ):
        run = run_on_pty(env, *args)
        assert run.code == 0, (args, run.text)
        assert_terminal_safe(run)
        assert link in run.text, (args, run.text)
    everyone = run_on_pty(env, "kills", "--limit", "10000")
    assert any(sanitize(name) in everyone.text for name in HOSTILE_NAMES[:2])
    shown = run_piped(env, "show", killmail_id, "--json")
    assert shown.returncode == 0, shown.stderr
    names = set(json.loads(shown.stdout)["data"]["names"].values())
    assert any(name and name.endswith(HOSTILE_SUFFIX) for name in names)  # exact in JSON
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", shown.stdout)
