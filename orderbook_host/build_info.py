"""Which build of the matching engine this process imported: a mypyc build
(`scripts/build_engine.py`) imports as a `.so` extension module, the sources as `.py`."""

from __future__ import annotations

import orderbook_host.engine.exchange as _exchange

ENGINE_FILE: str = _exchange.__file__ or ""


def engine_build() -> str:
    """ "mypyc" or "pure Python"."""
    return "mypyc" if ENGINE_FILE.endswith(".so") else "pure Python"
