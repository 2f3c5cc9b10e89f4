"""`python -m devstack up` runs the whole product locally."""

from __future__ import annotations

import argparse
import logging

from emlib.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start PostgreSQL, every service and demo data; Ctrl-C stops all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "up":
        from devstack.supervisor import run

        return run(get_settings())
    return 2
