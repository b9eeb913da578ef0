"""`pgkeeper health [--json]`: the health report of a database, readable or as JSON.

Without a plan file it uses the default plan (database from $DATABASE_URL, default thresholds);
with one (--plan or $PGKEEPER_PLAN) its `vacuum:` section adds expected indexes and thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..db import Database
from ..plan import PLAN_ENV, Plan, load_plan

FAIL_ON = ("never", "warning", "critical")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("health", help="report problems found before they hurt (read-only)")
    p.add_argument("--plan", default=os.environ.get(PLAN_ENV), help=f"plan file (default ${PLAN_ENV}, else none)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--all", action="store_true", help="list every finding, including the ok ones")
    p.add_argument("--fail-on", choices=FAIL_ON, default="never",
                   help="exit 1 when the worst finding is at least this severe (for scripts and CI)")
    p.set_defaults(func=run_health)


def run_health(args: argparse.Namespace) -> int:
    from ..health import Severity, build_report, summarize
    from ..log import logger

    plan = load_plan(args.plan) if args.plan else Plan()
    logger.setLevel("WARNING")  # the report is printed below; the log line would repeat it on stdout
    db = Database.from_settings(plan.database, "health")
    try:
        report = build_report(db.conn, plan)
    finally:
        db.close()
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        print("\n".join(summarize(report, verbose=args.all)))
    if args.fail_on != "never" and report.status.rank >= Severity(args.fail_on).rank:
        print(f"pgkeeper health: {report.status} (--fail-on {args.fail_on})", file=sys.stderr)
        return 1
    return 0
