"""The `pgkeeper` command. Each subcommand lives in its own module with `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from ..errors import PgkeeperError, PlanError
from ..local.invoke import Stopped

COMMANDS = ["invoke", "plan", "backups", "restore", "serve", "sign", "trigger", "health", "status"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgkeeper", description="Serverless maintenance for PostgreSQL.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"pgkeeper.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PlanError as exc:
        print(f"pgkeeper: {exc}", file=sys.stderr)
        return 2
    except PgkeeperError as exc:
        print(f"pgkeeper: {exc.reason}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pgkeeper: interrupted", file=sys.stderr)
        return 130
    except Stopped as exc:
        print(f"pgkeeper: {exc}; what it had started was stopped with it", file=sys.stderr)
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
