"""What bench/bench_fleet.py prints: one line per finished run, then the tables."""

from __future__ import annotations

import json
import sys
from typing import Any


def progress(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per finished run on stderr, so a long bench shows what it found so far."""
    for r in results:
        keys = (
            "egress",
            "workers",
            "wall_s",
            "ratio",
            "round_s",
            "complete",
            "429",
            "bodies_fetched_twice",
            "extra_rounds",
            "complete_after_s",
        )
        shown = ", ".join(f"{k} {r[k]}" for k in keys if k in r)
        print(f"bench_fleet:   {r['mode']} {r['database']}: {shown}", file=sys.stderr, flush=True)
    return results


def _ratio(r: dict[str, Any]) -> str:
    return "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"


def print_sync(results: list[dict[str, Any]]) -> None:
    print(
        f"{'mode':<9}{'db':<11}{'egress':<12}{'wrk':>4}{'wall s':>8}{'bound s':>8}{'ratio':>7}"
        f"{'429':>5}{'420':>5}{'twice':>6}{'bodies':>7}{'complete':>9}{'speedup':>8}  exits"
    )
    for r in results:
        speedup = r.get("speedup_vs_one_address")
        print(
            f"{r['mode']:<9}{r['database']:<11}{r.get('egress', '-'):<12}{r['workers']:>4}"
            f"{r['wall_s']:>8.2f}{r['lower_bound_s']:>8.2f}{_ratio(r):>7}{r['429']:>5}"
            f"{r['420']:>5}{r['bodies_fetched_twice']:>6}{r['bodies_200']:>7}"
            f"{'yes' if r['complete'] else 'NO':>9}{'-' if speedup is None else speedup:>8}"
            f"  {r['exit_codes']}"
        )
        print(
            f"  requests by status: {json.dumps(r['requests_by_status'])}; queue "
            f"{r['queue_s']} s; load {r['load_1m']:.1f}"
        )
        if r["mode"] == "egress":
            print(
                f"  one-address bound {r['one_address_bound_s']} s; killmail tokens by "
                f"address: {json.dumps(r['killmail_tokens_by_address'])}"
            )
        for name, tail in r.get("failures", {}).items():
            print(f"  {name} failed:\n    " + tail.replace("\n", "\n    "))


def print_sigkill(results: list[dict[str, Any]]) -> None:
    print(
        f"{'mode':<9}{'db':<11}{'wrk':>4}{'killed at':>14}{'round s':>9}{'complete':>9}"
        f"{'missing km/links':>17}{'more rounds':>12}{'complete after s':>17}"
    )
    for r in results:
        if not r["killed"]:
            print(
                f"{'sigkill':<9}{r['database']:<11}{r['workers']:>4}  not killed: the "
                f"workers ended before {r['kill_at_bodies']} bodies"
            )
            continue
        at = f"{r['bodies_at_kill']}b/{r['killed_after_s']:.1f}s"
        after = r.get("complete_after_s", r["round_s"] if r["complete"] else None)
        print(
            f"{'sigkill':<9}{r['database']:<11}{r['workers']:>4}{at:>14}{r['round_s']:>9.2f}"
            f"{'yes' if r['complete'] else 'NO':>9}"
            f"{str(r['missing_killmails']) + '/' + str(r['missing_links']):>17}"
            f"{r.get('extra_rounds', 0):>12}{'never' if after is None else after:>17}"
        )
        print(
            f"  the round's own queue + worker: {r.get('round_own_s', '-')} s; 429 {r['429']}, "
            f"420 {r['420']}, bodies twice {r['bodies_fetched_twice']}, "
            f"exits {r['exit_codes']}, load {r['load_1m']:.1f}, requests by status: "
            f"{json.dumps(r['requests_by_status'])}"
        )
