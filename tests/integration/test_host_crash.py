"""SIGKILL a real orderbook host under load, restart it, and prove nothing acknowledged moved
(design §6 invariants 1-3). The trial logic and every check live in `bench.crash` (which runs
many more trials and prints a table); here 20 seeded trials must all come back clean.

CRASH_TRIALS / CRASH_SEED override the defaults (e.g. CRASH_TRIALS=200 for a long soak).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.crash import run

TRIALS = int(os.environ.get("CRASH_TRIALS", "20"))
SEED = int(os.environ.get("CRASH_SEED", "20261121"))


def test_kill_9_trials_lose_nothing_acknowledged(tmp_path: Path) -> None:
    results, final = run(tmp_path / "data", TRIALS, SEED, load_s=(0.15, 0.5))

    problems = [f"trial {r.trial} (kill after {r.kill_after_s}s): {p}" for r in results for p in r.problems]
    assert problems == [], "\n".join(problems[:30])
    assert final == []
    # the trials exercised what they claim to: load, fills, the WS feed, snapshot + tail
    assert len(results) == TRIALS
    assert sum(r.orders_acked for r in results) >= 5 * TRIALS
    assert sum(r.fills_acked for r in results) > 0
    assert sum(r.cancels_acked for r in results) > 0
    assert sum(r.envelopes_seen for r in results) > 0
    assert any(r.recovered_snapshot_seq > 0 and r.replayed_records > 0 for r in results)
