"""Child-process hygiene shared by the local supervisor and the tests."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """For `Popen(preexec_fn=...)`: the kernel sends the child `sig` when its parent dies,
    so a killed supervisor or test run leaves no orphan server. Only calls prctl, which is
    safe between fork and exec."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)
