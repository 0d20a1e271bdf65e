"""`killsync login` end to end: PKCE, the one-shot callback, state checks, timeouts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx

from tests.conftest import REPO, sim_environ

URL_LINE = re.compile(r"Open this URL to log in: (\S+)")


def start_login(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "killcli", "login", "--no-browser", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = URL_LINE.search(line)
    assert match, line
    return proc, match.group(1)


def login_env(sim: Any, tmp_path: Path) -> dict[str, str]:
    env = sim_environ(sim, tmp_path / "home", f"sqlite:///{tmp_path / 'k.db'}")
    env["KILLSYNC_CALLBACK_URL"] = "http://127.0.0.1:0/callback"  # any free port
    return env


def test_login_stores_the_character(start_sim: Any, tmp_path: Path) -> None:
    sim = start_sim("smoke")
    character = sim.world.characters[1]
    sim.set_login_character(character.character_id)
    env = login_env(sim, tmp_path)
    proc, url = start_login(env)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["esi-killmails.read_killmails.v1"]
    page = httpx.get(url, follow_redirects=True, timeout=10)  # the "browser"
    assert page.status_code == 200
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"({character.character_id})" in err
    listed = subprocess.run(
        [sys.executable, "-m", "killcli", "users", "list", "--json"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(listed.stdout)["data"]
    assert [r["character_id"] for r in rows] == [character.character_id]


def test_login_corporation_asks_for_the_corporation_scopes(start_sim: Any, tmp_path: Path) -> None:
    sim = start_sim("smoke", characters=3, corporations=1)
    [(corporation_id, corporation)] = sim.world.corporations().items()
    director = corporation.director_ids[0]
    sim.set_login_character(director)
    env = login_env(sim, tmp_path)
    proc, url = start_login(env, "--corporation")
    [scope] = parse_qs(urlsplit(url).query)["scope"]
    assert scope.split() == [
        "esi-killmails.read_killmails.v1",
        "esi-killmails.read_corporation_killmails.v1",
        "esi-characters.read_corporation_roles.v1",
    ]
    assert httpx.get(url, follow_redirects=True, timeout=10).status_code == 200
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "corporation now tracked" in err
    listed = subprocess.run(
        [sys.executable, "-m", "killcli", "corporations", "list", "--json"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    [row] = json.loads(listed.stdout)["data"]
    assert (row["corporation_id"], row["directors_usable"], row["status"]) == (
        corporation_id,
        1,
        "active",
    )


def test_forged_callbacks_are_ignored_until_the_real_one(start_sim: Any, tmp_path: Path) -> None:
    sim = start_sim("smoke")
    env = login_env(sim, tmp_path)
    proc, url = start_login(env)
    redirect = httpx.get(url, follow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    for forged in ({**params, "state": "forged"}, {"code": params["code"]}):
        page = httpx.get(urlunsplit(location._replace(query=urlencode(forged))), timeout=10)
        assert page.status_code == 400
        assert "ignored" in page.text
        assert proc.poll() is None  # still waiting for the real callback
    page = httpx.get(urlunsplit(location), timeout=10)
    assert page.status_code == 200
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"({sim.world.character_ids[0]})" in err


def test_login_times_out_cleanly(start_sim: Any, tmp_path: Path) -> None:
    sim = start_sim("smoke")
    started = time.monotonic()
    proc, _ = start_login(login_env(sim, tmp_path), "--timeout", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 5
    assert "timed out" in err
    assert time.monotonic() - started < 20
