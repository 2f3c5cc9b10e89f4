"""kill -9 after an acknowledgement never loses the acknowledged record (design §6 invariant 1).

A child process appends from several threads under fsync=always and prints each seq only
after wait_durable returned; the parent SIGKILLs it mid-stream, reopens the log and checks
every printed seq is there with its payload. SIGKILL keeps the page cache, so this proves the
record reached the OS before the ack; `test_wal.py` checks with a sync recorder that an fsync
covering the record had finished before the ack.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orderbook_host.wal import WriteAheadLog

CHILD = textwrap.dedent(
    """
    import sys, threading
    from orderbook_host.wal import WriteAheadLog

    log = WriteAheadLog.open(sys.argv[1], segment_bytes=4096)
    out_lock = threading.Lock()

    def worker(name):
        index = 0
        while True:
            payload = f"{name}:{index}".encode() * 3
            # odd workers queue their records (append_deferred): the flush writes them
            seq = log.append_deferred(payload) if name % 2 else log.append(payload)
            log.wait_durable(seq)
            with out_lock:
                sys.stdout.write(f"{seq} {payload.decode()}\\n")
                sys.stdout.flush()
            index += 1

    for name in range(4):
        threading.Thread(target=worker, args=(name,), daemon=True).start()
    threading.Event().wait()
    """
)

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(directory: Path, acks_wanted: int) -> dict[int, bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    acked: dict[int, bytes] = {}
    buffer = b""
    deadline = time.monotonic() + 5
    try:
        while len(acked) < acks_wanted and time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 0.1)
            if not ready:
                assert child.poll() is None, "child died on its own"
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                seq, payload = line.split(b" ", 1)
                acked[int(seq)] = payload
    finally:
        child.send_signal(signal.SIGKILL)  # mid-stream: threads are appending and syncing
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return acked


@pytest.mark.parametrize("trial", range(3))
def test_acknowledged_records_survive_sigkill(tmp_path: Path, trial: int) -> None:
    acked = _run_and_kill(tmp_path, acks_wanted=300 + 200 * trial)
    assert len(acked) >= 300

    log = WriteAheadLog.open(tmp_path, segment_bytes=4096)
    try:
        replayed = dict(log.replay())
        assert list(replayed) == list(range(1, log.last_seq + 1))  # no gap, no repeat
        for seq, payload in acked.items():
            assert replayed.get(seq) == payload, seq
        # the restarted log continues the sequence
        assert log.append(b"after restart") == log.last_seq == max(replayed) + 1
    finally:
        log.close()
