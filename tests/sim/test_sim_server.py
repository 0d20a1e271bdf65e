"""The server as a whole: clean stop, statistics, concurrency, and `killsync sim serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx

from killsim import FaultPlan, Scenario, SigningKeys, SimServer
from tests.sim.sim_helpers import CLIENT_HEADERS, REPO, SimFactory, body_url

BODY = "/killmails/{killmail_id}/{killmail_hash}"


def test_stop_closes_keep_alive_connections_and_threads(keys: SigningKeys) -> None:
    threads_before = threading.active_count()
    sim = SimServer(Scenario.named("smoke"), keys=keys).start()
    client = httpx.Client(headers=CLIENT_HEADERS, timeout=5)
    try:
        assert client.get(f"{sim.esi_url}/status").status_code == 200  # connection kept open
        started = time.monotonic()
        sim.stop()
        assert time.monotonic() - started < 2
        assert threading.active_count() == threads_before, threading.enumerate()
        sim.stop()  # stopping twice is harmless
    finally:
        client.close()


def test_statistics(make_sim: SimFactory) -> None:
    sim = make_sim(replace(Scenario.named("smoke"), faults=FaultPlan(latency_ms=100)))
    ids = sorted(sim.world.killmails)[:8]
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda k: client.get(body_url(sim, k)).status_code, ids))
        client.get(body_url(sim, ids[0]), headers=CLIENT_HEADERS)
    assert statuses == [200] * 8
    snap = sim.stats.snapshot()
    assert snap.count(BODY, 200) == 9 and snap.total == 9
    assert snap.body_fetches[ids[0]] == 2 and snap.duplicate_body_fetches == 1
    assert snap.peak_concurrent >= 4
    assert snap.tokens_spent_in("killmail") == 18
    assert snap.without_compatibility_date == 8  # only the last request sent the header
    data = snap.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["requests"][BODY] == {"200": 9}
    sim.stats.reset()
    assert sim.stats.snapshot().total == 0


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "killcli", "sim", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _read_until_tokens(proc: subprocess.Popen[str], characters: int) -> list[str]:
    assert proc.stdout is not None
    lines = [proc.stdout.readline().rstrip("\n") for _ in range(4 + characters)]
    assert all(lines), f"serve printed too little: {lines}"
    return lines


def test_serve_subprocess_answers_and_stops_on_sigterm() -> None:
    proc = _serve("--port", "0", "--scenario", "smoke", "--seed", "3")
    try:
        lines = _read_until_tokens(proc, 4)
        values = dict(line.split("=", 1) for line in lines[:4])
        esi = values["KILLSYNC_ESI_BASE_URL"]
        assert values["KILLSYNC_SSO_BASE_URL"] == esi + "/sso"
        with httpx.Client(headers=CLIENT_HEADERS, timeout=10) as client:
            assert client.get(f"{esi}/status").status_code == 200
            char_id, token, name = lines[4].split("\t")
            refreshed = client.post(
                f"{esi}/sso/v2/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": token},
                auth=(values["KILLSYNC_CLIENT_ID"], values["KILLSYNC_CLIENT_SECRET"]),
            )
            assert refreshed.status_code == 200
        assert int(char_id) > 0 and name
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "simulator stopped" in err


def test_serve_writes_tokens_to_a_private_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    proc = _serve("--scenario", "incremental", "--tokens-file", str(tokens))
    try:
        lines = _read_until_tokens(proc, 3)
        assert all(line.split("\t")[1] == "-" for line in lines[4:])
        data = json.loads(tokens.read_text(encoding="utf-8"))
        assert len(data["characters"]) == 3 and all(c["refresh_token"] for c in data["characters"])
        assert tokens.stat().st_mode & 0o777 == 0o600
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


def test_serve_rejects_a_bad_scenario_in_one_line() -> None:
    proc = _serve("--scenario", "nope")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "killsync: error: unknown scenario 'nope' (one of smoke, fleet, incremental, "
        "chaos, ratelimit, huge, corporation, market)"
    ]
