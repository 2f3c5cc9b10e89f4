"""The serving process's GC policy (orderbook_host.host.tune_gc_for_serving), run in a child
process because it changes interpreter-wide state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import gc, json
    from orderbook_host.host import GC_THRESHOLDS, tune_gc_for_serving

    kept = [[i] for i in range(10_000)]          # long-lived state before serving
    tune_gc_for_serving()
    after_tuning = gc.get_freeze_count()
    later = [[i] for i in range(5_000)]          # promoted while serving
    garbage = []
    garbage.append(garbage)                      # a cycle that dies before the full collection
    del garbage
    collected = gc.collect(2)
    print(json.dumps({
        "thresholds": list(gc.get_threshold()),
        "expected": list(GC_THRESHOLDS),
        "frozen_after_tuning": after_tuning,
        "frozen_after_full": gc.get_freeze_count(),
        "collected": collected,
        "alive": len(kept) + len(later),
    }))
    """
)


def test_serving_gc_freezes_recovered_state_and_each_full_collections_survivors() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    assert result["thresholds"] == result["expected"]
    assert result["frozen_after_tuning"] >= 10_000  # the state alive at tuning time
    # the survivors of the full collection joined the permanent generation; the cycle did not
    assert result["frozen_after_full"] >= result["frozen_after_tuning"] + 5_000
    assert result["collected"] >= 1
    assert result["alive"] == 15_000
