"""`pgkeeper status [--json]`: is every scheduled job proving it runs? Exit 1 when one is overdue.

The schedules and silence windows come from the environment a deployed function has
(PGKEEPER_SCHEDULES, PGKEEPER_SILENCE_HOURS) when set, else from template.yaml (its defaults, or
--parameter-overrides as `sam deploy` takes them); the runs from the database's pgkeeper.runs.
Meant for a CI job or a Fly cron that alarms without AWS: `pgkeeper status || notify`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..db import Database
from ..errors import ConfigError, PgkeeperError
from ..plan import PLAN_ENV, Plan, load_plan
from ..status import SCHEDULES_ENV, Deployment


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="last proof of each scheduled job, overdue ones, next runs (exit 1 if overdue)")
    p.add_argument("--plan", default=os.environ.get(PLAN_ENV), help=f"plan file (default ${PLAN_ENV}, else none)")
    p.add_argument("--template", default="template.yaml", help="where the schedules are (default template.yaml)")
    p.add_argument("--parameter-overrides", nargs="*", default=[], metavar="NAME=VALUE",
                   help="template parameters as deployed (e.g. BackupSchedule='cron(0 2 * * ? *)')")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=run_status)


def deployment_of(args: argparse.Namespace) -> Deployment:
    from ..local.invoke import parse_overrides
    from ..local.template import Template

    if os.environ.get(SCHEDULES_ENV):
        return Deployment.from_env()
    overrides = parse_overrides(args.parameter_overrides)  # as `pgkeeper invoke` and `sam deploy` take them
    if not Path(args.template).is_file():
        raise ConfigError(f"no {args.template}: give --template, or set {SCHEDULES_ENV} as a deployed function has it")
    template = Template(args.template, overrides)
    any_function = template.function_ids()[0]
    environment = {k: str(v) for k, v in template.function(any_function).environment.items()}
    return Deployment.from_env(environment)


def run_status(args: argparse.Namespace) -> int:
    from ..db import runs
    from ..log import logger
    from ..status import build_status, summarize

    plan = load_plan(args.plan) if args.plan else Plan()
    logger.setLevel("WARNING")
    deployment = deployment_of(args)
    members = {"": plan} if plan.fleet is None else {name: plan.for_database(name) for name in plan.fleet.names()}
    reports: dict[str, Any] = {}
    overdue: list[str] = []
    for name, member in members.items():
        db: Database | None = None
        try:
            db = Database.from_settings(member.database, "status")
            runs.ensure_schema(db.conn, cache_key=db.conninfo)
            report = build_status(db.conn, deployment, db.where)
        except PgkeeperError as exc:
            if not name:
                raise
            reports[name] = {"error": str(exc)}  # one unreachable member must not hide the others
            overdue.append(f"{name}: unreachable")
            continue
        finally:
            if db is not None:
                db.close()
        reports[name] = report.model_dump(mode="json")
        overdue += [f"{name}: {w}" if name else w for w in report.overdue]
        if not args.json:
            if name:
                print(f"== {name}")
            print("\n".join(summarize(report)))
    if args.json:
        print(json.dumps(reports[""] if plan.fleet is None else {"databases": reports, "overdue": overdue}, indent=2))
    elif plan.fleet is not None:
        for name, report in reports.items():
            if "error" in report:
                print(f"== {name}\n  unreachable: {report['error']}")
    if overdue:
        print(f"pgkeeper status: overdue: {', '.join(overdue)}", file=sys.stderr)
        return 1
    return 0
