"""`python -m emlib.audit_cli verify`: check the audit log from outside the services.

Prints one JSON object `{"ok", "events", "head_hash", "first_bad_seq", "problem",
"detail"}` and exits 0 when the chain, every HMAC and the signed head check out, 1 when
they do not, 2 when it cannot run (no database URL, cannot connect).

The database URL comes from `--database-url`, else DATABASE_URL (via settings). An empty
DATABASE_URL means "the embedded server" to the services, but this tool does not start a
server of its own: start the stack (or the embedded server) and pass its URL. The key is
AUDIT_HMAC_KEY. `--anchor SEQ:HASH` (repeatable) compares against heads recorded earlier
outside the database, which is the only way to notice a rollback to an older state.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import psycopg

from emlib.audit import verify_database
from emlib.settings import get_settings


def _anchor(text: str) -> tuple[int, str]:
    seq_text, sep, hash_hex = text.partition(":")
    if not sep or not seq_text.isdigit() or len(hash_hex) != 64:
        raise argparse.ArgumentTypeError("anchor must be SEQ:HASH (64 hex)")
    return int(seq_text), hash_hex.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emlib.audit_cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="verify the hash chain, HMACs and the signed head")
    verify.add_argument("--database-url", default=None, help="defaults to DATABASE_URL")
    verify.add_argument("--anchor", action="append", type=_anchor, default=[], metavar="SEQ:HASH")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    url = args.database_url or settings.database_url
    if not url:
        print("audit verify: no database URL (pass --database-url or set DATABASE_URL)", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(url, connect_timeout=15) as conn:
            report = verify_database(conn, settings.audit_hmac_key, anchors=dict(args.anchor))
    except psycopg.OperationalError as exc:
        print(f"audit verify: cannot reach the database: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), sort_keys=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
