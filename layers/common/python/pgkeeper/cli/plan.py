"""`pgkeeper plan check`: validate a plan file, then against a live database, before deploying it."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..db import Database
from ..plan import PLAN_ENV, load_plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="work with plan files")
    psub = p.add_subparsers(dest="plan_command", required=True, metavar="SUBCOMMAND")
    check = psub.add_parser("check", help="validate a plan file and check it against the database")
    check.add_argument("--plan", default=os.environ.get(PLAN_ENV), help=f"plan file (default ${PLAN_ENV})")
    check.add_argument("--offline", action="store_true", help="validate the file only; no database")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from ..jobs import all_jobs

    plan = load_plan(args.plan)
    print(f"plan {args.plan}: valid", file=sys.stderr)
    if args.offline:
        return 0
    db = Database.from_settings(plan.database, "plan-check")
    problems: list[str] = []
    try:
        conn = db.conn
        for spec in all_jobs().values():
            if spec.check is not None:
                problems += spec.check(plan, conn)
    finally:
        db.close()
    if problems:
        print(json.dumps({"database": db.where, "problems": problems}, indent=2))
        print(f"plan {args.plan}: {len(problems)} problem(s) against {db.where}", file=sys.stderr)
        return 1
    print(f"plan {args.plan}: matches {db.where}", file=sys.stderr)
    return 0
